"""FlowEdit (Kulikov et al., 2024): inversion-free text-guided editing of rectified-flow models, with DATE.

The published algorithm (the authors' `FlowEdit_utils.py`), on the model's Euler schedule t_0 > t_1 > ... > 0 with
T steps: z_edit starts at the source latents x_src; the first T - n_max steps are skipped; at each of the next
n_max - n_min steps it draws noise n (n_avg times), forms

    z_src = (1 - t) x_src + t n,        z_tar = z_edit + z_src - x_src,

and moves z_edit by (t_next - t) * mean(V(z_tar, target) - V(z_src, source)), each V the guided velocity of its
prompt and guidance. With n_min > 0 the last n_min steps sample the target plainly from
x_tar = z_edit + (1 - t) x_src + t n - x_src (fresh noise). The result is z_edit (n_min = 0) or x_tar.

Here it runs on the sampling loop: `FlowEditStep` (a hook) draws the noise and computes the source velocity before
each step, and `FlowEditDenoiser` is the target branch's guided denoiser evaluated at z_tar that hands the scheduler
the velocity difference. DATE's update hook works on it unchanged: it adapts the *target* prompt's embedding, and
its reward sees the target branch's clean estimate x0_hat = z_tar - t V(z_tar, target) (the average over the n_avg
draws), the quantity FlowEdit's target branch denoises. Differences from the reference code, none of which change
its result beyond float rounding: t is the scheduler's sigma (the reference's timestep / 1000); z_tar is computed as
z_src + (z_edit - x_src), so with source = target (prompt and guidance) the two branches get bit-identical inputs,
the velocity difference is exactly zero and the output is exactly x_src; the two branches are separate model calls
(the reference batches source and target together); noise is drawn on the CPU from the call's generator(s).
"""

from __future__ import annotations

import torch

from date_diffusion.core.prediction import noise_level
from date_diffusion.editing.ddpm_inversion import draw_noise
from date_diffusion.sampling.loop import GuidedDenoiser, Hook, StepState


class FlowEditDenoiser(GuidedDenoiser):
    """The target branch's guided denoiser (`target`) as FlowEdit's ODE on z_edit sees it: evaluated at z_tar,
    its guided output minus the source velocity; `x0` is the target branch's clean estimate. Outside the editing
    steps (`z_src is None`: FlowEdit's last n_min steps) it is the target denoiser itself."""

    def __init__(self, target: GuidedDenoiser, x_src: torch.Tensor):
        wrap = self._at_target
        options = target.options()
        super().__init__(
            wrap(target.denoise),
            target.prediction_type,
            target.guidance_rescale,
            uncond_denoise=wrap(options["uncond_denoise"]) if options["uncond_denoise"] is not None else None,
            cfg_scale=options["cfg_scale"],
            extra=self._extra_at_target(options["extra"]) if options["extra"] is not None else None,
            rule=options["rule"],
        )
        self.target, self.x_src = target, x_src
        self.z_src: torch.Tensor | None = None  # [n_avg, B, ...] at this step; None: plain target sampling
        self.v_src: torch.Tensor | None = None  # the source velocity (mean over the draws), fixed

    def target_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """z_tar = z_src + (z_edit - x_src) for each draw (`x` may be `[z_edit; z_edit]`, a batched CFG call)."""
        if self.z_src is None:
            return [x]
        repeat = (x.shape[0] // self.x_src.shape[0],) + (1,) * (x.dim() - 1)
        offset = x - self.x_src.repeat(repeat)
        return [z.repeat(repeat) + offset for z in self.z_src]

    def _at_target(self, denoise):
        def at_target(x, t, embeds):
            outs = [denoise(z, t, embeds) for z in self.target_inputs(x)]
            return outs[0] if len(outs) == 1 else torch.stack(outs).mean(0)  # guidance is linear: mean of V_tar

        return at_target

    def _extra_at_target(self, extra):
        def at_target(state, x_in, embeds, cond_out):
            terms = [extra(state, z, embeds, cond_out) for z in self.target_inputs(x_in)]
            return None if terms[0] is None else terms[0] if len(terms) == 1 else torch.stack(terms).mean(0)

        return at_target

    def guide(self, state, x_in, uncond_out, embeds, cond_out=None) -> torch.Tensor:
        out = super().guide(state, x_in, uncond_out, embeds, cond_out)
        return out if self.v_src is None else out - self.v_src

    def x0(self, state, x_in, out, target: str = "x0") -> torch.Tensor:
        if self.v_src is None:
            return super().x0(state, x_in, out, target)
        z_tar = torch.stack(self.target_inputs(x_in)).mean(0)
        return super().x0(state, z_tar, out + self.v_src, target)


class FlowEditStep(Hook):
    """Before each step: FlowEdit's noise and source velocity (`source`: the source branch's guided denoiser with
    its conditioning and guidance) for the first `n_edit` loop indices; at index `n_edit` (n_min > 0) the switch to
    plain target sampling from x_tar. The source velocity is computed as the target's (the same wrapper at
    z_src = z_src + (x_src - x_src)), so equal branches give bit-identical velocities for any `n_avg`."""

    def __init__(self, model: FlowEditDenoiser, source: GuidedDenoiser, cond, uncond, guidance: float, n_edit: int,
                 n_avg: int = 1, generator=None):  # fmt: skip
        self.model, self.source = model, FlowEditDenoiser(source, model.x_src)
        self.cond, self.uncond, self.guidance = cond, uncond, guidance
        self.n_edit, self.n_avg, self.generator = n_edit, n_avg, generator

    def _noised_source(self, state: StepState) -> torch.Tensor:
        _, sigma = noise_level(state.scheduler, state.timestep)
        x_src = self.model.x_src
        sigma = sigma.to(x_src.dtype)
        return (1 - sigma) * x_src + sigma * draw_noise(x_src, self.generator)

    def before_step(self, state: StepState) -> None:
        model, source = self.model, self.source
        if state.index >= self.n_edit:
            if state.index == self.n_edit:  # FlowEdit's n_min phase: x_tar = z_edit + z_src - x_src, fresh noise
                state.latents = state.latents + (self._noised_source(state) - model.x_src)
            model.z_src = model.v_src = None
            return
        model.z_src = source.z_src = torch.stack([self._noised_source(state) for _ in range(self.n_avg)])
        at_source = StepState(state.scheduler, model.x_src, self.cond, self.uncond, self.guidance, state.index,
                              state.timestep)  # fmt: skip
        model.v_src = source.step(at_source)
