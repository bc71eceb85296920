"""The sampling loop: one small function over a guided denoiser, and hooks with explicit roles.

A normal step is one denoiser call on `[x, x]` with `[uncond, cond]`, classifier-free guidance and one
`scheduler.step`. Methods plug in by role (`Hooks`), each called at its point of every step with one `StepState`:
  before     `before_step(state)`: may change `latents` / `cond`, or set `skip` (Attend-and-Excite, interrupt);
  output     the one slot for what provides the model output: `output(state) -> (output, kind)` or None (DATE's
             update, a replay); a step it does not claim is a normal step, `model.step(state)`;
  after      `after_step(state)` after `scheduler.step`: may change `latents`, `cond`, `uncond`, `guidance_scale`
             (diffusers callbacks, an editor's residuals);
  observers  `observe(view)` with a frozen `StepView` of the finished step: they see, never change (progress,
             the trace recorder).
DATE's update step (`sampling.date_step`) follows the reference exactly; see there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from date_diffusion.sampling.denoiser import GuidedDenoiser, guided

__all__ = [
    "GuidedDenoiser",
    "Hook",
    "Hooks",
    "Observer",
    "OutputHook",
    "StepState",
    "StepView",
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
    updates: tuple = ()  # an update step's records, one per image (`date_step.UpdateRecord`), set by its provider


@dataclass(frozen=True)
class StepView:
    """What observers see of a finished step (they cannot change the run)."""

    index: int
    timestep: object
    kind: str
    latents: torch.Tensor  # after the step (and the `after` hooks)
    cond: torch.Tensor  # the conditioning the step's output was made with
    updates: tuple = ()


class Hook:
    """A hook of the `before` or `after` role: override either point (and `close`, called once the loop ends)."""

    def before_step(self, state: StepState) -> None:
        pass

    def after_step(self, state: StepState) -> None:
        pass

    def close(self) -> None:
        pass


class OutputHook:
    """The `output` role: `output(state)` returns `(guided model output, kind)` for a step it claims, else None."""

    def output(self, state: StepState) -> tuple[torch.Tensor, str] | None:
        return None

    def close(self) -> None:
        pass


class Observer:
    """The `observers` role: `observe(view)` after every step taken; `close()` once the loop ends."""

    def observe(self, view: StepView) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Hooks:
    """The hooks of one run, by role (see the module's docstring)."""

    before: Sequence[Hook] = ()
    output: OutputHook | None = None
    after: Sequence[Hook] = ()
    observers: Sequence[Observer] = ()

    def all(self) -> list:
        return [*self.before, *([self.output] if self.output is not None else []), *self.after, *self.observers]


def sample(
    model: GuidedDenoiser,
    state: StepState,
    timesteps: Sequence,
    hooks: Hooks = Hooks(),
    step_kwargs: dict | Callable[[int], dict] | None = None,
) -> StepState:
    """Run `timesteps` from `state` (latents, embeddings, guidance, scheduler); returns the final state.
    `step_kwargs` go to `scheduler.step` (a function of the loop index: editing feeds each step its noise map)."""
    try:
        for i, t in enumerate(timesteps):
            state.index, state.timestep, state.output, state.kind, state.skip, state.updates = (
                i, t, None, "normal", False, ()
            )  # fmt: skip
            for hook in hooks.before:
                hook.before_step(state)
                if state.skip:
                    break
            if state.skip:
                continue
            claimed = hooks.output.output(state) if hooks.output is not None else None
            state.output, state.kind = claimed if claimed is not None else (model.step(state), "normal")
            used = state.cond  # the conditioning this step's output was made with
            kwargs = step_kwargs(i) if callable(step_kwargs) else step_kwargs or {}
            with torch.no_grad():
                state.latents = state.scheduler.step(state.output, t, state.latents, **kwargs, return_dict=False)[0]
            for hook in hooks.after:
                hook.after_step(state)
            view = StepView(i, t, state.kind, state.latents, used, state.updates)
            for observer in hooks.observers:
                observer.observe(view)
    finally:
        for hook in hooks.all():
            hook.close()
    return state
