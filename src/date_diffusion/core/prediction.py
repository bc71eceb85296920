"""The model's clean-image estimate x0_hat, as the scheduler itself forms it from the model's output.

At every step a scheduler relates its sample `x`, the model's input `x_in = c_in * x` (`scale_model_input`) and
its clean estimate, a linear reading of the model's output. `preconditioning(scheduler, timestep)` reads that
relation off the scheduler (`Preconditioning`), so that DATE's reward scores the estimate the scheduler steps
with, and nothing calls `scheduler.step` (multistep schedulers keep history that a second call would corrupt).
diffusers' schedulers come in five readings, told apart by what the scheduler has (and diffusers' `FlowMatch`
naming of rectified-flow schedulers), never by a list of classes:

- `edm`: EDM preconditioning (`precondition_inputs` / `precondition_outputs`: EDM Euler, EDM DPM-Solver, ...):
  `x = x0 + sigma * noise`, `x_in = c_in x`, `x0_hat = c_skip x + c_out output`, the three coefficients taken
  from the scheduler's own methods (its `sigma_data` and prediction type);
- `flow`: rectified flow (`FlowMatch*` schedulers): `x_in = x = (1 - sigma) x0 + sigma noise`, the model predicts
  `noise - x0`;
- `alpha_sigma`: solvers that state their own decomposition `x = alpha_t x0 + sigma_t noise`
  (`_sigma_to_alpha_sigma_t`: DPM-Solver multistep and single-step, DEIS, UniPC, SA-Solver; flow sigmas included);
- `karras`: k-diffusion samplers on a variance-preserving training schedule (Euler, Euler ancestral, Heun, LMS,
  KDPM2, DPM-SDE): `x = x0 + sigma noise` and the model sees `x / sqrt(sigma^2 + 1)`, sigma being the one
  `scale_model_input` applies at this evaluation (KDPM2's interpolated sigma in its second stage included);
- `discrete`: DDPM-style schedulers that index `alphas_cumprod` by timestep (DDIM, DDPM, PNDM, LCM, TCD):
  `x_in = x = sqrt(abar) x0 + sqrt(1 - abar) noise`; a consistency model's boundary condition (LCM's
  `get_scalings_for_boundary_condition_discrete`) is applied as the scheduler applies it.

All but `edm` read the output by the prediction type (epsilon, v-prediction, sample, flow) in the model input's
own `(alpha, sigma)`. The estimate is taken before the scheduler's own clipping or dynamic thresholding of it
(`clip_sample`, `thresholding`, off in every released latent model's config): a clamp would zero the reward's
gradient wherever it holds, and the reference scores the unclipped estimate. A scheduler none of these describes,
or one with a prediction type its reading lacks, is refused by `check_scheduler`, naming it, before any work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "flow")
KINDS = ("edm", "flow", "alpha_sigma", "karras", "discrete")
# the prediction types each reading can take (EDM's: whatever its `precondition_outputs` takes)
_READS = {
    "flow": ("flow",),
    "alpha_sigma": PREDICTION_TYPES,
    "karras": ("epsilon", "v_prediction", "sample"),
    "discrete": ("epsilon", "v_prediction", "sample"),
}
_F64 = torch.float64


class SchedulerError(ValueError):
    """A scheduler whose clean-image estimate DATE cannot derive (refused before any work)."""


def is_flow_matching(scheduler) -> bool:
    """Rectified-flow schedulers (SD3, FLUX): x_t = (1 - s) x0 + s noise, the model predicts noise - x0."""
    return type(scheduler).__name__.startswith("FlowMatch")


def prediction_type_of(scheduler) -> str:
    """What the model's output is, as the scheduler reads it (`flow` for rectified flow, flow sigmas included)."""
    if is_flow_matching(scheduler):
        return "flow"
    kind = scheduler.config.get("prediction_type", "epsilon")
    return "flow" if kind == "flow_prediction" else kind


def _has(scheduler, *methods) -> bool:
    return all(callable(getattr(scheduler, m, None)) for m in methods)


def _kind(scheduler) -> tuple[str | None, str]:
    """(reading, '') or (None, why not)."""
    config = getattr(scheduler, "config", None)
    if config is None:
        return None, "it has no config (not a diffusers scheduler)"
    if _has(scheduler, "precondition_inputs", "precondition_outputs"):
        return "edm", ""
    if is_flow_matching(scheduler):
        return "flow", ""
    if _has(scheduler, "_sigma_to_alpha_sigma_t") and hasattr(scheduler, "sigmas"):
        return "alpha_sigma", ""
    if "sigma_data" in config:
        return None, "it preconditions with sigma_data but has no precondition_inputs / precondition_outputs to read"
    if "prediction_type" not in config:
        return None, "its config names no prediction_type, so what the model's output is cannot be read"
    if not hasattr(scheduler, "alphas_cumprod"):
        return None, "it has neither a variance-preserving training schedule (alphas_cumprod) nor sigma preconditioning"
    if hasattr(scheduler, "sigmas"):
        return ("karras", "") if _has(scheduler, "scale_model_input") else (None, "it has sigmas but no input scaling")
    return "discrete", ""


