"""DATE's reward scores the scheduler's own clean estimate under every scheduler a family accepts.

The schedulers are enumerated from diffusers at run time: each family's stock pipeline names its scheduler (a class
or diffusers' `KarrasDiffusionSchedulers`), whose `compatibles` it may swap in (`X.from_config(pipe.scheduler
.config)`); to those come every EDM scheduler, LCM and TCD (noise-prediction families) and every `FlowMatch*`
scheduler and the solvers that take flow sigmas (flow families). Each is built from every real checkpoint's
scheduler configuration of the family (tests/real_configs), epsilon and v-prediction for noise-prediction ones. At
every step DATE's estimate (`core.prediction.preconditioning`) is compared with the scheduler's own:
`pred_original_sample` or LCM's `denoised` from its step, or its `convert_model_output` (a noise prediction turned
into the data prediction with the scheduler's own `_sigma_to_alpha_sigma_t`). A DDPM-style scheduler that states
none (PNDM, TCD) is compared with DDIM's estimate on its own training schedule; a flow-matching one through its
steps: from DATE's estimate and noise, a step to the next noise level (`next_noise_level`) must land where the
scheduler's own first-order step lands (or, for an ancestral step, where its fresh noise takes it). Where the
scheduler clips or thresholds its estimate, DATE's (taken before that) is compared after the same clamp. A
scheduler whose estimate cannot be derived must be refused, naming it.

`python tests/test_scheduler_estimates.py` prints the family x scheduler table of the largest difference, relative
to the image scale (max(1, max |own estimate|)).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import warnings

import diffusers
import pytest
import realconfig
import torch
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers
from diffusers.utils.torch_utils import randn_tensor
from test_flux import flux_components  # noqa: F401  (fixtures: the real-config folders)
from test_sdxl import sdxl_components  # noqa: F401

from date_diffusion import DATEConfig
from date_diffusion.core.prediction import (
    SchedulerError,
    check_scheduler,
    next_noise_level,
    preconditioning,
    scale_input,
)
from date_diffusion.families import FAMILIES, by_name

TOLERANCE = 1e-3  # of the image scale; the readings agree to float32 rounding (about 1e-7, 1e-4 at worst)
STEPS = 10
# every real configuration (tests/real_configs), each a checkpoint of its family whose schedule every scheduler
# the family accepts is built from
CONFIGS = realconfig.NAMES


def _scheduler_classes(annotation) -> set[str]:
    """The scheduler classes a stock pipeline's `scheduler` annotation names, with their compatibles."""
    if isinstance(annotation, type) and issubclass(annotation, KarrasDiffusionSchedulers):
        names = {member.name for member in annotation}
    else:
        names = {annotation.__name__}
    for name in list(names):
        compatibles = getattr(getattr(diffusers, name, None), "_compatibles", None)
        if compatibles is not None:  # (a class whose optional dependency is missing is a stand-in without them)
            names |= set(compatibles) | {name}
    return names


def _exported(prefix: str) -> set[str]:
    return {n for n in dir(diffusers) if n.startswith(prefix) and n.endswith("Scheduler")}


def is_flow(config_name: str) -> bool:
    return realconfig.load(config_name)["scheduler"]["_class_name"].startswith("FlowMatch")


def family_schedulers(family, flow: bool) -> list[tuple[str, dict]]:
    """(scheduler class name, config overrides) a family accepts, read from diffusers."""
    stock = inspect.signature(family.stock_pipeline().__init__).parameters["scheduler"].annotation
    names = _scheduler_classes(stock)
    if not flow:
        return [(n, {}) for n in sorted(names | _exported("EDM") | {"LCMScheduler", "TCDScheduler"})]
    out = [(n, {}) for n in sorted(names | _exported("FlowMatch"))]
    for name in sorted(_scheduler_classes(KarrasDiffusionSchedulers)):  # solvers that take flow sigmas
        params = inspect.signature(getattr(diffusers, name).__init__).parameters
        if "use_flow_sigmas" in params:
            out.append((name, {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}))
    return out


