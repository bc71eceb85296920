"""The guided denoiser: a model function with classifier-free guidance (and its rescale), as k-diffusion wraps a
model for guidance. The sampling loop and its hooks ask it for predictions; data-space guidance wraps it.

A family may give the unconditional branch its own function, called separately from the conditional one (FLUX's
true CFG: the negative prompt has its own text ids and IP-Adapter embeddings, and the stock pipeline runs two
transformer calls), a fixed guidance scale instead of the loop's (FLUX's `true_cfg_scale`), its own rule combining
the two branches (Qwen-Image's norm-rescaled true CFG, Z-Image's), and an extra term added to the guided output
(SD3's skip-layer guidance). Every guided output, at normal, update and replayed steps,
is made by `guide`, so the scheduler and DATE's x0_hat see the same prediction.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from date_diffusion.core.prediction import next_noise_level, preconditioning, scale_input

Denoise = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x_in, t, embeds) -> model output
# (state, x_in, embeds, cond_out) -> a term added to the guided output, or None (none at this step)
ExtraTerm = Callable[[object, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor | None]
# (state, uncond_out, cond_out, guidance_scale) -> the guided output: a family's own guidance rule
Rule = Callable[[object, torch.Tensor, torch.Tensor, float], torch.Tensor]


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
    """`denoise(x_in, t, embeds)` with classifier-free guidance; `prediction_type` says what the model predicts (its
    clean estimate, `x0`, is read with the scheduler's own preconditioning, `core.prediction.preconditioning`).

    uncond_denoise: the unconditional branch's own function; when given, the two branches are separate calls
        (conditional first, as stock FLUX), never one batched call.
    cfg_scale: a fixed guidance scale for the combination, or a function of the step's state giving it (Wan 2.2's
        second scale below its boundary timestep); None: the loop state's (which callbacks may change).
    extra: `extra(state, x_in, embeds, cond_out)`, a term added to the guided output (None: nothing at this step).
    rule: `rule(state, uncond_out, cond_out, guidance_scale)`, the family's own combination of the two branches in
        place of `guided` (used wherever both branches run; `guidance_rescale` is then the rule's business).
    """

    def __init__(self, denoise: Denoise, prediction_type: str, guidance_rescale: float = 0.0, *,
                 uncond_denoise: Denoise | None = None, cfg_scale: float | Callable | None = None,
                 extra: ExtraTerm | None = None, rule: Rule | None = None):  # fmt: skip
        self.denoise, self.prediction_type, self.guidance_rescale = denoise, prediction_type, guidance_rescale
        self.uncond_denoise, self.cfg_scale, self.extra, self.rule = uncond_denoise, cfg_scale, extra, rule

    def options(self) -> dict:
        """The keyword arguments that re-create this denoiser's guidance (for wrappers)."""
        return dict(uncond_denoise=self.uncond_denoise, cfg_scale=self.cfg_scale, extra=self.extra, rule=self.rule)

    def combine(self, uncond_out, cond_out, guidance_scale: float):
        return guided(uncond_out, cond_out, guidance_scale, self.guidance_rescale)

    def uncond_branch(self, x_in, t, uncond_embeds):
        """The unconditional prediction (None without guidance), with gradient where gradients are enabled."""
        if uncond_embeds is None:
            return None
        return (self.uncond_denoise or self.denoise)(x_in, t, uncond_embeds)

    def uncond(self, x_in, t, uncond_embeds):
        """The unconditional prediction (None without guidance), never differentiated."""
        with torch.no_grad():
            return self.uncond_branch(x_in, t, uncond_embeds)

    def guide(self, state, x_in, uncond_out, embeds, cond_out=None) -> torch.Tensor:
        """The guided output for the conditional embeddings `embeds` (differentiable in them and in `x_in`):
        the conditional prediction (`cond_out` when already computed), guidance, and the extra term."""
        if cond_out is None:
            cond_out = self.denoise(x_in, state.timestep, embeds)
        scale = self.cfg_scale(state) if callable(self.cfg_scale) else self.cfg_scale
        scale = state.guidance_scale if scale is None else scale
        if self.rule is not None and uncond_out is not None:
            out = self.rule(state, uncond_out, cond_out, scale)
        else:
            out = self.combine(uncond_out, cond_out, scale)
        term = self.extra(state, x_in, embeds, cond_out) if self.extra is not None else None
        return out if term is None else out + term

    def step(self, state) -> torch.Tensor:
        """A normal step's guided output: one call on `[x, x]` with `[uncond, cond]` (or separate branches)."""
        t, cfg = state.timestep, state.uncond is not None
        with torch.no_grad():
            x_in = scale_input(state.scheduler, state.latents, t)
            if not cfg:
                return self.guide(state, x_in, None, state.cond)
            if self.uncond_denoise is not None:
                cond_out = self.denoise(x_in, t, state.cond)
                return self.guide(state, x_in, self.uncond_branch(x_in, t, state.uncond), state.cond, cond_out)
            out = self.denoise(torch.cat([x_in] * 2), t, torch.cat([state.uncond, state.cond]))
            uncond_out, cond_out = out.chunk(2)
            return self.guide(state, x_in, uncond_out, state.cond, cond_out)

    def x0(self, state, x_in, out, target: str = "x0") -> torch.Tensor:
        """The clean-image estimate of a guided output, as the scheduler forms it (`core.prediction`:
        its own preconditioning); `target="next"`: the next noisy sample, a DDIM step to the scheduler's next
        noise level."""
        scheduler, t = state.scheduler, state.timestep
        reading = preconditioning(scheduler, t)
        x0 = reading.x0(x_in, out)
        if target == "next":
            eps = reading.noise(x_in, x0)
            a_next, s_next = (v.to(x_in.dtype) for v in next_noise_level(scheduler, t, state.index))
            x0 = a_next * x0 + s_next * eps
        return x0
