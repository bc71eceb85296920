"""Data-space reward guidance (the Universal-Guidance-style baseline DATE is compared against), as a wrapper of the
guided denoiser (k-diffusion's way of adding guidance).

At loop indices `i % every == 0` of normal steps it differentiates the reward of the decoded `x0_hat` with respect to
the noisy latent (through the denoiser, both CFG branches) and shifts the guided prediction the classifier-guidance
way, `eps <- eps - scale * sigma_t * grad_x h`. The text embedding stays fixed. Epsilon-prediction models only.
"""

from __future__ import annotations

import torch

from date_diffusion.core.prediction import preconditioning, scale_input
from date_diffusion.sampling.denoiser import GuidedDenoiser


class UniversalGuidance(GuidedDenoiser):
    """`model`'s predictions; at normal steps the guided output is shifted along the reward's gradient.
    `decode(x0_latents) -> images`, `reward(images) -> scores [B]`; `uncond_embeds` and `guidance_scale` are those
    the gradient is taken with."""

    def __init__(self, model: GuidedDenoiser, decode, reward, scale: float, every: int = 1):
        if model.prediction_type != "epsilon":
            raise ValueError(
                f"universal guidance supports epsilon-prediction models only, not {model.prediction_type!r}"
            )
        super().__init__(model.denoise, model.prediction_type, model.guidance_rescale, **model.options())
        self.inner, self.decode, self.reward, self.scale, self.every = model, decode, reward, scale, every

    def step(self, state) -> torch.Tensor:
        out = self.inner.step(state)
        if state.index % self.every:
            return out
        t = state.timestep
        reading = preconditioning(state.scheduler, t)
        if not reads_noise(reading):
            raise ValueError(guidance_refusal(state.scheduler))
        x = scale_input(state.scheduler, state.latents, t).detach().requires_grad_(True)
        with torch.enable_grad():
            eps = self.guide(state, x, self.uncond_branch(x, t, state.uncond), state.cond)  # as the scheduler's
            scores = self.reward(self.decode(reading.x0(x, eps)))
            (grad,) = torch.autograd.grad(scores.sum(), x)
        return out - self.scale * reading.sigma.to(out.dtype) * grad.to(out.dtype)


def reads_noise(reading) -> bool:
    """Whether the scheduler reads the model's output as the noise of a variance-preserving input (what the
    classifier-guidance shift `eps - scale * sigma * grad` is written for; EDM's preconditioned output is not)."""
    return reading.prediction_type == "epsilon" and reading.skip is None


def guidance_refusal(scheduler) -> str:
    return (f"universal guidance shifts a noise prediction (`eps - scale * sigma * grad`); {type(scheduler).__name__} "
            "reads the model's output otherwise (EDM preconditioning): use another scheduler")  # fmt: skip
