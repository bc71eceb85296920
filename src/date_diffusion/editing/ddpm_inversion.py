"""Edit-friendly DDPM inversion (Huberman-Spiegelglas et al., CVPR 2024) with DATE in the regeneration.

Inversion: noisy versions x_t of the image are drawn *independently* for every timestep, then for each step the
noise map z_t that makes the DDPM step (DDIM with eta = 1) land exactly on x_{t-1} is solved for, using the
source prompt. Regeneration from x_{T - skip} with the stored z_t and the target prompt edits the image; with
the source prompt and the same guidance it reproduces the input (up to float rounding). DATE adapts the target
prompt's embedding during the regeneration, on the same sampling loop as generation.

diffusers' LEdits++ pipeline contains an inversion of this kind but does not expose the regeneration loop with
per-step noise maps and adaptable embeddings, so it is implemented here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler

from date_diffusion.sampling.loop import guided


@dataclass
class Inversion:
    timesteps: torch.Tensor  # the full schedule, descending
    xts: list[torch.Tensor]  # x_t for each timestep (same order), then x_0 last
    zs: list[torch.Tensor]  # noise map of each step


def inversion_scheduler(config, num_inference_steps: int, device=None) -> DDIMScheduler:
    """A DDIM scheduler (run with eta = 1: DDPM steps) on the model's training schedule `config`."""
    sched = DDIMScheduler.from_config(config)
    sched.set_timesteps(num_inference_steps, device=device)
    return sched


def _std(sched: DDIMScheduler, t) -> torch.Tensor:
    prev = t - sched.config.num_train_timesteps // sched.num_inference_steps
    return sched._get_variance(t, prev) ** 0.5


@torch.no_grad()
def invert(denoise, sched: DDIMScheduler, x0: torch.Tensor, cond, uncond, guidance: float, generator=None) -> Inversion:
    """Noise maps that regenerate latents `x0` under (cond, uncond, guidance) along `sched.timesteps`;
    `denoise(x, t, embeds) -> model output` is the same denoiser function `date_sample` takes."""
    ts = sched.timesteps
    acp = sched.alphas_cumprod.to(x0.device)
    if isinstance(generator, list):  # one stream per image: an edit does not depend on its batch
        noises = [
            torch.stack([torch.randn(x0.shape[1:], generator=g, dtype=x0.dtype) for g in generator]).to(x0.device)
            for _ in ts
        ]
    else:
        noises = [torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device) for _ in ts]
    xts = [acp[t].sqrt() * x0 + (1 - acp[t]).sqrt() * n for t, n in zip(ts, noises)] + [x0]
    zs = []
    for i, t in enumerate(ts):
        x = xts[i]
        out = denoise(
            torch.cat([x, x]) if uncond is not None else x, t, torch.cat([uncond, cond]) if uncond is not None else cond
        )
        eps = guided(*out.chunk(2), guidance) if uncond is not None else out
        mean = sched.step(eps, t, x, eta=1.0, variance_noise=torch.zeros_like(x)).prev_sample
        zs.append((xts[i + 1] - mean) / _std(sched, t))
    return Inversion(ts, xts, zs)
