"""The sampling loop with DATE: a function over a denoiser, a decoder and a reward, independent of any pipeline.

A normal step is one denoiser call on `[x, x]` with `[uncond, cond]`, classifier-free guidance and one
`scheduler.step`. An update step follows the reference exactly:
  1. uncond prediction without gradient;
  2. with gradient for the conditional embedding only: cond prediction -> CFG -> x0_hat -> decode -> reward;
  3. `date_update` (repeated `grad_steps` times);
  4. cond prediction again with the new embedding (no gradient) -> CFG -> the only `scheduler.step` call.
The new embedding is kept for the following steps; the unconditional embedding never changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from date_diffusion.core.config import DATEConfig
from date_diffusion.core.prediction import next_noise_level, noise_level, predicted_x0, scale_input
from date_diffusion.core.update import date_update

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x_in, t, embeds) -> output


@dataclass
class Trace:
    """What DATE did to one image."""

    update_steps: list[int] = field(default_factory=list)
    updates: list[dict] = field(default_factory=list)
    skipped_steps: list[int] = field(default_factory=list)
    final_distance: float = 0.0  # ||c_final - c_org||_F

    def to_dict(self) -> dict:
        return {
            "update_steps": self.update_steps,
            "skipped_steps": self.skipped_steps,
            "final_distance": self.final_distance,
            "updates": self.updates,
        }


@dataclass
class SampleResult:
    latents: torch.Tensor
    embeds: torch.Tensor  # final conditional embeddings
    traces: list[Trace]
    embeds_history: dict[int, torch.Tensor] | None = None  # loop index -> embeddings after that update


def guided(uncond_out, cond_out, guidance_scale: float, guidance_rescale: float = 0.0):
    """Classifier-free guidance; `guidance_rescale > 0` rescales it as diffusers' pipelines do (Lin et al.)."""
    if uncond_out is None:
        return cond_out
    out = uncond_out + guidance_scale * (cond_out - uncond_out)
    if guidance_rescale > 0:
        from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

        out = rescale_noise_cfg(out, cond_out, guidance_rescale=guidance_rescale)
    return out


