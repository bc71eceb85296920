"""The model's clean-image estimate x0_hat, read from the scheduler's own tensors.

Every supported scheduler feeds the model `x_in = alpha * x0 + sigma * noise`: variance-preserving for the
DDPM family (sigma-parameterised schedulers such as Euler reach it through `scale_model_input`), and
`alpha = 1 - sigma` for flow matching (SD3, FLUX). So with the model input
and the scheduler's noise level at the current step, x0_hat has one formula per prediction type, and nothing
calls `scheduler.step` (multistep schedulers keep history that a second call would corrupt).
"""

from __future__ import annotations

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "flow")


def is_flow_matching(scheduler) -> bool:
    """Rectified-flow schedulers (SD3, FLUX): x_t = (1 - s) x0 + s noise, the model predicts noise - x0."""
    return type(scheduler).__name__.startswith("FlowMatch")


def prediction_type_of(scheduler) -> str:
    return "flow" if is_flow_matching(scheduler) else scheduler.config.get("prediction_type", "epsilon")


def scale_input(scheduler, sample, timestep):
    """`scheduler.scale_model_input` where the scheduler has one (flow-matching schedulers do not)."""
    scale = getattr(scheduler, "scale_model_input", None)
    return scale(sample, timestep) if scale is not None else sample


def _sigma_index(scheduler, timestep) -> int:
    index = getattr(scheduler, "step_index", None)
    return scheduler.index_for_timestep(timestep) if index is None else index


def _coefficients(scheduler, sigma):
    sigma = sigma.to(torch.float64)
    if is_flow_matching(scheduler):
        return 1 - sigma, sigma
    alpha = 1 / torch.sqrt(1 + sigma**2)
    return alpha, sigma * alpha


def noise_level(scheduler, timestep) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, sigma) of the model input at `timestep`, after `scheduler.scale_model_input` ran for it."""
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and len(sigmas) > 1:
        return _coefficients(scheduler, sigmas[_sigma_index(scheduler, timestep)])
    acp = scheduler.alphas_cumprod[int(timestep)].to(torch.float64)
    return acp.sqrt(), (1 - acp).sqrt()


def predicted_x0(model_input: torch.Tensor, model_output: torch.Tensor, alpha, sigma, prediction_type: str):
    """x0_hat from the (guided) model output at a model input with noise level (alpha, sigma)."""
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
    """(alpha, sigma) of the sample the scheduler produces after loop index `loop_index` ((1, 0) at the end)."""
    one, zero = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and len(sigmas) > 1:
        index = _sigma_index(scheduler, timestep) + 1
        if index >= len(sigmas):
            return one, zero
        return _coefficients(scheduler, sigmas[index])
    timesteps = scheduler.timesteps
    if loop_index + 1 >= len(timesteps):
        return one, zero
    acp = scheduler.alphas_cumprod[int(timesteps[loop_index + 1])].to(torch.float64)
    return acp.sqrt(), (1 - acp).sqrt()
