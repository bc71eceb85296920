"""Selection at an early step: N seeds sampled with fixed embeddings up to one step, a judge (a value model of the
final image) scores each clean-image estimate there, and the best seed is the one that is sampled in full."""

from __future__ import annotations

import torch

from date_diffusion.pipelines.reward_path import decode_for_reward
from date_diffusion.sampling.record import recorded_x0


def _stop_after(index: int):
    def callback(pipe, i, t, tensors):
        if i >= index:
            pipe.request_interrupt()
        return tensors

    return callback


@torch.no_grad()
def early_selection(pipe, prompts: list[str], seeds: list[int], n: int, at: int, judge, stride: int, **call) -> list:
    """For each (prompt, seed): of the seeds `seed + j * stride` (j < n), the one whose x0_hat at loop index `at`
    `judge` scores highest. Each candidate runs `at + 1` steps only (`call`: the pipeline's other arguments)."""
    steps = call["num_inference_steps"]
    if at >= steps:
        raise ValueError(f"select: at={at} must be below the run's {steps} steps")
    candidates = [s + j * stride for s in seeds for j in range(n)]
    repeated = [p for p in prompts for _ in range(n)]
    generators = [torch.Generator().manual_seed(s) for s in candidates]
    with recorded_x0(pipe.scheduler) as seen:
        pipe(prompt=repeated, generator=generators, output_type="latent", callback_on_step_end=_stop_after(at), **call)
    scores = judge(decode_for_reward(seen[at], pipe.vae), repeated).view(-1, n)
    return [candidates[b * n + j] for b, j in enumerate(scores.argmax(dim=1).tolist())]