def date_sample(
    *,
    scheduler,
    denoise: Denoiser,
    latents: torch.Tensor,
    cond_embeds: torch.Tensor,
    uncond_embeds: torch.Tensor | None,
    guidance_scale: float,
    prediction_type: str,
    date: DATEConfig | None = None,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    reward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    step_kwargs: dict | None = None,
    keep_history: bool = False,
    on_step_end: Callable[[int, torch.Tensor, dict], dict | None] | None = None,
    progress: Callable[[], None] | None = None,
    guide: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    generators: list[torch.Generator] | None = None,
    adapt_mask: torch.Tensor | None = None,
    timesteps: torch.Tensor | None = None,
    pre_step: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    guidance_rescale: float = 0.0,
    interrupted: Callable[[], bool] | None = None,
    replay: dict[int, torch.Tensor] | None = None,
) -> SampleResult:
    """Run `scheduler.timesteps` from `latents`; with `date`, adapt `cond_embeds` at its update indices.

    `uncond_embeds=None` means no classifier-free guidance (a single conditional prediction per step).
    `decode(x0_latents) -> images in [0, 1]` and `reward(images) -> scores [B]` are needed when `date` updates.
    `on_step_end(i, t, tensors)` sees "latents", "prompt_embeds", "negative_prompt_embeds" and "guidance_scale"
    and may return replacements for any of them (a `None` negative embedding turns classifier-free guidance off).
    `guidance_rescale` rescales the guided output at every step (diffusers' `rescale_noise_cfg`).
    `interrupted()`, checked before every step, skips the remaining steps when true (diffusers' `interrupt`).
    `guide(i, t, x_in, embeds, out) -> out` may modify the guided model output at normal steps (data-space
    guidance baselines such as `universal_guidance`). `generators` (one per image) drive the random-direction
    ablation. `adapt_mask` (broadcastable to `cond_embeds`, 1 = adapted) restricts DATE to part of a packed
    conditioning (e.g. SDXL's tokens but not its pooled embedding); the norm is taken over the adapted part.
    `timesteps` runs only part of the schedule (editing starts mid-way); `step_kwargs` may be a function of the
    loop index (editing feeds each step its own noise map). `pre_step(i, t, latents, embeds) -> latents` runs
    first in every iteration (latent-space methods such as Attend-and-Excite, combined with DATE).
    `replay` (loop index -> embedding after that update, as `keep_history` records it) re-creates a DATE run
    without a reward: at those indices the embedding is replaced and the step computed as an update step
    computes it (separate unconditional and conditional predictions), so the result is the same.
    """
    step_kwargs = step_kwargs or {}
    timesteps = scheduler.timesteps if timesteps is None else timesteps
    batch = latents.shape[0]
    updates = set()
    if date is not None and date.moves:
        updates = set(date.update_indices(len(timesteps)))
        if updates and (decode is None or reward is None):
            raise ValueError("DATE updates need both `decode` and `reward`")
    original = cond_embeds.detach()
    embeds = original
    rho = date.step_sizes(original, adapt_mask) if updates else 0.0
    traces = [Trace(update_steps=sorted(updates)) for _ in range(batch)]
    history = {} if keep_history else None

    def combine(uncond_out, cond_out):
        return guided(uncond_out, cond_out, guidance_scale, guidance_rescale)

    def scored_image(i, x_in, t, out):
        """The image the reward scores: decoded x0_hat, or (ablation) the decoded next noisy sample."""
        alpha, sigma = noise_level(scheduler, t)
        x0 = predicted_x0(x_in, out, alpha, sigma, prediction_type)
        if date.reward_target == "next":
            eps = (x_in - alpha.to(x_in.dtype) * x0) / sigma.to(x_in.dtype)
            a_next, s_next = (v.to(x_in.dtype) for v in next_noise_level(scheduler, t, i))
            x0 = a_next * x0 + s_next * eps
        return decode(x0)

    def random_direction(like):
        gens = generators or [None] * batch
        return torch.stack([torch.randn(like.shape[1:], generator=g, dtype=torch.float32).to(like) for g in gens])

    # the prior's mean runs over the adapted entries only (the rest of a packed conditioning never moves)
    prior_weight = 0.0 if date is None else date.prior_weight
    if adapt_mask is not None and prior_weight:
        prior_weight *= cond_embeds[0].numel() / float(adapt_mask.expand_as(cond_embeds[:1]).sum())

    def uncond_prediction(x_in, t):
        with torch.no_grad():
            return denoise(x_in, t, uncond_embeds) if uncond_embeds is not None else None

    def adapted_prediction(x_in, t, uncond_out):
        """The guided output an update (or replayed) step hands to the scheduler: with the adapted embedding,
        from separate unconditional and conditional predictions."""
        with torch.no_grad():
            return combine(uncond_out, denoise(x_in, t, embeds))

    def update_step(i, t, x_in):
        """One DATE update step: returns the guided output for the scheduler and each image's trace record."""
        nonlocal embeds
        uncond_out = uncond_prediction(x_in, t)
        records = [dict(step=i, timestep=int(t), update_norm=0.0, skipped=False, grad_norms=[]) for _ in range(batch)]
        for k in range(date.grad_steps):
            if date.direction == "random":  # ablation: same distance, no reward gradient
                with torch.no_grad():
                    scores = reward(scored_image(i, x_in, t, combine(uncond_out, denoise(x_in, t, embeds))))
                grad = random_direction(embeds)
            else:
                variable = embeds.detach().requires_grad_(True)
                with torch.enable_grad():
                    scores = reward(scored_image(i, x_in, t, combine(uncond_out, denoise(x_in, t, variable))))
                    (grad,) = torch.autograd.grad(-scores.sum(), variable)
            if adapt_mask is not None:
                grad = grad * adapt_mask
            result = date_update(embeds, original, grad, rho, date.anchor, prior_weight, date.normalize)
            moved = torch.linalg.vector_norm((result.embeds - embeds).flatten(1).double(), dim=1)
            embeds = result.embeds.detach()
            for b, rec in enumerate(records):
                if k == 0:
                    rec["reward_before"] = float(scores[b])
                rec["grad_norms"].append(float(result.grad_norm[b]))
                rec["update_norm"] += float(moved[b])
                rec["skipped"] |= bool(result.skipped[b])
        out = adapted_prediction(x_in, t, uncond_out)
        if date.track_reward_after:
            with torch.no_grad():
                for rec, after in zip(records, reward(scored_image(i, x_in, t, out)).tolist()):
                    rec["reward_after"] = after
        return out, records

    def replay_step(i, t, x_in):
        nonlocal embeds
        embeds = replay[i]
        return adapted_prediction(x_in, t, uncond_prediction(x_in, t))

    for i, t in enumerate(timesteps):
        if interrupted is not None and interrupted():
            continue
        if pre_step is not None:
            latents = pre_step(i, t, latents, embeds)
        replayed = replay is not None and i in replay
        if replayed:
            out = replay_step(i, t, scale_input(scheduler, latents, t))
        elif i in updates:
            out, records = update_step(i, t, scale_input(scheduler, latents, t))
            for trace, rec in zip(traces, records):
                trace.updates.append(rec)
                if rec["skipped"]:
                    trace.skipped_steps.append(i)
        else:
            cfg = uncond_embeds is not None
            with torch.no_grad():
                x_in = torch.cat([latents] * 2) if cfg else latents
                x_in = scale_input(scheduler, x_in, t)
                out = denoise(x_in, t, torch.cat([uncond_embeds, embeds]) if cfg else embeds)
                out = combine(*out.chunk(2)) if cfg else out
            if guide is not None:
                out = guide(i, t, scale_input(scheduler, latents, t), embeds, out)
        if history is not None and (replayed or i in updates):
            history[i] = embeds.clone()
        with torch.no_grad():
            kwargs = step_kwargs(i) if callable(step_kwargs) else step_kwargs
            latents = scheduler.step(out, t, latents, **kwargs, return_dict=False)[0]
        if on_step_end is not None:
            state = dict(latents=latents, prompt_embeds=embeds, negative_prompt_embeds=uncond_embeds)
            replaced = on_step_end(i, t, {**state, "guidance_scale": guidance_scale}) or {}
            latents = replaced.get("latents", latents)
            embeds = replaced.get("prompt_embeds", embeds)
            uncond_embeds = replaced.get("negative_prompt_embeds", uncond_embeds)
            guidance_scale = replaced.get("guidance_scale", guidance_scale)
        if progress is not None:
            progress()

    distance = torch.linalg.vector_norm((embeds - original).flatten(1).double(), dim=1)
    for b in range(batch):
        traces[b].final_distance = float(distance[b])
    return SampleResult(latents, embeds, traces, history)