def cases() -> list:
    params = []
    for config in CONFIGS:
        family, flow = by_name(realconfig.FAMILY[config]), is_flow(config)
        for name, overrides in family_schedulers(family, flow):
            for prediction in [None] if flow else ["epsilon", "v_prediction"]:
                label = f"{config}-{name}{'-flow-sigmas' if overrides else ''}-{prediction or 'flow'}"
                params.append(pytest.param(config, name, overrides, prediction, id=label))
    return params


def build(config_name: str, name: str, overrides: dict, prediction: str | None):
    """The scheduler `name` from a real configuration (skips where diffusers cannot build it here)."""
    config = dict(realconfig.load(config_name)["scheduler"], **overrides)
    if prediction is not None:
        config["prediction_type"] = prediction
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return getattr(diffusers, name).from_config(config)
        except ImportError as err:  # an optional dependency (torchsde) is missing
            pytest.skip(f"{name} cannot be built here: {err}")


def set_steps(scheduler, n: int = STEPS) -> None:
    params = inspect.signature(scheduler.set_timesteps).parameters
    kwargs = {"mu": 1.0} if "mu" in params and scheduler.config.get("use_dynamic_shifting") else {}
    scheduler.set_timesteps(n, **kwargs)


def _returns_noise(scheduler) -> bool:
    """Whether `convert_model_output` gives the noise prediction (DEIS, DPM-Solver's `dpmsolver`, UniPC's
    `predict_x0=False`, SA-Solver's `noise_prediction`) rather than the data prediction."""
    algorithm = scheduler.config.get("algorithm_type", "dpmsolver++")
    return not getattr(scheduler, "predict_x0", True) or algorithm in ("dpmsolver", "sde-dpmsolver", "deis",
                                                                        "noise_prediction")  # fmt: skip


def _step_kwargs(scheduler, seed: int) -> dict:
    params = inspect.signature(scheduler.step).parameters
    kwargs = {"generator": torch.Generator().manual_seed(seed)} if "generator" in params else {}
    if "eta" in params:
        kwargs["eta"] = 0.0  # what the stock pipelines pass (their `eta` default)
    return kwargs


def _as_the_scheduler_finishes(scheduler, reading, x_in, output):
    """DATE's estimate with the scheduler's own clipping or dynamic thresholding applied as its config enables it
    (DATE scores the estimate before them; see `core.prediction`), for comparison with what the scheduler states."""
    config = scheduler.config
    if not (config.get("thresholding") or config.get("clip_sample")):
        return reading.x0(x_in, output)
    x0 = dataclasses.replace(reading, boundary=None).x0(x_in, output)
    if config.get("thresholding"):
        x0 = scheduler._threshold_sample(x0)
    else:
        x0 = x0.clamp(-config.clip_sample_range, config.clip_sample_range)
    if reading.boundary is not None:
        c_skip, c_out = (float(c) for c in reading.boundary)
        x0 = c_out * x0 + c_skip * x_in
    return x0


def _ddim_estimate(scheduler, output, t, x):
    """The DDPM family's clean estimate at timestep `t` of the scheduler's own training schedule, as DDIM states it
    (for discrete schedulers that state none: PNDM, TCD), unclipped."""
    ddim = diffusers.DDIMScheduler.from_config(scheduler.config, clip_sample=False, thresholding=False)
    ddim.set_timesteps(len(scheduler.timesteps))
    return ddim.step(output, t, x).pred_original_sample


