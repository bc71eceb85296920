"""DATE as hooks of the sampling loop: the update step, and the replay of saved embeddings.

An update step follows the reference exactly:
  1. uncond prediction without gradient;
  2. with gradient for the conditional embedding only: cond prediction -> CFG (and the denoiser's extra term,
     e.g. SD3's skip-layer guidance) -> x0_hat -> decode -> reward;
  3. `date_update` (repeated `grad_steps` times);
  4. cond prediction again with the new embedding (no gradient) -> CFG -> the only `scheduler.step` call.
The new embedding is kept for the following steps; the unconditional embedding never changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from date_diffusion.core.config import DATEConfig
from date_diffusion.core.finite import nonfinite_rows
from date_diffusion.core.prediction import check_scheduler, preconditioning, prediction_type_of, scale_input
from date_diffusion.core.trace import Trace, UpdateRecord
from date_diffusion.core.update import date_update
from date_diffusion.sampling.denoiser import GuidedDenoiser
from date_diffusion.sampling.loop import Hooks, Observer, OutputHook, StepState, StepView, sample, scheduler_step_starts


@dataclass
class SampleResult:
    latents: torch.Tensor
    embeds: torch.Tensor  # final conditional embeddings
    traces: list[Trace]
    embeds_history: dict[int, torch.Tensor] | None = None  # loop index -> embeddings after that update


class TraceRecorder(Observer):
    """The observer that writes each image's `Trace`: the update records of every update step, the embedding after
    every update or replayed step (`keep_history`, what `save_embeddings` writes), and the final distance."""

    def __init__(self, original: torch.Tensor, update_steps: list[int], keep_history: bool = False):
        self.original = original.detach()
        self.traces = [Trace(update_steps=list(update_steps)) for _ in range(original.shape[0])]
        self.history = {} if keep_history else None

    def observe(self, view: StepView) -> None:
        for trace, rec in zip(self.traces, view.updates):
            trace.updates.append(rec)
            if rec.skipped:
                trace.skipped_steps.append(rec.step)
        if self.history is not None and view.kind in ("update", "replay"):
            self.history[view.index] = view.cond.clone()

    def result(self, state: StepState) -> SampleResult:
        """The run's result once the loop has ended in `state`: final latents, embeddings, traces, history."""
        distance = torch.linalg.vector_norm((state.cond - self.original).flatten(1).double(), dim=1)
        for trace, d in zip(self.traces, distance.tolist()):
            trace.final_distance = d
        return SampleResult(state.latents, state.cond, self.traces, self.history)


def adapted_output(model, state: StepState, x_in, uncond_out):
    """The guided output an update (or replayed) step hands to the scheduler: with the adapted embedding, from
    separate unconditional and conditional predictions (and the denoiser's extra term, e.g. skip-layer guidance)."""
    with torch.no_grad():
        return model.guide(state, x_in, uncond_out, state.cond)


class NonFiniteError(ValueError):
    """An update step met a reward or an embedding that is not finite: the run stops (its images would mean
    nothing); a zero or non-finite gradient is not this error, its update is skipped and recorded instead."""


REWARD_FIX = "check the reward (its weights and model) and the DATE settings"
MODEL_FIX = "check the model (its weights and configs; float16 can overflow in a VAE: try --dtype float32)"


def _guard(values: torch.Tensor, what: str, step: int, fix: str = REWARD_FIX) -> None:
    """The runtime guard of an update step: NaN or infinite `values` stop the run, naming the step and the images."""
    images = nonfinite_rows(values)
    if images:
        raise NonFiniteError(
            f"the {what} is not finite at update step {step} (images {images} of the batch): DATE stops rather than "
            f"record a result that means nothing; {fix}"
        )


