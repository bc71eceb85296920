"""A request's work, counted in sampling steps (a denoiser pass): what the web page bounds per visitor
(`date-diffusion ui --max-work`) and what `generate` says before a long run."""

from __future__ import annotations

import math

UPDATE_WORK = 3  # an update's cost in sampling steps: the backward pass through the denoiser, decoder and reward


def gradient_step_work(reward: str, prompt: str | None = None) -> int:
    """One gradient step's work in sampling steps: `UPDATE_WORK`, and one more for each reward model's run beyond
    the first (`rewards.registry.reward_runs`: `aug8(clip)` runs CLIP on 8 views, each with its backward pass)."""
    from date_diffusion.rewards.registry import reward_runs

    return UPDATE_WORK + reward_runs(reward, prompt) - 1


def request_work(steps: int, date, reward: str, prompt: str | None = None, size: float = 1.0) -> int:
    """A request's work in sampling steps: `steps`, and `gradient_step_work(reward, prompt)` for each gradient step
    of each DATE update (`grad_steps` of them per update, each its own backward pass); `size`: its images' pixels
    over the model's default size's (above 1 a larger image: its steps cost at least that many times more), counted
    as a step at the default size."""
    work = (
        steps
        if date is None
        else steps + gradient_step_work(reward, prompt) * len(date.update_indices(steps)) * (date.grad_steps)
    )
    return math.ceil(work * max(1.0, size))