def compare(scheduler, seed: int = 0) -> dict:
    """Step `scheduler` through its timesteps with random model outputs, comparing DATE's estimate with the
    scheduler's own at each evaluation: the one it states (its step's `pred_original_sample` or `denoised`, or its
    `convert_model_output`); for a discrete scheduler stating none, DDIM's on the same schedule; for a flow one,
    through its first-order steps. Returns {"how": own | ddim | step, "worst": the largest difference relative to
    the image scale, "checked": evaluations compared, "finished": whether the scheduler clips or thresholds}."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float32) * float(getattr(scheduler, "init_noise_sigma", 1.0))
    timesteps = scheduler.timesteps
    kind = check_scheduler(scheduler)
    result = {
        "how": None,
        "worst": 0.0,
        "checked": 0,
        "finished": bool(scheduler.config.get("thresholding") or scheduler.config.get("clip_sample")),
    }

    def seen(how, theirs, ours):
        result["how"] = result["how"] or how
        rel = float((ours - theirs).abs().max()) / max(1.0, float(theirs.abs().max()))
        result["worst"], result["checked"] = max(result["worst"], rel), result["checked"] + 1

    for i, t in enumerate(timesteps):
        x_in = scale_input(scheduler, x, t)
        out = torch.randn(x.shape, generator=g)
        reading = preconditioning(scheduler, t)
        ours = _as_the_scheduler_finishes(scheduler, reading, x_in, out)
        kwargs = _step_kwargs(scheduler, seed * 1000 + i)
        own = None
        if hasattr(scheduler, "convert_model_output"):
            if scheduler.step_index is None:
                scheduler._init_step_index(t)
            own = scheduler.convert_model_output(out, sample=x)
            if _returns_noise(scheduler):
                alpha, sigma = scheduler._sigma_to_alpha_sigma_t(scheduler.sigmas[scheduler.step_index])
                own = (x - sigma * own) / alpha
        first_order = getattr(scheduler, "state_in_first_order", True)
        a_next, s_next = (v.float() for v in next_noise_level(scheduler, t, i))
        stepped = scheduler.step(out, t, x, **kwargs)
        for name in ("pred_original_sample", "denoised"):
            own = own if own is not None else getattr(stepped, name, None)
        if own is not None:
            seen("own", own, ours)
        elif kind == "discrete":
            seen("ddim", _ddim_estimate(scheduler, out, t, x), reading.x0(x_in, out))
        elif first_order and i < len(timesteps) - 1:  # a flow step: it must land where DATE's estimate leads
            landed = a_next * ours + s_next * reading.noise(x_in, ours)
            if "generator" in kwargs:  # or, an ancestral step, where its fresh noise (drawn again) takes it
                noise = randn_tensor(out.shape, generator=torch.Generator().manual_seed(seed * 1000 + i))
                drawn = a_next * ours + s_next * noise
                if (drawn - stepped.prev_sample).abs().max() < (landed - stepped.prev_sample).abs().max():
                    landed = drawn
            seen("step", stepped.prev_sample, landed)
        x = stepped.prev_sample
    return result


# schedulers of the enumerated lists whose clean estimate DATE cannot derive (none today): a scheduler a new
# diffusers adds is either derived and compared below, or refused and then must be named here
EXPECTED_REFUSALS: set[str] = set()


@pytest.mark.parametrize(("config", "name", "overrides", "prediction"), cases())
def test_date_scores_the_schedulers_own_clean_estimate(config, name, overrides, prediction):
    scheduler = build(config, name, overrides, prediction)
    try:
        kind = check_scheduler(scheduler)
    except SchedulerError as err:  # refused: only an expected one, saying which scheduler and how to go on
        assert name in EXPECTED_REFUSALS, f"{name} is refused: {err}"
        assert name in str(err) and "from_config" in str(err)
        return
    assert name not in EXPECTED_REFUSALS
    set_steps(scheduler)
    result = compare(scheduler)
    assert result["checked"] >= 3, f"{name}: compared at {result['checked']} evaluations only"
    assert result["worst"] <= TOLERANCE, f"{name} ({kind}): differs by {result['worst']:.2e} ({result['how']})"


@pytest.mark.parametrize("name", ["CMStochasticIterativeScheduler", "IPNDMScheduler", "ScoreSdeVeScheduler"])
def test_a_scheduler_whose_estimate_cannot_be_derived_is_refused_naming_it(name):
    with pytest.raises(SchedulerError, match=f"DATE cannot use {name}") as refused:
        check_scheduler(getattr(diffusers, name)())
    assert "from_config" in str(refused.value)


def test_every_family_is_tried_on_its_real_checkpoints_schedulers():
    """Not vacuous: every family has a real configuration; the scheduler each real checkpoint ships is among those
    enumerated for its family, derived (never refused) and compared at several steps."""
    assert {f.name for f in FAMILIES} - set(realconfig.UNSOURCED) <= {realconfig.FAMILY[c] for c in CONFIGS}
    for config in CONFIGS:
        shipped = realconfig.load(config)["scheduler"]["_class_name"]
        names = [name for name, _ in family_schedulers(by_name(realconfig.FAMILY[config]), is_flow(config))]
        assert shipped in names and len(names) >= 3
        scheduler = build(config, shipped, {}, None)
        check_scheduler(scheduler)
        set_steps(scheduler)
        assert compare(scheduler)["checked"] >= 3


def test_edm_estimate_is_the_schedulers_not_a_variance_preserving_one():
    """Playground v2.5's scheduler: at sigma 80 a variance-preserving reading of its output is off by hundreds."""
    scheduler = diffusers.EDMDPMSolverMultistepScheduler(**PLAYGROUND_SCHEDULER)
    scheduler.set_timesteps(STEPS)
    t = scheduler.timesteps[0]
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * float(scheduler.init_noise_sigma)
    out = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    x_in = scheduler.scale_model_input(x, t)
    reading = preconditioning(scheduler, t)
    own = scheduler.precondition_outputs(x, out, scheduler.sigmas[0])
    torch.testing.assert_close(reading.x0(x_in, out), own, rtol=1e-5, atol=1e-5)
    vp_alpha = 1 / (1 + scheduler.sigmas[0].double() ** 2).sqrt()  # what a variance-preserving reading assumes
    vp = (x_in - (1 - vp_alpha**2).sqrt().float() * out) / vp_alpha.float()
    assert float((vp - own).abs().max()) > 10
    assert reading.record(t) == {"sigma": pytest.approx(float(scheduler.sigmas[0]))}  # no timestep: c_noise is none