class DATEUpdate(OutputHook):
    """DATE's update steps (the loop's output provider at them). `decode(x0_latents) -> images in [0, 1]` and
    `reward(images) -> scores [B]` are the reward path; `adapt_mask` (broadcastable to the embeddings, 1 = adapted)
    restricts DATE to part of a packed conditioning, the norm taken over the adapted part; `generators` (one per
    image) drive the random-direction ablation. `starts`: the loop index at which each step of the run begins
    (`loop.step_starts`; an int n: n steps of one iteration each); DATE's update steps count steps, and the trace
    records them so."""

    def __init__(self, model, date: DATEConfig, original, starts, decode, reward, adapt_mask=None,
                 generators=None):  # fmt: skip
        self.model, self.date, self.decode, self.reward = model, date, decode, reward
        self.original, self.mask, self.generators = original.detach(), adapt_mask, generators
        if not torch.isfinite(self.original).all():
            raise NonFiniteError("the conditional embedding holds NaN or infinite values before sampling (check "
                                 "`prompt_embeds` or the text encoder's weights)")  # fmt: skip
        starts = list(range(starts)) if isinstance(starts, int) else list(starts)
        self.steps = update_steps(date, len(starts))
        self.step_at = {starts[k]: k for k in self.steps}  # loop index -> the step that begins there
        if self.step_at and (decode is None or reward is None):
            raise ValueError("DATE updates need both `decode` and `reward`")
        self.rho = date.step_sizes(self.original, adapt_mask) if self.step_at else 0.0
        self.prior_weight = self._prior_weight()

    def _prior_weight(self) -> float:
        """The prior's mean runs over the adapted entries only (the rest of a packed conditioning never moves)."""
        weight = 0.0 if self.date is None else self.date.prior_weight
        if self.mask is not None and weight:
            weight *= self.original[0].numel() / float(self.mask.expand_as(self.original[:1]).sum())
        return weight

    def output(self, state: StepState) -> tuple[torch.Tensor, str] | None:
        if state.index not in self.step_at:
            return None
        x_in = scale_input(state.scheduler, state.latents, state.timestep)
        uncond_out = self.model.uncond(x_in, state.timestep, state.uncond)
        where = preconditioning(state.scheduler, state.timestep).record(state.timestep)
        records = [UpdateRecord(self.step_at[state.index], **where) for _ in range(state.cond.shape[0])]
        for k in range(self.date.grad_steps):
            self._gradient_step(state, x_in, uncond_out, records, first=k == 0)
        output = adapted_output(self.model, state, x_in, uncond_out)
        if self.date.track_reward_after:
            with torch.no_grad():
                after = self.reward(self.decode(self.model.x0(state, x_in, output, self.date.reward_target)))
            _guard(after, "reward after the update", self.step_at[state.index])
            for rec, value in zip(records, after.tolist()):
                rec.reward_after = value
        state.updates = tuple(records)
        return output, "update"

    def _scores(self, state, x_in, uncond_out, embeds):
        out = self.model.guide(state, x_in, uncond_out, embeds)  # what the scheduler takes, as a function of embeds
        images = self.decode(self.model.x0(state, x_in, out, self.date.reward_target))
        # the model's, not the reward's: an estimate that is not finite is named before the reward scores it
        _guard(images.detach(), "decoded clean-image estimate", self.step_at[state.index], MODEL_FIX)
        return self.reward(images)

    def _gradient_step(self, state: StepState, x_in, uncond_out, records: list[UpdateRecord], first: bool) -> None:
        """One gradient step of an update: the reward's gradient (or, ablation, a random direction), then the rule."""
        embeds = state.cond
        if self.date.direction == "random":  # ablation: same distance, no reward gradient
            with torch.no_grad():
                scores = self._scores(state, x_in, uncond_out, embeds)
            grad = self._random_direction(embeds)
        else:
            variable = embeds.detach().requires_grad_(True)
            with torch.enable_grad():
                scores = self._scores(state, x_in, uncond_out, variable)
                (grad,) = torch.autograd.grad(-scores.sum(), variable)
        _guard(scores.detach(), "reward", self.step_at[state.index])
        if self.mask is not None:
            grad = grad * self.mask
        result = date_update(
            embeds, self.original, grad, self.rho, self.date.anchor, self.prior_weight, self.date.normalize
        )  # a zero or non-finite gradient: the update is skipped for that image and recorded (`skipped`)
        _guard(result.embeds, "embedding after the update", self.step_at[state.index])
        moved = torch.linalg.vector_norm((result.embeds - embeds).flatten(1).double(), dim=1)
        state.cond = result.embeds.detach()
        for b, rec in enumerate(records):
            if first:
                rec.reward_before = float(scores[b])
            rec.grad_norms.append(float(result.grad_norm[b]))
            rec.update_norm += float(moved[b])
            rec.skipped |= bool(result.skipped[b])

    def _random_direction(self, like):
        gens = self.generators or [None] * like.shape[0]
        return torch.stack([torch.randn(like.shape[1:], generator=g, dtype=torch.float32).to(like) for g in gens])


