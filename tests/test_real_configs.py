"""Every family on the configurations real checkpoints ship (tests/real_configs: SD 1.5's PNDM, SD 2.1's
v-prediction DDIM, SDXL's "leading" Euler, SD3.5 medium's shift 3, FLUX.1-dev's dynamic shifting, FLUX.1-schnell
without a guidance input, PixArt-alpha's DPM-Solver), on tiny random weights: the timesteps every check prepares
are the stock pipeline's, DATE off is the stock pipeline, `generate` and `edit` run through the command line, and
update steps count sampling steps whatever the scheduler."""

import json

import diffusers
import numpy as np
import pytest
import realconfig
import torch
from test_edit_families import EDITOR
from test_flux import flux_components  # noqa: F401  (fixtures)
from test_pixart import pixart_components  # noqa: F401
from test_sd3 import sd3_components  # noqa: F401
from test_sdxl import sdxl_components  # noqa: F401
from test_template import FAMILIES as TEMPLATE_FAMILIES

from date_diffusion import DATEConfig
from date_diffusion.cli.main import main
from date_diffusion.pipelines import date_pipeline_class
from date_diffusion.sampling.loop import scheduler_step_starts, step_starts


def components(name, request):
    stock_cls, fixture, extra = TEMPLATE_FAMILIES[realconfig.FAMILY[name]]
    comps = realconfig.apply(name, request.getfixturevalue(fixture))
    if stock_cls is diffusers.StableDiffusionXLPipeline:
        comps = {**comps, "add_watermarker": False}
    return stock_cls, comps, extra


def saved(name, request, path):
    stock_cls, comps, _ = components(name, request)
    stock_cls(**comps).save_pretrained(path)
    return path


@pytest.mark.parametrize("name", realconfig.NAMES)
def test_the_timesteps_every_check_prepares_are_the_stock_pipelines(name, request):
    """`stock_timesteps` (what step checks, editing, the benchmark and the page ask) equals the schedule the stock
    pipeline sets when it samples, FLUX.1-dev's resolution-dependent shift included; and DATE off is stock."""
    stock_cls, comps, extra = components(name, request)
    stock = stock_cls(**comps)
    ours = date_pipeline_class(stock_cls.__name__)(**comps)
    for pipe in (stock, ours):
        pipe.set_progress_bar_config(disable=True)
    kw = dict(prompt="a red circle", num_inference_steps=4, height=16, width=16, output_type="latent", **extra)
    expected = stock(generator=torch.Generator().manual_seed(0), **kw).images
    sampled = stock.scheduler.timesteps.clone()
    before = ours.scheduler.timesteps
    prepared = ours.stock_timesteps(4, 16, 16)
    assert torch.equal(prepared, sampled)
    assert ours.scheduler.timesteps is before  # asked on a copy: the pipeline's scheduler is left as it was
    got = ours(generator=torch.Generator().manual_seed(0), date=None, **kw).images
    assert torch.equal(got, expected)


def test_flux_dev_steps_are_checked_with_the_shift_stock_computes(request):
    """The step check of every command passes FLUX.1-dev's `mu` (it once failed at every step count)."""
    from date_diffusion.schedulers import check_steps_fit

    _, comps, _ = components("flux_dev", request)
    pipe = date_pipeline_class("FluxPipeline")(**comps)
    assert pipe.scheduler.config.use_dynamic_shifting
    for steps in (1, 4, 28):
        check_steps_fit(pipe, steps, "--steps", 16, 16)
    small, large = pipe.stock_timesteps(4, 16, 16), pipe.stock_timesteps(4, 64, 64)
    assert not torch.equal(small, large)  # the shift follows the image's size, as in stock


def cli_generate(model, clip_dir, out, *flags):
    argv = ["generate", "a red circle", "--model", str(model), "--reward", f"clip:{clip_dir}", "--height", "16",
            "--width", "16", "--out", str(out), *flags]  # fmt: skip
    assert main(argv) == 0
    return json.loads((out / "a-red-circle-s0.json").read_text())


@pytest.mark.parametrize("name", realconfig.NAMES)
def test_generate_and_edit_run_through_the_cli_on_real_configs(name, request, tmp_path, clip_dir):
    from PIL import Image

    model = saved(name, request, tmp_path / "model")
    meta = cli_generate(model, clip_dir, tmp_path / "out", "--steps", "4", "--update-steps", "0,2")
    config = realconfig.load(name)
    assert meta["scheduler"] == config["scheduler"]["_class_name"] and meta["scheduler_name"] is None
    updates = meta["trace"]["updates"]
    assert [u["step"] for u in updates] == [0, 2]
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for u in updates)
    pipe = date_pipeline_class(config["pipeline_class"]).from_pretrained(model)
    timesteps = pipe.stock_timesteps(4, 16, 16)
    starts = step_starts(len(timesteps), 4, pipe.scheduler.order)
    assert [u["timestep"] for u in updates] == [int(timesteps[starts[k]]) for k in (0, 2)]

    Image.new("RGB", (16, 16), (200, 40, 40)).save(tmp_path / "in.png")
    argv = ["edit", str(tmp_path / "in.png"), "--source-prompt", "a red circle", "--target-prompt", "a blue square",
            "--model", str(model), "--reward", f"clip:{clip_dir}", "--update-every", "2", "--steps", "4", "--skip",
            "1", "--height", "16", "--width", "16", "--out", str(tmp_path / "edit")]  # fmt: skip
    assert main(argv) == 0
    edited = json.loads((tmp_path / "edit" / "a-blue-square-s0.json").read_text())
    assert edited["editor"] == EDITOR[realconfig.FAMILY[name]]
    assert [u["step"] for u in edited["trace"]["updates"]] == [0, 2]