def test_refused_schedulers_are_named_before_any_work(components, reward):
    """A scheduler whose clean estimate cannot be derived (consistency models' preconditioning without diffusers'
    EDM methods) is refused when DATE would need it, before the denoiser runs; DATE off needs no estimate."""
    from date_diffusion import StableDiffusionDATEPipeline

    pipe = StableDiffusionDATEPipeline(**components)
    pipe.scheduler = diffusers.CMStochasticIterativeScheduler()
    pipe.set_progress_bar_config(disable=True)
    calls = []
    pipe.unet.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(SchedulerError, match="CMStochasticIterativeScheduler.*sigma_data"):
        pipe("a red circle", num_inference_steps=2, height=16, width=16, reward=reward,
             date=DATEConfig(rho=0.5, update_every=1))  # fmt: skip
    assert calls == []


# ------------------------------------------------------------------------------------------------ Playground v2.5

# diffusers' own scheduler for a Playground v2.5 checkpoint (its single-file loader's EDM DPM-Solver branch)
PLAYGROUND_SCHEDULER = dict(
    algorithm_type="dpmsolver++", dynamic_thresholding_ratio=0.995, euler_at_final=False, final_sigmas_type="zero",
    lower_order_final=True, num_train_timesteps=1000, prediction_type="epsilon", rho=7.0, sample_max_value=1.0,
    sigma_data=0.5, sigma_max=80.0, sigma_min=0.002, solver_order=2, solver_type="midpoint", thresholding=False,
)  # fmt: skip
# the Playground v2.5 VAE's per-channel latent statistics and scaling factor (its vae/config.json)
PLAYGROUND_VAE = dict(latents_mean=[-1.6574, 1.886, -1.383, 2.5155], latents_std=[8.4927, 5.9022, 6.5498, 5.2299],
                      scaling_factor=0.5)  # fmt: skip