class Replay(OutputHook):
    """Re-creates a DATE run without a reward: at each loop index of `embeddings` (index -> the embedding after that
    update, as `TraceRecorder(keep_history=True)` records it) the embedding is replaced and the step computed as an
    update step computes it (separate unconditional and conditional predictions), so the result is the same."""

    def __init__(self, model, embeddings: dict):
        self.model, self.embeddings = model, embeddings

    def output(self, state: StepState) -> tuple[torch.Tensor, str] | None:
        if state.index not in self.embeddings:
            return None
        state.cond = self.embeddings[state.index]
        x_in = scale_input(state.scheduler, state.latents, state.timestep)
        return adapted_output(self.model, state, x_in, self.model.uncond(x_in, state.timestep, state.uncond)), "replay"


def update_steps(date: DATEConfig | None, n_steps: int) -> list[int]:
    """The steps of an `n_steps` run at which `date` updates (none when it does not move)."""
    return date.update_indices(n_steps) if date is not None and date.moves else []


def date_sample(
    *,
    scheduler,
    denoise,
    latents: torch.Tensor,
    cond_embeds: torch.Tensor,
    uncond_embeds: torch.Tensor | None,
    guidance_scale: float,
    prediction_type: str | None = None,
    date: DATEConfig | None = None,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    reward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> SampleResult:
    """DATE over any denoiser function `denoise(x_in, t, embeds) -> output`, along `scheduler.timesteps`:
    `decode(x0_latents) -> images in [0, 1]` and `reward(images) -> scores [B]` guide the updates of `date`.
    `prediction_type`: what `denoise` predicts; the scheduler's (its config) when not given, and it must agree
    with the scheduler's, which reads the output (a scheduler whose clean estimate cannot be derived is refused).
    (Pipelines compose `sample` with more hooks: see `pipelines.template`.)"""
    own = prediction_type_of(scheduler)
    if prediction_type is not None and {"flow_prediction": "flow"}.get(prediction_type, prediction_type) != own:
        raise ValueError(
            f"prediction_type={prediction_type!r}, but {type(scheduler).__name__} reads the model's output as "
            f"{own!r} (its config): build the scheduler with prediction_type={prediction_type!r}, or leave "
            "prediction_type out"
        )
    if date is not None and date.moves:
        check_scheduler(scheduler)
    model = GuidedDenoiser(denoise, own)
    state = StepState(scheduler, latents, cond_embeds, uncond_embeds, guidance_scale)
    starts = scheduler_step_starts(scheduler, len(scheduler.timesteps))
    steps = update_steps(date, len(starts))
    recorder = TraceRecorder(cond_embeds, steps)
    update = DATEUpdate(model, date, cond_embeds, starts, decode, reward) if steps else None
    state = sample(model, state, scheduler.timesteps, Hooks(output=update, observers=[recorder]))
    return recorder.result(state)