def _refusal(scheduler, why: str) -> SchedulerError:
    name = type(scheduler).__name__
    compatible = [c.__name__ for c in getattr(scheduler, "compatibles", []) if c.__name__ != name][:4]
    hint = f" (its compatibles include {', '.join(compatible)})" if compatible else ""
    return SchedulerError(
        f"DATE cannot use {name}: {why}, so the clean-image estimate its reward scores cannot be derived. Use "
        f"another scheduler{hint}, e.g. pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)"
    )


def check_scheduler(scheduler) -> str:
    """The scheduler's reading (one of `KINDS`), or `SchedulerError` naming it and why its clean estimate cannot
    be derived (an unknown kind of scheduler, or a prediction type its reading lacks)."""
    kind, why = _kind(scheduler)
    if kind is None:
        raise _refusal(scheduler, why)
    prediction = prediction_type_of(scheduler)
    if kind == "edm":
        try:  # the scheduler's own check of its prediction type
            scheduler.precondition_outputs(torch.zeros((), dtype=_F64), torch.zeros((), dtype=_F64),
                                           torch.ones((), dtype=_F64))  # fmt: skip
        except (ValueError, NotImplementedError) as err:
            raise _refusal(scheduler, f"its preconditioning refuses prediction_type {prediction!r} ({err})") from err
    elif prediction not in _READS[kind]:
        raise _refusal(scheduler, f"its prediction_type {prediction!r} is none of {', '.join(_READS[kind])}")
    return kind


def scale_input(scheduler, sample, timestep):
    """`scheduler.scale_model_input` where the scheduler has one (flow-matching schedulers do not)."""
    scale = getattr(scheduler, "scale_model_input", None)
    return scale(sample, timestep) if scale is not None else sample


def _sigma_index(scheduler, timestep) -> int:
    index = getattr(scheduler, "step_index", None)
    return scheduler.index_for_timestep(timestep) if index is None else index


def _vp(sigma):
    """(alpha, sigma) of a variance-exploding `x0 + sigma noise` scaled to variance preserving."""
    alpha = 1 / torch.sqrt(1 + sigma**2)
    return alpha, sigma * alpha