def test_playground_scheduler_is_the_one_diffusers_builds():
    from diffusers.loaders import single_file_utils

    legacy = getattr(single_file_utils, "_legacy_load_scheduler", None)
    if legacy is None:
        pytest.skip("this diffusers no longer builds Playground's scheduler itself")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = legacy(diffusers.EDMDPMSolverMultistepScheduler, {"edm_mean": torch.zeros(4)}, "scheduler",
                       scheduler_type="edm_dpm_solver_multistep")  # fmt: skip
    assert {k: built.config[k] for k in PLAYGROUND_SCHEDULER} == PLAYGROUND_SCHEDULER


@pytest.fixture
def playground(sdxl_components):  # noqa: F811
    """Tiny SDXL components with Playground v2.5's scheduler and VAE latent statistics."""
    config = {k: v for k, v in sdxl_components["vae"].config.items() if k != "_use_default_values"}
    vae = diffusers.AutoencoderKL.from_config({**config, **PLAYGROUND_VAE})
    assert vae.config.latents_mean == PLAYGROUND_VAE["latents_mean"]
    vae.load_state_dict(sdxl_components["vae"].state_dict())
    scheduler = diffusers.EDMDPMSolverMultistepScheduler(**PLAYGROUND_SCHEDULER)
    return {**sdxl_components, "vae": vae, "scheduler": scheduler, "add_watermarker": False}


def _run(pipe, **kw):
    kw = {"num_inference_steps": 6, "height": 16, "width": 16, "output_type": "latent", **kw}
    return pipe("a red circle", generator=torch.Generator().manual_seed(0), **kw)


def test_playground_date_off_is_stock_and_date_scores_the_schedulers_estimate(playground, reward, monkeypatch):
    from date_diffusion.pipelines.reward_path import RewardPath
    from date_diffusion.pipelines.stable_diffusion_xl import StableDiffusionXLDATEPipeline
    from date_diffusion.sampling.loop import scheduler_step_starts

    stock = diffusers.StableDiffusionXLPipeline(**playground)
    ours = StableDiffusionXLDATEPipeline(**copy.deepcopy(playground))
    for p in (stock, ours):
        p.set_progress_bar_config(disable=True)
    assert torch.equal(_run(ours, date=None).images, _run(stock).images)

    decoded, own = [], []
    decode, convert = RewardPath.decode, ours.scheduler.convert_model_output

    def seen_decode(self, x0):
        if not torch.is_grad_enabled():  # the reward after the update: x0_hat of the output the scheduler takes
            decoded.append(x0.detach().clone())
        return decode(self, x0)

    def seen_convert(model_output, *args, **kwargs):
        own.append(convert(model_output, *args, **kwargs).detach().clone())
        return own[-1]

    monkeypatch.setattr(RewardPath, "decode", seen_decode)
    ours.scheduler.convert_model_output = seen_convert
    out = _run(ours, date=DATEConfig(rho=0.5, update_steps=[0, 2, 4]), reward=reward)
    starts = scheduler_step_starts(ours.scheduler, len(ours.scheduler.timesteps))
    assert len(decoded) == 3
    for k, x0 in zip((0, 2, 4), decoded):
        mine = own[starts[k]]
        assert float((x0 - mine).abs().max()) <= 1e-5 * max(1.0, float(mine.abs().max()))
    updates = out.traces[0]["updates"]
    sigmas = [float(ours.scheduler.sigmas[starts[k]]) for k in (0, 2, 4)]
    assert [u["sigma"] for u in updates] == pytest.approx(sigmas) and sigmas[0] == pytest.approx(80.0)
    assert all("timestep" not in u for u in updates)  # EDM's timesteps are 0.25 log sigma, no time


