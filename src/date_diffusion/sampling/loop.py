"""The sampling loop: one small function over a guided denoiser, and one hook protocol every method plugs into.

A normal step is one denoiser call on `[x, x]` with `[uncond, cond]`, classifier-free guidance and one
`scheduler.step`. Methods are hooks, called at fixed points of every step with one `StepState`:
  before_step(state)   may change `latents` / `cond`, or set `skip` (Attend-and-Excite, interrupt);
  model_output(state)  may set `output`, the guided model output for the scheduler, and `kind` (DATE's update
                       and replayed steps); a step no hook sets is a normal step;
  after_step(state)    after `scheduler.step`: may change `latents`, `cond`, `uncond`, `guidance_scale`
                       (diffusers callbacks), report progress.
DATE's update step (`sampling.date_step`) follows the reference exactly; see there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from date_diffusion.core.config import DATEConfig
from date_diffusion.core.prediction import check_scheduler, prediction_type_of
from date_diffusion.sampling.denoiser import GuidedDenoiser, guided

__all__ = [
    "GuidedDenoiser",
    "Hook",
    "SampleResult",
    "StepState",
    "Trace",
    "date_sample",
    "guided",
    "sample",
    "step_starts",
]


def step_starts(n_iterations: int, num_inference_steps: int | None = None, order: int = 1) -> list[int]:
    """The loop index at which each sampling step begins, counting steps as diffusers does (its progress bar: a
    step ends at every `order`-th loop iteration after the scheduler's warm-up iterations, and at the last).

    One step is one loop iteration for DDIM, DDPM, Euler, DPM-Solver, UniPC, flow matching, ...; PNDM's first step
    takes two iterations (its Runge-Kutta-like warm-up), Heun's and KDPM2's every step but the last takes two. DATE's
    update steps are steps in this sense: `update_steps=[0, 10, 20, 30, 40]` of a 50-step run updates at the start
    of those steps whatever the scheduler (loop indices 0, 11, 21, ... under PNDM; 0, 20, 40, ... under Heun).
    `num_inference_steps`: the steps the scheduler was set to (default: one per iteration)."""
    steps = n_iterations if num_inference_steps is None else num_inference_steps
    warmup = max(n_iterations - steps * order, 0)
    ends = [i for i in range(n_iterations) if i == n_iterations - 1 or (i + 1 > warmup and (i + 1) % order == 0)]
    return [0, *(end + 1 for end in ends[:-1])]


def scheduler_step_starts(scheduler, n_iterations: int) -> list[int]:
    """`step_starts` for a scheduler set to its timesteps (its `order` and `num_inference_steps`)."""
    return step_starts(n_iterations, getattr(scheduler, "num_inference_steps", None), getattr(scheduler, "order", 1))


@dataclass
class StepState:
    """What the hooks of one step see and may change."""

    scheduler: object
    latents: torch.Tensor
    cond: torch.Tensor  # the conditional embeddings in use (DATE adapts them)
    uncond: torch.Tensor | None  # None: no classifier-free guidance
    guidance_scale: float
    index: int = 0  # the loop index (an entry of the timesteps)
    timestep: torch.Tensor | None = None
    output: torch.Tensor | None = None  # the guided model output the scheduler takes
    kind: str = "normal"  # normal | update | replay
    skip: bool = False  # set before the step: the step is not taken (interrupted)


class Hook:
    """The one hook shape: override any of the three points (and `close`, called once the loop ends)."""

    def before_step(self, state: StepState) -> None:
        pass

    def model_output(self, state: StepState) -> None:
        pass

    def after_step(self, state: StepState) -> None:
        pass

    def close(self) -> None:
        pass


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


def sample(
    model: GuidedDenoiser,
    state: StepState,
    timesteps: Sequence,
    hooks: Sequence[Hook] = (),
    step_kwargs: dict | Callable[[int], dict] | None = None,
) -> StepState:
    """Run `timesteps` from `state` (latents, embeddings, guidance, scheduler); returns the final state.
    `step_kwargs` go to `scheduler.step` (a function of the loop index: editing feeds each step its noise map)."""
    try:
        for i, t in enumerate(timesteps):
            state.index, state.timestep, state.output, state.kind, state.skip = i, t, None, "normal", False
            for hook in hooks:
                hook.before_step(state)
                if state.skip:
                    break
            if state.skip:
                continue
            for hook in hooks:
                hook.model_output(state)
            if state.output is None:
                state.output = model.step(state)
            kwargs = step_kwargs(i) if callable(step_kwargs) else step_kwargs or {}
            with torch.no_grad():
                state.latents = state.scheduler.step(state.output, t, state.latents, **kwargs, return_dict=False)[0]
            for hook in hooks:
                hook.after_step(state)
    finally:
        for hook in hooks:
            hook.close()
    return state


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
    (Pipelines compose `sample` with more hooks: see `pipelines.common`.)"""
    from date_diffusion.sampling.date_step import DATEUpdate

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
    update = DATEUpdate(model, date, cond_embeds, scheduler_step_starts(scheduler, len(scheduler.timesteps)), decode,
                        reward)  # fmt: skip
    state = sample(model, state, scheduler.timesteps, [update])
    return update.result(state)
