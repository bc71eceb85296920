"""Data-space reward guidance (the Universal-Guidance-style baseline DATE is compared against).

A `guide` hook for `date_sample`: at chosen loop indices it differentiates the reward of the decoded
`x0_hat` with respect to the noisy latent (through the denoiser, both CFG branches) and shifts the noise
prediction the classifier-guidance way, `eps <- eps - scale * sigma_t * grad_x h`. The text embedding stays
fixed. Epsilon-prediction models only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from date_diffusion.core.prediction import noise_level, predicted_x0
from date_diffusion.sampling.loop import guided


def universal_guidance(
    *,
    scheduler,
    denoise,
    decode,
    reward,
    uncond_embeds,
    guidance_scale: float,
    scale: float,
    every: int = 1,
    prediction_type: str = "epsilon",
) -> Callable:
    if prediction_type != "epsilon":
        raise ValueError(f"universal guidance supports epsilon-prediction models only, not {prediction_type!r}")

    def guide(i, t, x_in, embeds, out):
        if i % every:
            return out
        alpha, sigma = noise_level(scheduler, t)
        x = x_in.detach().requires_grad_(True)
        with torch.enable_grad():
            u = denoise(x, t, uncond_embeds) if uncond_embeds is not None else None
            eps = guided(u, denoise(x, t, embeds), guidance_scale)
            scores = reward(decode(predicted_x0(x, eps, alpha, sigma, "epsilon")))
            (grad,) = torch.autograd.grad(scores.sum(), x)
        return out - scale * sigma.to(out.dtype) * grad.to(out.dtype)

    return guide