def test_playground_next_target_steps_with_the_schedulers_own_noise(playground, reward, monkeypatch):
    """`reward_target="next"` decodes a DDIM step to the next noise level from the scheduler's own estimate and the
    noise it implies (EDM: x = x0 + sigma n), in variance-preserving scale."""
    from date_diffusion.pipelines.reward_path import RewardPath
    from date_diffusion.pipelines.stable_diffusion_xl import StableDiffusionXLDATEPipeline

    pipe = StableDiffusionXLDATEPipeline(**playground)
    pipe.set_progress_bar_config(disable=True)
    decoded, own, samples = [], [], []
    decode, convert = RewardPath.decode, pipe.scheduler.convert_model_output

    def seen_decode(self, x0):
        if not torch.is_grad_enabled():
            decoded.append(x0.detach().clone())
        return decode(self, x0)

    def seen_convert(model_output, sample=None, **kwargs):
        own.append(convert(model_output, sample=sample, **kwargs).detach().clone())
        samples.append(sample.detach().clone())
        return own[-1]

    monkeypatch.setattr(RewardPath, "decode", seen_decode)
    pipe.scheduler.convert_model_output = seen_convert
    _run(pipe, date=DATEConfig(rho=0.5, update_steps=[1], reward_target="next"), reward=reward)
    sigma, sigma_next = (pipe.scheduler.sigmas[k].double() for k in (1, 2))
    noise = (samples[1].double() - own[1].double()) / sigma
    expected = (own[1].double() + sigma_next * noise) / (1 + sigma_next**2).sqrt()
    torch.testing.assert_close(decoded[0].double(), expected, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------ LCM as shipped


@pytest.fixture
def lcm_folder(tokenizer, tmp_path):
    """An SD 1.5-style LCM checkpoint as LCM Dreamshaper v7 ships it: model_index.json names
    LatentConsistencyModelPipeline, the UNet has a guidance embedding, the scheduler is LCM's."""
    from conftest import make_components

    comps = make_components(tokenizer)
    torch.manual_seed(0)
    config = {k: v for k, v in comps["unet"].config.items() if k != "_use_default_values"}  # (else it stays None)
    unet = diffusers.UNet2DConditionModel.from_config({**config, "time_cond_proj_dim": 8})
    assert unet.config.time_cond_proj_dim == 8
    scheduler = diffusers.LCMScheduler.from_config(realconfig.load("sd15")["scheduler"])
    lcm = diffusers.LatentConsistencyModelPipeline(**{**comps, "unet": unet, "scheduler": scheduler})
    lcm.save_pretrained(tmp_path / "lcm")
    assert json.loads((tmp_path / "lcm" / "model_index.json").read_text())["_class_name"] == (
        "LatentConsistencyModelPipeline"
    )
    return tmp_path / "lcm"


def test_lcm_layout_loads_as_sd_and_date_off_is_the_stock_lcm_pipeline(lcm_folder, reward):
    from date_diffusion import DATEPipeline, StableDiffusionDATEPipeline
    from date_diffusion.pipelines.loading import family_of, load_date_pipeline

    assert family_of(str(lcm_folder)) == "sd"
    pipe = load_date_pipeline(str(lcm_folder))
    assert type(pipe) is StableDiffusionDATEPipeline and type(pipe.scheduler).__name__ == "LCMScheduler"
    stock = diffusers.LatentConsistencyModelPipeline.from_pretrained(lcm_folder)
    for p in (pipe, stock):
        p.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=4, guidance_scale=6.0, output_type="latent")
    assert torch.equal(_run(pipe, date=None, **kw).images, _run(stock, **kw).images)
    assert type(DATEPipeline.from_pipe(stock)) is StableDiffusionDATEPipeline
    out = _run(pipe, date=DATEConfig(rho=0.5, update_steps=[0, 2]), reward=reward, **kw)
    assert [u["step"] for u in out.traces[0]["updates"]] == [0, 2]
    assert not pipe.settings_without_effect(6.0)  # the guidance scale acts through the UNet's embedding
    without = pipe.settings_without_effect(6.0, negative_prompt="blurry")  # and stock runs no negative branch
    assert list(without) == ["negative_prompt"] and "guidance embedding instead" in without["negative_prompt"]


