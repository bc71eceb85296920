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


def make_edm(**config):
    from diffusers import EDMEulerScheduler

    return EDMEulerScheduler(**config)


def test_unreadable_schedulers_are_refused_naming_them():
    from diffusers import CMStochasticIterativeScheduler, ScoreSdeVeScheduler

    from date_diffusion.core.prediction import SchedulerError, check_scheduler

    for sched, why in ((ScoreSdeVeScheduler(), "prediction_type"), (CMStochasticIterativeScheduler(), "sigma_data")):
        with pytest.raises(SchedulerError, match=f"{type(sched).__name__}.*{why}.*from_config"):
            check_scheduler(sched)
    edm_sample = make_edm(prediction_type="sample")  # EDM's own preconditioning has no "sample"
    with pytest.raises(SchedulerError, match="EDMEulerScheduler.*'sample'"):
        check_scheduler(edm_sample)


def test_records_state_timestep_where_it_is_time_and_sigma_where_the_scheduler_works_in_sigmas():
    from date_diffusion.core.prediction import preconditioning

    ddim, euler, edm = make_scheduler("ddim", BASE), make_scheduler("euler", BASE), make_edm()
    for sched in (ddim, euler, edm):
        sched.set_timesteps(4)
    t = ddim.timesteps[0]
    assert preconditioning(ddim, t).record(t) == {"timestep": int(t)}
    t = euler.timesteps[0]
    assert preconditioning(euler, t).record(t) == {"timestep": int(t), "sigma": pytest.approx(float(euler.sigmas[0]))}
    t = edm.timesteps[0]  # 0.25 log(80): a noise conditioning, not a time
    assert preconditioning(edm, t).record(t) == {"sigma": pytest.approx(80.0)}


def test_recorded_x0_derives_the_estimate_a_step_does_not_state():
    """DPM-Solver's step states no estimate (its `convert_model_output` holds it); TCD's tuple holds a noised sample
    where others hold the estimate: both record the scheduler's clean estimate."""
    import copy

    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, TCDScheduler

    from date_diffusion.sampling.record import recorded_x0

    g = torch.Generator().manual_seed(0)
    x, out = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    dpm = DPMSolverMultistepScheduler.from_config(BASE)
    dpm.set_timesteps(4)
    probe = copy.deepcopy(dpm)
    probe._init_step_index(dpm.timesteps[0])
    expected = probe.convert_model_output(out, sample=x)
    with recorded_x0(dpm) as seen:
        dpm.step(out, dpm.timesteps[0], x, return_dict=False)
    torch.testing.assert_close(seen[0], expected, rtol=1e-5, atol=1e-5)
    tcd, ddim = TCDScheduler.from_config(BASE), DDIMScheduler.from_config(BASE)
    for sched in (tcd, ddim):
        sched.set_timesteps(4)
    t = tcd.timesteps[0]
    with recorded_x0(tcd) as seen:
        noised = tcd.step(out, t, x, eta=0.3, generator=g, return_dict=False)[1]
    torch.testing.assert_close(seen[0], ddim.step(out, t, x).pred_original_sample, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(seen[0], noised, atol=1e-2)


def test_date_sample_refuses_a_prediction_type_the_scheduler_does_not_read():
    from date_diffusion import DATEConfig, date_sample

    sched = make_scheduler("ddim", BASE)
    sched.set_timesteps(2)
    kw = dict(scheduler=sched, denoise=lambda x, t, c: x, latents=torch.zeros(1, 4, 2, 2), guidance_scale=1.0,
              cond_embeds=torch.zeros(1, 2, 3), uncond_embeds=None, date=DATEConfig(rho=0))  # fmt: skip
    with pytest.raises(ValueError, match="prediction_type='v_prediction'.*DDIMScheduler.*'epsilon'"):
        date_sample(prediction_type="v_prediction", **kw)
    assert date_sample(**kw).latents.shape == (1, 4, 2, 2)  # the scheduler's own, when not given
