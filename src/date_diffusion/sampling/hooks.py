"""Small hooks of the sampling loop: interruption, progress, and step-end callbacks (diffusers' contract)."""

from __future__ import annotations

from collections.abc import Callable

from date_diffusion.sampling.loop import Hook, Observer, StepState, StepView


class Interrupt(Hook):
    """Skips every remaining step once `interrupted()` is true (diffusers' `interrupt`); checked before each."""

    def __init__(self, interrupted: Callable[[], bool]):
        self.interrupted = interrupted

    def before_step(self, state: StepState) -> None:
        state.skip = state.skip or bool(self.interrupted())


class Progress(Observer):
    """Calls `advance()` after every step taken (a progress bar's `update`)."""

    def __init__(self, advance: Callable[[], object]):
        self.advance = advance

    def observe(self, view: StepView) -> None:
        self.advance()


class StepCallback(Hook):
    """`on_step_end(i, t, tensors) -> replacements` after every step: it sees "latents", "prompt_embeds",
    "negative_prompt_embeds" and "guidance_scale" and may return replacements for any of them (a `None` negative
    embedding turns classifier-free guidance off)."""

    def __init__(self, on_step_end: Callable[[int, object, dict], dict | None]):
        self.on_step_end = on_step_end

    def after_step(self, state: StepState) -> None:
        tensors = dict(latents=state.latents, prompt_embeds=state.cond, negative_prompt_embeds=state.uncond)
        replaced = self.on_step_end(state.index, state.timestep, {**tensors, "guidance_scale": state.guidance_scale})
        replaced = replaced or {}
        state.latents = replaced.get("latents", state.latents)
        state.cond = replaced.get("prompt_embeds", state.cond)
        state.uncond = replaced.get("negative_prompt_embeds", state.uncond)
        state.guidance_scale = replaced.get("guidance_scale", state.guidance_scale)