def test_a_pipeline_with_a_familys_components_is_refused_naming_the_line_that_loads_it(components, tmp_path):
    from date_diffusion.pipelines.loading import load_date_pipeline

    diffusers.StableDiffusionImg2ImgPipeline(**components).save_pretrained(tmp_path / "img2img")
    refusal = r"StableDiffusionImg2ImgPipeline.*StableDiffusionDATEPipeline\.from_pretrained\(folder\) loads it"
    with pytest.raises(ValueError, match=refusal):
        load_date_pipeline(str(tmp_path / "img2img"))
    pipe = load_date_pipeline(str(tmp_path / "img2img"), family="sd")
    assert type(pipe).__name__ == "StableDiffusionDATEPipeline"


# ------------------------------------------------------------------------------------------------ records


def test_settings_without_effect_are_named(components, tokenizer):
    from date_diffusion import StableDiffusionDATEPipeline

    pipe = StableDiffusionDATEPipeline(**components)
    assert pipe.settings_without_effect(7.5, negative_prompt="blurry") == {}
    none = pipe.settings_without_effect(1.0, negative_prompt="blurry")
    assert set(none) == {"guidance_scale", "negative_prompt"} and "above 1" in none["guidance_scale"]


def test_flux_schnell_record_does_not_state_a_guidance_it_ignored(request, tmp_path, clip_dir):
    from PIL import Image
    from test_real_configs import cli_generate, saved

    from date_diffusion.outputs import PNG_PARAMETERS_KEY

    schnell = cli_generate(saved("flux_schnell", request, tmp_path / "schnell"), clip_dir, tmp_path / "o1",
                           "--steps", "2")  # fmt: skip
    assert schnell["guidance_scale"] is None
    without = schnell["without_effect"]["guidance_scale"]
    assert without["value"] == 3.5 and "guidance_embeds false" in without["why"]
    png = Image.open(tmp_path / "o1" / "a-red-circle-s0.png").text[PNG_PARAMETERS_KEY]
    assert "CFG scale" not in png
    updates = schnell["trace"]["updates"]
    assert updates and all("sigma" in u and "timestep" in u for u in updates)
    dev = cli_generate(saved("flux_dev", request, tmp_path / "dev"), clip_dir, tmp_path / "o2", "--steps", "2")
    assert dev["guidance_scale"] == 3.5 and "without_effect" not in dev


def table() -> str:
    """The family x scheduler table: the largest difference of DATE's estimate from the scheduler's own over every
    evaluation of a 10-step run, relative to the image scale (max(1, max |own|))."""
    how = {"own": "its own estimate", "ddim": "DDIM's estimate on its schedule", "step": "its first-order steps"}
    rows = ["| real config | scheduler | prediction | reading | max rel. diff | against |", "|---|---|---|---|---|---|"]
    for param in cases():
        family, name, overrides, prediction = param.values
        label, kind_of = name + (" (flow sigmas)" if overrides else ""), prediction or "flow"
        try:
            scheduler = build(family, name, overrides, prediction)
        except pytest.skip.Exception as why:
            rows.append(f"| {family} | {label} | {kind_of} | - | not built here | {str(why).splitlines()[-1]} |")
            continue
        try:
            kind = check_scheduler(scheduler)
        except SchedulerError:
            rows.append(f"| {family} | {label} | {kind_of} | refused | - | named before any work |")
            continue
        set_steps(scheduler)
        r = compare(scheduler)
        note = " (after its own clip_sample / thresholding)" if r["finished"] else ""
        rows.append(f"| {family} | {label} | {kind_of} | {kind} | {r['worst']:.1e} | {how[r['how']]}{note}, "
                    f"{r['checked']} evaluations |")  # fmt: skip
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