@dataclass(frozen=True)
class Preconditioning:
    """How the scheduler reads the model at one evaluation (float64 scalars).

    kind, prediction_type: the reading (see the module) and what the model predicts.
    c_in: the model's input is `c_in * x`, x the scheduler's sample.
    alpha, sigma: the model's input is `alpha * x0 + sigma * noise`.
    skip, out: a linear reading `x0_hat = skip * x_in + out * output` (EDM's preconditioning; the multistep
        solvers' flow prediction, `x - sigma * output` with their own sigma); None: read by the prediction type.
    boundary: a consistency model's `(c_skip, c_out)`: `x0_hat <- c_skip * x_in + c_out * x0_hat`.
    scheduler_sigma: the scheduler's noise level where it works in sigmas (None: it works in timesteps).
    timestep_is_time: whether the scheduler's timesteps are times of the training schedule (EDM's are its noise
        conditioning `0.25 log sigma`).
    """

    kind: str
    prediction_type: str
    c_in: torch.Tensor
    alpha: torch.Tensor
    sigma: torch.Tensor
    skip: torch.Tensor | None = None
    out: torch.Tensor | None = None
    boundary: tuple[torch.Tensor, torch.Tensor] | None = None
    scheduler_sigma: float | None = None
    timestep_is_time: bool = True

    def x0(self, x_in: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """The scheduler's clean estimate from the model's input and (guided) output (differentiable in both)."""
        if self.skip is not None:
            x0 = _cast(self.skip, x_in) * x_in + _cast(self.out, x_in) * output
        else:
            x0 = predicted_x0(x_in, output, self.alpha, self.sigma, self.prediction_type)
        if self.boundary is not None:
            c_skip, c_out = self.boundary
            x0 = _cast(c_out, x_in) * x0 + _cast(c_skip, x_in) * x_in
        return x0

    def x0_of_sample(self, sample: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """The same from the scheduler's sample (before `scale_model_input`)."""
        return self.x0(sample * _cast(self.c_in, sample), output)

    def noise(self, x_in: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The unit noise that the model's input holds beside `x0`."""
        return (x_in - _cast(self.alpha, x_in) * x0) / _cast(self.sigma, x_in)

    def record(self, timestep) -> dict:
        """What a trace states about this evaluation: the timestep where the scheduler's timesteps are times of
        the training schedule, and its sigma where it works in sigmas."""
        out = {"timestep": int(timestep)} if self.timestep_is_time else {}
        if self.scheduler_sigma is not None:
            out["sigma"] = self.scheduler_sigma
        return out


def _cast(value, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _karras_sigma(scheduler, timestep, table: torch.Tensor) -> torch.Tensor:
    """The sigma `scale_model_input` applies now: the table's (exact) where its input scale is the table's, else
    the one its scale says (a stage between two of the table's sigmas: KDPM2's interpolated one, DPM-SDE's
    midpoint)."""
    device = scheduler.sigmas.device  # where the scheduler computes (float64 where the device has it)
    probe = torch.ones((), dtype=torch.float32 if device.type == "mps" else _F64, device=device)
    scale = scheduler.scale_model_input(probe, timestep).to("cpu", _F64)
    if torch.isclose(scale, _vp(table)[0], rtol=1e-6, atol=0):
        return table
    return torch.sqrt(torch.clamp(1 / scale**2 - 1, min=0))


def preconditioning(scheduler, timestep) -> Preconditioning:
    """How `scheduler` reads the model's output at `timestep` (after `scale_model_input` ran for it, where the
    scheduler has one). Refuses (`SchedulerError`) what `check_scheduler` refuses."""
    kind = check_scheduler(scheduler)
    prediction = prediction_type_of(scheduler)
    one = torch.ones((), dtype=_F64)
    if kind == "discrete":
        acp = scheduler.alphas_cumprod[int(timestep)].to(_F64)
        boundary = None
        if _has(scheduler, "get_scalings_for_boundary_condition_discrete"):
            t = torch.as_tensor(timestep).to("cpu", _F64)
            boundary = tuple(torch.as_tensor(c).to(_F64) for c in
                             scheduler.get_scalings_for_boundary_condition_discrete(t))  # fmt: skip
        return Preconditioning(kind, prediction, one, acp.sqrt(), (1 - acp).sqrt(), boundary=boundary)
    table = scheduler.sigmas[_sigma_index(scheduler, timestep)].to("cpu", _F64)
    if kind == "flow":
        return Preconditioning(kind, prediction, one, 1 - table, table, scheduler_sigma=float(table))
    if kind == "alpha_sigma":
        alpha, sigma = (torch.as_tensor(v).to("cpu", _F64) for v in scheduler._sigma_to_alpha_sigma_t(table))
        linear = {"skip": one, "out": -table} if prediction == "flow" else {}  # these solvers' flow: x - sigma v
        return Preconditioning(kind, prediction, one, alpha, sigma, scheduler_sigma=float(table), **linear)
    if kind == "karras":
        s = _karras_sigma(scheduler, timestep, table)
        alpha, sigma = _vp(s)
        return Preconditioning(kind, prediction, alpha, alpha, sigma, scheduler_sigma=float(s))
    # edm: the coefficients from the scheduler's own preconditioning (linear in sample and output)
    zero = torch.zeros((), dtype=_F64)
    c_in = torch.as_tensor(scheduler.precondition_inputs(one, table)).to(_F64)
    c_skip = torch.as_tensor(scheduler.precondition_outputs(one, zero, table)).to(_F64)
    c_out = torch.as_tensor(scheduler.precondition_outputs(zero, one, table)).to(_F64)
    return Preconditioning(kind, prediction, c_in, c_in, c_in * table, skip=c_skip / c_in, out=c_out,
                           scheduler_sigma=float(table), timestep_is_time=False)  # fmt: skip


def noise_level(scheduler, timestep) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, sigma) of the model input at `timestep`, after `scheduler.scale_model_input` ran for it."""
    pre = preconditioning(scheduler, timestep)
    return pre.alpha, pre.sigma


def predicted_x0(model_input: torch.Tensor, model_output: torch.Tensor, alpha, sigma, prediction_type: str):
    """x0_hat from the (guided) model output at a model input with noise level (alpha, sigma), read by the
    prediction type (a scheduler's own reading, EDM's included: `preconditioning(...).x0`)."""
    alpha = torch.as_tensor(alpha, dtype=model_input.dtype, device=model_input.device)
    sigma = torch.as_tensor(sigma, dtype=model_input.dtype, device=model_input.device)
    if prediction_type == "epsilon":
        return (model_input - sigma * model_output) / alpha
    if prediction_type == "v_prediction":
        return alpha * model_input - sigma * model_output
    if prediction_type == "sample":
        return model_output
    if prediction_type == "flow":  # alpha = 1 - sigma; the output is noise - x0
        return model_input - sigma * model_output
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def next_noise_level(scheduler, timestep, loop_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, sigma) of the sample the scheduler moves to after loop index `loop_index` ((1, 0) at the end), in
    the image's scale: a variance-exploding sample (`karras`, `edm`) scaled to variance preserving."""
    one, zero = torch.tensor(1.0, dtype=_F64), torch.tensor(0.0, dtype=_F64)
    kind = check_scheduler(scheduler)
    if kind == "discrete":
        timesteps = scheduler.timesteps
        if loop_index + 1 >= len(timesteps):
            return one, zero
        acp = scheduler.alphas_cumprod[int(timesteps[loop_index + 1])].to(_F64)
        return acp.sqrt(), (1 - acp).sqrt()
    sigmas = scheduler.sigmas
    index = _sigma_index(scheduler, timestep) + 1
    if index >= len(sigmas):
        return one, zero
    s = sigmas[index].to("cpu", _F64)
    if kind == "flow":
        return 1 - s, s
    if kind == "alpha_sigma":
        return tuple(torch.as_tensor(v).to("cpu", _F64) for v in scheduler._sigma_to_alpha_sigma_t(s))
    return _vp(s)