def test_paper_defaults_run_the_papers_ddim_on_a_folder_shipping_pndm(request, tmp_path, clip_dir):
    """SD 1.5 ships PNDM (51 loop iterations for 50 steps); `--paper-defaults` samples the paper's 50 DDIM steps
    on the model's own betas with 5 updates at steps 0, 10, ..., 40, and the record says so."""
    model = saved("sd15", request, tmp_path / "model")
    meta = cli_generate(model, clip_dir, tmp_path / "out", "--paper-defaults")
    assert (meta["scheduler"], meta["scheduler_name"], meta["sources"]["scheduler"]) == ("DDIMScheduler", "ddim",
                                                                                         "paper")  # fmt: skip
    assert (meta["steps"], meta["guidance_scale"]) == (50, 8.0)
    assert meta["trace"]["update_steps"] == [0, 10, 20, 30, 40]
    assert [u["step"] for u in meta["trace"]["updates"]] == [0, 10, 20, 30, 40]
    pndm = realconfig.load("sd15")["scheduler"]
    ddim = diffusers.DDIMScheduler.from_config(pndm)
    ddim.set_timesteps(50)
    assert [u["timestep"] for u in meta["trace"]["updates"]] == [int(ddim.timesteps[k]) for k in range(0, 50, 10)]
    assert np.allclose(ddim.betas.numpy(), diffusers.PNDMScheduler.from_config(pndm).betas.numpy())


def test_paper_defaults_keep_a_folder_that_ships_ddim(request, tmp_path, clip_dir):
    model = saved("sd21", request, tmp_path / "model")
    meta = cli_generate(model, clip_dir, tmp_path / "out", "--paper-defaults", "--steps", "4", "--update-every", "2")
    assert (meta["scheduler"], meta["scheduler_name"], meta["sources"]["scheduler"]) == ("DDIMScheduler", None,
                                                                                         "paper")  # fmt: skip


def test_plain_generate_keeps_the_folders_scheduler_and_counts_steps(request, tmp_path, clip_dir):
    """Without --paper-defaults the folder's PNDM runs, and DATE's every-10th step of 50 is still 5 updates."""
    model = saved("sd15", request, tmp_path / "model")
    meta = cli_generate(model, clip_dir, tmp_path / "out")
    assert (meta["scheduler"], meta["sources"]["scheduler"]) == ("PNDMScheduler", "model")
    assert [u["step"] for u in meta["trace"]["updates"]] == [0, 10, 20, 30, 40]


def test_step_starts_counts_steps_as_diffusers_progress_bar():
    assert step_starts(10) == list(range(10))  # one iteration a step (DDIM, Euler, DPM-Solver, flow matching)
    assert step_starts(11, 10, 1) == [0, *range(2, 11)]  # PNDM: its first step takes two iterations
    assert step_starts(19, 10, 2) == list(range(0, 19, 2))  # Heun, KDPM2: two iterations a step, one for the last
    assert step_starts(3, 10, 1) == [0, 1, 2]  # a schedule cut short (SDXL's denoising_end, editing's skip)


@pytest.mark.parametrize(
    "scheduler",
    [
        "PNDMScheduler",
        "HeunDiscreteScheduler",
        "KDPM2DiscreteScheduler",
        "DDIMScheduler",
        "DPMSolverSinglestepScheduler",
    ],  # fmt: skip
)
def test_update_steps_are_sampling_steps_under_every_scheduler(scheduler, components, reward):
    """`update_steps=[0, 2]` of 4 steps updates at the first iteration of steps 0 and 2: the scheduler's own
    iterations per step (PNDM's warm-up, Heun's two evaluations) never shift or add an update."""
    comps = {**components, "scheduler": getattr(diffusers, scheduler).from_config(realconfig.load("sd15")["scheduler"])}
    pipe = date_pipeline_class("StableDiffusionPipeline")(**comps)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a red circle", num_inference_steps=4, height=16, width=16, output_type="latent", reward=reward,
               date=DATEConfig(rho=0.5, update_steps=[0, 2]), generator=torch.Generator().manual_seed(0))  # fmt: skip
    timesteps = pipe.scheduler.timesteps
    starts = scheduler_step_starts(pipe.scheduler, len(timesteps))
    assert len(starts) == 4
    updates = out.traces[0]["updates"]
    assert [u["step"] for u in updates] == [0, 2]
    assert [u["timestep"] for u in updates] == [int(timesteps[starts[0]]), int(timesteps[starts[2]])]
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for u in updates)
