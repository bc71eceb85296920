"""The guided denoiser: a model function with classifier-free guidance (and its rescale), as k-diffusion wraps a
model for guidance. The sampling loop and its hooks ask it for predictions; data-space guidance wraps it."""

from __future__ import annotations

from collections.abc import Callable

import torch

from date_diffusion.core.prediction import next_noise_level, noise_level, predicted_x0, scale_input

Denoise = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x_in, t, embeds) -> model output


def guided(uncond_out, cond_out, guidance_scale: float, guidance_rescale: float = 0.0):
    """Classifier-free guidance; `guidance_rescale > 0` rescales it as diffusers' pipelines do (Lin et al.)."""
    if uncond_out is None:
        return cond_out
    out = uncond_out + guidance_scale * (cond_out - uncond_out)
    if guidance_rescale > 0:
        from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

        out = rescale_noise_cfg(out, cond_out, guidance_rescale=guidance_rescale)
    return out


class GuidedDenoiser:
    """`denoise(x_in, t, embeds)` with classifier-free guidance; `prediction_type` says what the model predicts."""

    def __init__(self, denoise: Denoise, prediction_type: str, guidance_rescale: float = 0.0):
        self.denoise, self.prediction_type, self.guidance_rescale = denoise, prediction_type, guidance_rescale

    def combine(self, uncond_out, cond_out, guidance_scale: float):
        return guided(uncond_out, cond_out, guidance_scale, self.guidance_rescale)

    def uncond(self, x_in, t, uncond_embeds):
        """The unconditional prediction (None without guidance), never differentiated."""
        with torch.no_grad():
            return self.denoise(x_in, t, uncond_embeds) if uncond_embeds is not None else None

    def step(self, state) -> torch.Tensor:
        """A normal step's guided output: one call on `[x, x]` with `[uncond, cond]`."""
        cfg = state.uncond is not None
        with torch.no_grad():
            x_in = torch.cat([state.latents] * 2) if cfg else state.latents
            x_in = scale_input(state.scheduler, x_in, state.timestep)
            out = self.denoise(x_in, state.timestep, torch.cat([state.uncond, state.cond]) if cfg else state.cond)
            return self.combine(*out.chunk(2), state.guidance_scale) if cfg else out

    def x0(self, state, x_in, out, target: str = "x0") -> torch.Tensor:
        """The clean-image estimate of a guided output (`target="next"`: the next noisy sample, a DDIM step)."""
        scheduler, t = state.scheduler, state.timestep
        alpha, sigma = noise_level(scheduler, t)
        x0 = predicted_x0(x_in, out, alpha, sigma, self.prediction_type)
        if target == "next":
            eps = (x_in - alpha.to(x_in.dtype) * x0) / sigma.to(x_in.dtype)
            a_next, s_next = (v.to(x_in.dtype) for v in next_noise_level(scheduler, t, state.index))
            x0 = a_next * x0 + s_next * eps
        return x0
