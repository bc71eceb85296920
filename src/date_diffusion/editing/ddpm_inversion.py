"""Edit-friendly DDPM inversion (Huberman-Spiegelglas et al., CVPR 2024) with DATE in the regeneration.

Inversion: noisy versions x_t of the image are drawn *independently* for every timestep, then for each step the
noise map z_t that makes the DDPM step (DDIM with eta = 1) land exactly on x_{t-1} is solved for, using the
source prompt. Regeneration from x_{T - skip} with the stored z_t and the target prompt edits the image; with
the source prompt and the same guidance it reproduces the input (up to float rounding). DATE adapts the target
prompt's embedding during the regeneration, on the same sampling loop as generation.

Any DDPM-trained family runs it through its guided denoiser (`sampling.denoiser.GuidedDenoiser`) and its packed
conditioning, so SDXL's pooled embedding and added time ids go with the token embeddings exactly as in generation.
diffusers' LEDITS++ pipelines contain an inversion of this kind (`invert`) but do not expose the regeneration loop
with per-step noise maps and adaptable embeddings, so it is implemented here (`tests/test_edit_families.py`
checks its noise maps against LEDITS++ SDXL's).

A step whose DDPM variance is zero (the last one where DDIM's final noise level equals the last timestep's or is
1: `steps_offset=0`, or `set_alpha_to_one`, as DDIM built from PixArt's config or a tiny SDXL's) has no noise map
that can absorb the model's error. There the inversion keeps the residual x_{t-1} - mu_t itself (the product
sigma_t z_t, which is all a noise map contributes) and the regeneration adds it after the step (`AddResiduals`),
so the input is still reconstructed; its noise map is zero, as LEDITS++ sets it. The released SD and SDXL configs
(`steps_offset=1`, `set_alpha_to_one=False`) have no such step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler

from date_diffusion.sampling.loop import Hook, StepState


@dataclass
class Inversion:
    timesteps: torch.Tensor  # the full schedule, descending
    xts: list[torch.Tensor]  # x_t for each timestep (same order), then x_0 last
    zs: list[torch.Tensor]  # noise map of each step
    residuals: dict[int, torch.Tensor]  # step index -> x_{t-1} - mu_t where the step has no variance


def inversion_scheduler(config, num_inference_steps: int, device=None) -> DDIMScheduler:
    """A DDIM scheduler (run with eta = 1: DDPM steps) on the model's training schedule `config`."""
    sched = DDIMScheduler.from_config(config)
    sched.set_timesteps(num_inference_steps, device=device)
    return sched


def draw_noise(like: torch.Tensor, generator=None) -> torch.Tensor:
    """Standard normal noise shaped as `like`, drawn on the CPU (the same on every device); a list of generators
    draws one image each, so an edit does not depend on its batch."""
    if isinstance(generator, list):
        noise = torch.stack([torch.randn(like.shape[1:], generator=g, dtype=like.dtype) for g in generator])
    else:
        noise = torch.randn(like.shape, generator=generator, dtype=like.dtype)
    return noise.to(like.device)


def _std(sched: DDIMScheduler, t) -> torch.Tensor:
    prev = t - sched.config.num_train_timesteps // sched.num_inference_steps
    return sched._get_variance(t, prev) ** 0.5


@torch.no_grad()
def invert(model, sched: DDIMScheduler, x0: torch.Tensor, cond, uncond, guidance: float, generator=None,
           noises=None) -> Inversion:  # fmt: skip
    """Noise maps that regenerate latents `x0` under (cond, uncond, guidance) along `sched.timesteps`; `model` is
    the family's guided denoiser (`GuidedDenoiser`), `noises` (one per timestep, in its order) replace the draws
    from `generator`."""
    ts = sched.timesteps
    acp = sched.alphas_cumprod.to(x0.device)
    noises = noises if noises is not None else [draw_noise(x0, generator) for _ in ts]
    xts = [acp[t].sqrt() * x0 + (1 - acp[t]).sqrt() * n for t, n in zip(ts, noises)] + [x0]
    zs, residuals = [], {}
    for i, t in enumerate(ts):
        eps = model.step(StepState(sched, xts[i], cond, uncond, guidance, index=i, timestep=t))
        mean = sched.step(eps, t, xts[i], eta=1.0, variance_noise=torch.zeros_like(x0)).prev_sample
        std = _std(sched, t)
        zs.append((xts[i + 1] - mean) / std if std > 0 else torch.zeros_like(x0))
        if std == 0:
            residuals[i] = xts[i + 1] - mean
    return Inversion(ts, xts, zs, residuals)


class AddResiduals(Hook):
    """After each regenerated step (loop index i = inversion step `start + i`): the inversion's residual of a
    zero-variance step, added to the latents."""

    def __init__(self, residuals: dict[int, torch.Tensor], start: int):
        self.residuals, self.start = residuals, start

    def after_step(self, state: StepState) -> None:
        residual = self.residuals.get(self.start + state.index)
        if residual is not None:
            state.latents = state.latents + residual
