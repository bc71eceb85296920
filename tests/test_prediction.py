"""x0_hat from the scheduler's tensors equals the scheduler's own clean-sample estimate."""

import inspect

import pytest
import torch

from date_diffusion.core.prediction import noise_level, predicted_x0
from date_diffusion.schedulers import SCHEDULERS, make_scheduler

BASE = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    steps_offset=1,
    clip_sample=False,
    set_alpha_to_one=False,
)


def step_with_own_x0(sched, out, t, x, seed):
    """One real scheduler step; returns (the scheduler's clean estimate at this step, next sample)."""
    kwargs = {}
    if "generator" in inspect.signature(sched.step).parameters:
        kwargs["generator"] = torch.Generator().manual_seed(seed)
    if hasattr(sched, "convert_model_output"):  # multistep solvers: their data prediction
        if sched.step_index is None:
            sched._init_step_index(t)
        theirs = sched.convert_model_output(out, sample=x)
        return theirs, sched.step(out, t, x, **kwargs).prev_sample
    res = sched.step(out, t, x, **kwargs)
    return res.pred_original_sample, res.prev_sample


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("name", [n for n in SCHEDULERS if n != "pndm"])  # PNDM exposes no clean estimate
def test_x0_matches_scheduler(name, prediction_type):
    sched = make_scheduler(name, {**BASE, "prediction_type": prediction_type})
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g) * sched.init_noise_sigma
    for i, t in enumerate(sched.timesteps[:6]):
        x_in = sched.scale_model_input(x, t)
        out = torch.randn(x.shape, generator=g)
        ours = predicted_x0(x_in, out, *noise_level(sched, t), prediction_type)
        theirs, x = step_with_own_x0(sched, out, t, x, seed=i)
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4, msg=f"{name} step {i}")


def test_sample_prediction_returns_model_output():
    out = torch.randn(1, 4, 2, 2)
    assert torch.equal(predicted_x0(torch.randn(1, 4, 2, 2), out, 0.5, 0.5, "sample"), out)


def test_unknown_prediction_type():
    with pytest.raises(ValueError, match="prediction_type"):
        predicted_x0(torch.zeros(1), torch.zeros(1), 1.0, 0.0, "edm")
