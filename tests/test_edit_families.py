"""Editing with DATE for every family through one interface (`pipe.edit`, `date-diffusion edit`): edit-friendly
DDPM inversion (SD, SDXL, PixArt) and FlowEdit (SD3, FLUX, Chroma) on tiny random components."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from test_chroma import chroma_components  # noqa: F401
from test_flux import flux_components  # noqa: F401  (fixtures)
from test_flux2 import FLUX2_EXTRA, flux2_components  # noqa: F401
from test_flux2_klein import KLEIN_EXTRA, flux2_klein_components  # noqa: F401
from test_ltx import ltx_components  # noqa: F401
from test_pixart import pixart_components  # noqa: F401
from test_qwen_image import qwen_image_components  # noqa: F401
from test_sana import sana_components  # noqa: F401
from test_sd3 import sd3_components  # noqa: F401
from test_sdxl import sdxl_components  # noqa: F401
from test_template import FAMILIES as TEMPLATE_FAMILIES
from test_wan import wan_components  # noqa: F401
from test_z_image import z_image_components  # noqa: F401

from date_diffusion import DATEConfig
from date_diffusion.editing import EDIT_DEFAULTS
from date_diffusion.families import FAMILIES
from date_diffusion.pipelines import date_pipeline_class
from date_diffusion.pipelines.edit import edit_defaults, image_latents

# None: the family has no editor (Qwen-Image: the editor's per-branch guidance is `guidance_scale`, which Qwen-Image
# does not take; it guides with `true_cfg_scale`; SANA: FlowEdit integrates with Euler steps, SANA ships a
# multistep DPM-Solver; Wan, LTX-Video: text-to-video)
EDITOR = {"sd": "ddpm", "sdxl": "ddpm", "pixart": "ddpm", "pixart-sigma": "ddpm", "sd3": "flowedit", "flux": "flowedit",
          "flux2": "flowedit", "flux2-klein": "flowedit", "qwen-image": None, "z-image": "flowedit", "sana": None,
          "chroma": "flowedit", "wan": None, "ltx": None}  # fmt: skip
EXTRA = {
    "sd3": {"max_sequence_length": 8},
    "flux": {"max_sequence_length": 8},
    "flux2": FLUX2_EXTRA,
    "flux2-klein": KLEIN_EXTRA,
    "chroma": {"max_sequence_length": 8},
    "pixart": {"clean_caption": False, "max_sequence_length": 8},
    "pixart-sigma": {"clean_caption": False, "max_sequence_length": 8},
    "z-image": {"max_sequence_length": 16},
}
EDITING = [f for f, e in EDITOR.items() if e is not None]
INVERSION = [f for f, e in EDITOR.items() if e == "ddpm"]
FLOW = [f for f, e in EDITOR.items() if e == "flowedit"]
EDITING = [f for f, e in EDITOR.items() if e is not None]
NO_EDITOR = [f for f, e in EDITOR.items() if e is None]


def build(family, request):
    stock_cls, fixture, _ = TEMPLATE_FAMILIES[family]
    comps = request.getfixturevalue(fixture)
    if family == "sdxl":
        comps = {**comps, "add_watermarker": False}
    pipe = date_pipeline_class(stock_cls.__name__)(**comps)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def source_image(side=16, seed=3):
    """A smooth test image, [1, 3, side, side] in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)


def edit(pipe, family, src="a red circle", tar="a red circle", seed=0, **kw):
    kw = {"num_inference_steps": 8, "skip": 2, "output_type": "latent", **EXTRA.get(family, {}), **kw}
    if src == tar and "cfg_tar" not in kw:
        kw["cfg_tar"] = kw.get("cfg_src", EDIT_DEFAULTS[family].cfg_src)
    return pipe.edit(source_image(), src, tar, generator=torch.Generator().manual_seed(seed), **kw)


def input_latents(pipe, family):
    """The source image's latents as `output_type="latent"` returns them (the family's `latent_output`)."""
    pixels = pipe.image_processor.preprocess(source_image())
    request = pipe._date_bind(height=16, width=16)
    with torch.no_grad():
        return pipe.date_adapter.latent_output(request, image_latents(pipe, request, pixels, torch.float32))


def test_every_family_has_an_editor_and_its_defaults():
    assert {f.name for f in FAMILIES} == set(EDITOR)
    for family in FAMILIES:
        if EDITOR[family.name] is None:
            assert family.edit is None and family.name not in EDIT_DEFAULTS
            with pytest.raises(ValueError, match=re.escape(f"{family.title} has no editor")):
                edit_defaults(family.date_pipeline())
            continue
        defaults = edit_defaults(family.date_pipeline())
        assert defaults is EDIT_DEFAULTS[family.name] and defaults.editor == EDITOR[family.name]
    assert (EDIT_DEFAULTS["sd3"].steps - EDIT_DEFAULTS["sd3"].skip, EDIT_DEFAULTS["flux"].steps) == (33, 28)


@pytest.mark.parametrize("family", [f for f, e in EDITOR.items() if e is None])
def test_a_family_without_an_editor_refuses_to_edit(family, request, tmp_path, clip_dir, capsys):
    """`pipe.edit` and `date-diffusion edit` refuse, naming why, before any work or folder."""
    from date_diffusion.cli.main import main
    from date_diffusion.families import by_name

    pipe = build(family, request)
    with pytest.raises(ValueError, match=re.escape(f"{by_name(family).title} has no editor")):
        edit(pipe, family, tar="a blue square")
    assert main(cli_argv(family, request, tmp_path, clip_dir, "--steps", "4")) == 2
    err = capsys.readouterr().err
    assert f"{family} has no editor" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family", INVERSION)
def test_inversion_editors_reconstruct_the_input(family, request):
    """Same prompt, same guidance, no DATE: the regenerated latents are the input's latents.

    Tolerance: the regeneration lands on x_{t-1} = mu_t + sigma_t z_t with z_t solved from the same x_{t-1}, so it
    is exact but for float32 rounding, which compounds over the regenerated steps and varies from run to run on
    CPU. Measured by running this test three times (seeds 0..4 each, latents up to 0.12 in size): max |error|
    3.1e-6 to 5.2e-6 (SD), 2.5e-6 to 4.5e-6 (SDXL), 2.1e-6 to 3.1e-6 (PixArt); the same seed differed by up to
    2e-6 between runs. 2e-5 leaves 4x that spread; another target guidance is off by more than 1e-2."""
    pipe = build(family, request)
    x0 = input_latents(pipe, family)
    errors = [float((edit(pipe, family, seed=s).images - x0).abs().max()) for s in range(5)]
    assert max(errors) <= 2e-5, errors
    wrong = edit(pipe, family, cfg_tar=EDIT_DEFAULTS[family].cfg_src + 4).images  # another guidance: not the input
    assert float((wrong - x0).abs().max()) > 1e-2


@pytest.mark.parametrize("family", FLOW)
@pytest.mark.parametrize("n_avg", [1, 2])
def test_flowedit_returns_the_input_exactly_when_source_equals_target(family, n_avg, request):
    pipe = build(family, request)
    x0 = input_latents(pipe, family)
    out = edit(pipe, family, n_avg=n_avg).images
    assert torch.equal(out, x0)


@pytest.mark.parametrize("family", EDITING)
def test_the_edit_changes_the_image_when_the_prompts_differ(family, request):
    pipe = build(family, request)
    same = edit(pipe, family, output_type="np").images
    edited = edit(pipe, family, tar="a blue square", output_type="np").images
    assert edited.shape == same.shape == (1, 16, 16, 3)
    assert np.abs(edited - same).max() > 1e-2


@pytest.mark.parametrize("family", EDITING)
def test_date_moves_the_target_embedding_by_rho_during_an_edit(family, request, reward):
    pipe = build(family, request)
    plain = edit(pipe, family, tar="a blue square", output_type="np")
    dated = edit(pipe, family, tar="a blue square", output_type="np", date=DATEConfig(rho=0.5, update_every=2),
                 reward=reward)  # fmt: skip
    updates = dated.traces[0]["updates"]
    assert [u["step"] for u in updates] == [0, 2, 4]  # 8 steps, 2 skipped: 6 regenerated
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for u in updates)
    assert dated.prompts == ["a blue square"] and plain.traces[0]["updates"] == []
    assert np.abs(dated.images - plain.images).max() > 0


@pytest.mark.parametrize("family", NO_EDITOR)
def test_a_family_without_an_editor_refuses_an_edit(family, request):
    pipe = build(family, request)
    with pytest.raises(ValueError, match="has no editor"):
        edit(pipe, family, cfg_tar=1.0)


def test_flowedit_n_min_samples_the_target_plainly_at_the_end(sd3_components):  # noqa: F811
    from date_diffusion.pipelines.stable_diffusion_3 import StableDiffusion3DATEPipeline

    pipe = StableDiffusion3DATEPipeline(**sd3_components)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(tar="a blue square", num_inference_steps=8, skip=2)
    plain, sdedit_tail = edit(pipe, "sd3", **kw).images, edit(pipe, "sd3", n_min=2, **kw).images
    assert torch.isfinite(sdedit_tail).all() and (sdedit_tail - plain).abs().max() > 1e-3


def test_edit_arguments_are_checked(pipe):
    img = source_image()
    with pytest.raises(ValueError, match="skip"):
        pipe.edit(img, "a", "b", num_inference_steps=10, skip=10)
    with pytest.raises(ValueError, match="skip` or `strength"):
        pipe.edit(img, "a", "b", skip=3, strength=0.5)
    with pytest.raises(ValueError, match="FlowEdit"):
        pipe.edit(img, "a", "b", n_min=2)
    with pytest.raises(TypeError, match="ug_scale"):
        pipe.edit(img, "a", "b", ug_scale=1.0)


def test_strength_counts_regenerated_steps_as_img2img(pipe):
    a = pipe.edit(source_image(), "a red circle", "a blue square", num_inference_steps=10, strength=0.6,
                  generator=torch.Generator().manual_seed(0), output_type="latent").images  # fmt: skip
    b = pipe.edit(source_image(), "a red circle", "a blue square", num_inference_steps=10, skip=4,
                  generator=torch.Generator().manual_seed(0), output_type="latent").images  # fmt: skip
    assert torch.equal(a, b)


def cli_argv(family, request, tmp_path, clip_dir, *extra) -> list[str]:
    """`date-diffusion edit` of a 16 px image with the family's tiny components saved as a model folder."""
    from PIL import Image

    if not (tmp_path / "model").exists():
        stock_cls, fixture, _ = TEMPLATE_FAMILIES[family]
        stock_cls(**request.getfixturevalue(fixture)).save_pretrained(tmp_path / "model")
        arr = (source_image()[0].permute(1, 2, 0).numpy() * 255).astype("uint8")
        Image.fromarray(arr).save(tmp_path / "in.png")
    return ["edit", str(tmp_path / "in.png"), "--source-prompt", "a red circle", "--target-prompt", "a blue square",
            "--model", str(tmp_path / "model"), "--reward", f"clip:{clip_dir}", "--update-every", "2", "--height",
            "16", "--width", "16", "--dtype", "float32", "--device", "cpu", "--out", str(tmp_path / "out"),
            *extra]  # fmt: skip


@pytest.mark.parametrize("family", EDITING)
def test_edit_cli_runs_every_family(family, request, tmp_path, clip_dir):
    from PIL import Image

    from date_diffusion.cli.main import main
    from date_diffusion.outputs import read_png_metadata

    argv = cli_argv(family, request, tmp_path, clip_dir, "--steps", "4", "--skip", "1")
    assert main(argv) == 0
    meta = json.loads((tmp_path / "out" / "a-blue-square-s0.json").read_text())
    assert (meta["family"], meta["editor"], meta["steps"], meta["skip"]) == (family, EDITOR[family], 4, 1)
    assert (meta["cfg_src"], meta["cfg_tar"]) == (EDIT_DEFAULTS[family].cfg_src, EDIT_DEFAULTS[family].cfg_tar)
    assert [u["step"] for u in meta["trace"]["updates"]] == [0, 2]
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for u in meta["trace"]["updates"])
    png = read_png_metadata(tmp_path / "out" / "a-blue-square-s0-date.png")
    assert png["record"]["method"] == "date" and png["record"]["family"] == family
    grid = Image.open(tmp_path / "out" / "a-blue-square-s0-grid.png")
    assert grid.width > 3 * 16  # three labelled panels


def test_edit_cli_refuses_a_scheduler(tmp_path, capsys):
    from PIL import Image

    from date_diffusion.cli.main import main

    Image.new("RGB", (16, 16)).save(tmp_path / "in.png")
    base = ["edit", str(tmp_path / "in.png"), "--source-prompt", "a", "--target-prompt", "b"]
    assert main([*base, "--scheduler", "euler"]) == 2
    assert "leave --scheduler out" in capsys.readouterr().err


def test_sdxl_noise_maps_equal_diffusers_ledits_pp_inversion(sdxl_components, monkeypatch):  # noqa: F811
    """The SDXL inversion's noise maps equal diffusers' `LEditsPPPipelineStableDiffusionXL.invert` (edit-friendly
    DDPM inversion under a DDIM scheduler) where the settings coincide: the same DDIM scheduler (`leading` spacing,
    LEDITS++'s `skip=0` so both schedules are `num_inference_steps` DDIM steps), the same source prompt and guidance,
    the zero negative prompt of `force_zeros_for_empty_prompt`, the image's size as SDXL's time ids, and
    `num_zero_noise_steps=0`.

    Exact equality cannot hold: (1) LEDITS++ draws its per-timestep noise in ascending timestep order, ours in
    descending order, so one generator gives different x_t; the test hands our inversion the noise LEDITS++ drew
    (recorded from its `randn_tensor`), reversed. (2) LEDITS++ builds x_t with `scheduler.add_noise` (`** 0.5`,
    ours `sqrt`) and replaces each x_{t-1} by its reconstruction mu_t + sigma_t z_t before the next step; both agree
    with ours up to float32 rounding, which the division by sigma_t amplifies on the late, low-noise steps (the
    noise maps reach ~28 there). So the noise maps are compared relative to their size, to 2e-5 of their largest
    entry (measured: 4.8e-5 of 27.8, 1.7e-6 relative), the x_T the regeneration starts from to 1e-6 (measured: 0)
    and the schedule exactly."""
    from diffusers import DDIMScheduler, LEditsPPPipelineStableDiffusionXL
    from diffusers.pipelines.ledits_pp import pipeline_leditspp_stable_diffusion_xl as ledits_module
    from PIL import Image

    from date_diffusion.editing.ddpm_inversion import inversion_scheduler, invert
    from date_diffusion.editing.plan import EditArguments, edit_plan
    from date_diffusion.pipelines.common import DATEOptions
    from date_diffusion.pipelines.edit import branch as edit_branch
    from date_diffusion.pipelines.edit import image_latents
    from date_diffusion.pipelines.stable_diffusion_xl import StableDiffusionXLDATEPipeline

    ddim = DDIMScheduler.from_config(sdxl_components["scheduler"].config, set_alpha_to_one=False)
    comps = {**sdxl_components, "scheduler": ddim, "add_watermarker": False}
    ledits, ours = LEditsPPPipelineStableDiffusionXL(**comps), StableDiffusionXLDATEPipeline(**comps)
    for p in (ledits, ours):
        p.set_progress_bar_config(disable=True)
    drawn, draw = [], ledits_module.randn_tensor

    def recording(*args, **kwargs):
        drawn.append(draw(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(ledits_module, "randn_tensor", recording)
    arr = (source_image(32)[0].permute(1, 2, 0).numpy() * 255).astype("uint8")
    image, steps = Image.fromarray(arr), 6
    ledits.invert(image, "a red circle", source_guidance_scale=3.5, num_inversion_steps=steps, skip=0.0,
                  generator=torch.Generator().manual_seed(0), num_zero_noise_steps=0)  # fmt: skip
    plan = edit_plan(edit_defaults(type(ours)), EditArguments(steps, 0, 3.5, 3.5))
    base = ours._date_bind(height=32, width=32, num_inference_steps=steps)
    with torch.no_grad():
        branch = edit_branch(ours, base, "a red circle", 3.5, DATEOptions(), plan.steps - plan.skip)
        x0 = image_latents(ours, branch.request, ours.image_processor.preprocess(image), torch.float32)
        sched = inversion_scheduler(ours.scheduler.config, steps)
        inv = invert(branch.model, sched, x0, branch.cond.cond, branch.cond.uncond, 3.5, noises=drawn[::-1])
    assert torch.equal(sched.timesteps, ledits.inversion_steps)
    assert float((inv.xts[0] - ledits.init_latents).abs().max()) <= 1e-6
    difference = float((torch.stack(inv.zs) - ledits.zs).abs().max())
    size = float(ledits.zs.abs().max())
    assert difference <= 2e-5 * size and size > 0.5 and not inv.residuals, (difference, size)


def test_flowedit_date_direction_matches_finite_differences(flux_components, reward, monkeypatch):  # noqa: F811
    """FLUX: DATE's first update inside FlowEdit moves the target embedding along the gradient of the reward of
    the target branch's clean estimate, written out here independently: z_src = (1 - s) x_src + s n (the edit's
    first noise draw), x0_hat = z_src - s V(z_src, c) (z_tar = z_src at the first step), reward(decode(x0_hat)).
    Central differences of that function along the coordinates DATE moves most are the directional derivative
    along DATE's direction times that direction's coordinates. (Step 0.1 in float32: measured agreement 0.1% to
    1.1% over the six coordinates; with step 0.01 the reward's float32 rounding makes it ~10%.)"""
    from date_diffusion.core.prediction import noise_level
    from date_diffusion.pipelines.reward_path import decode_for_reward
    from date_diffusion.sampling import date_step

    pipe = build("flux", type("R", (), {"getfixturevalue": staticmethod(lambda name: flux_components)})())
    seen, output = {}, date_step.DATEUpdate.output

    def spy(self, state):
        first = state.index in self.step_at and not seen
        if first:
            seen.update(cond=state.cond.clone(), x_src=state.latents.clone(), model=self.model, t=state.timestep,
                        sigma=noise_level(state.scheduler, state.timestep)[1].float())  # fmt: skip
        claimed = output(self, state)
        if first:
            seen["moved"] = state.cond - seen["cond"]
        return claimed

    monkeypatch.setattr(date_step.DATEUpdate, "output", spy)
    rho = 0.5
    edit(pipe, "flux", tar="a blue square", seed=7, date=DATEConfig(rho=rho, update_steps=[0]), reward=reward)
    x_src, sigma, target = seen["x_src"], seen["sigma"], seen["model"].target
    z_src = (1 - sigma) * x_src + sigma * torch.randn(x_src.shape, generator=torch.Generator().manual_seed(7))

    def f(cond):
        with torch.no_grad():
            x0 = z_src - sigma * target.denoise(z_src, seen["t"], cond)
            images = decode_for_reward(pipe._unpack_latents(x0, 16, 16, pipe.vae_scale_factor), pipe.vae)
            return float(reward(images, ["a blue square"]).double().sum())

    c, d = seen["cond"], seen["moved"] / rho
    assert float(d.norm()) == pytest.approx(1.0, abs=1e-5)
    h = 1e-1
    along = (f(c + h * d) - f(c - h * d)) / (2 * h)  # the directional derivative: the gradient's norm
    assert along > 0 and f(c + rho * d) > f(c)
    for i in d.abs().flatten().topk(6).indices.tolist():
        e = torch.zeros_like(c).flatten()
        e[i] = 1.0
        e = e.view_as(c)
        partial = (f(c + h * e) - f(c - h * e)) / (2 * h)
        assert partial == pytest.approx(along * float(d.flatten()[i]), rel=0.05)


@pytest.mark.parametrize("family", FLOW)
def test_edit_cli_passes_flowedit_arguments_and_strength(family, request, tmp_path, clip_dir, monkeypatch):
    from date_diffusion.cli.main import main
    from date_diffusion.pipelines.common import DATEPipelineMixin

    calls, edit_fn = [], DATEPipelineMixin.edit

    def spy(self, *args, **kwargs):
        calls.append(kwargs)
        return edit_fn(self, *args, **kwargs)

    monkeypatch.setattr(DATEPipelineMixin, "edit", spy)
    argv = cli_argv(family, request, tmp_path, clip_dir, "--steps", "4", "--strength", "0.75", "--n-min", "1",
                    "--n-avg", "2")  # fmt: skip
    assert main(argv) == 0
    assert len(calls) == 3  # reconstruction, plain edit, DATE edit: each with FlowEdit's arguments
    assert all((c["n_min"], c["n_avg"], c["skip"], c["num_inference_steps"]) == (1, 2, 1, 4) for c in calls)
    meta = json.loads((tmp_path / "out" / "a-blue-square-s0.json").read_text())
    assert (meta["n_min"], meta["n_avg"], meta["strength"], meta["skip"]) == (1, 2, 0.75, 1)
    assert [u["step"] for u in meta["trace"]["updates"]] == [0, 2]  # 3 regenerated steps (4 x 0.75)
    calls.clear()
    from conftest import overridden

    plain = overridden(argv[:-8], ["--steps", "4", "--skip", "1", "--out", str(tmp_path / "plain")])
    assert main(plain) == 0
    assert all((c["n_min"], c["n_avg"]) == (0, 1) for c in calls)  # FlowEdit's defaults, as pipe.edit's
    plain = json.loads((tmp_path / "plain" / "a-blue-square-s0.json").read_text())
    edited = np.asarray(Image.open(tmp_path / "out" / "a-blue-square-s0-plain.png"), float)
    assert np.abs(edited - np.asarray(Image.open(tmp_path / "plain" / "a-blue-square-s0-plain.png"), float)).max() > 0
    assert (plain["n_min"], plain["n_avg"], plain["strength"]) == (0, 1, None)


@pytest.mark.parametrize(
    "family, extra, message",
    [
        (
            "sd",
            ["--n-min", "1"],
            "--n-min: FlowEdit's (sd3, flux, flux2, flux2-klein, z-image, chroma); sd edits by DDPM inversion: "
            "leave it out",
        ),
        (
            "sdxl",
            ["--n-min", "1", "--n-avg", "2"],
            "FlowEdit's (sd3, flux, flux2, flux2-klein, z-image, chroma); sdxl edits by DDPM",
        ),
        ("sd", ["--strength", "0.5", "--skip", "1"], "--strength and --skip both set how much is regenerated"),
        ("sd", ["--strength", "0"], "--strength must be in (0, 1]"),
        ("sd", ["--steps", "4", "--strength", "0.2"], "--strength 0.2 regenerates no step of 4; give at least 0.25"),
        ("sd3", ["--steps", "4", "--skip", "1", "--n-min", "4"], "--n-min must be in [0, 3]"),
        ("sd", ["--steps", "1000", "--skip", "1"], "--steps 1000 is more than DDIMScheduler can take"),  # once loaded
    ],
)
def test_edit_cli_refuses_before_any_folder_is_made(family, extra, message, request, tmp_path, clip_dir, capsys):
    from date_diffusion.cli.main import main

    argv = cli_argv(family, request, tmp_path, clip_dir, *extra)
    assert main(argv) == 2
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if "date-diffusion edit:" in line]
    assert len(ours) == 1 and message in ours[0] and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_a_failing_edit_leaves_no_folder_of_its_own(request, tmp_path, clip_dir, monkeypatch, capsys):
    """The folder is made once the model has loaded; an edit that then fails removes it again when it made it (and
    leaves a folder that was there, with its files, as it was)."""
    from date_diffusion.cli import edit as edit_cli
    from date_diffusion.cli.main import main

    made = []

    def failing(args, pipe, *rest):
        made.append((tmp_path / "out" / "new").is_dir())  # created after loading, before the edit
        raise RuntimeError("the edit failed")

    monkeypatch.setattr(edit_cli, "edit_three", failing)
    argv = cli_argv("sd", request, tmp_path, clip_dir, "--steps", "4", "--skip", "1")
    argv[argv.index("--out") + 1] = str(tmp_path / "out" / "new")
    assert main(argv) == 1 and made == [True]
    assert "the edit failed" in capsys.readouterr().err and not (tmp_path / "out").exists()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "earlier.png").write_bytes(b"an earlier result")
    argv[argv.index("--out") + 1] = str(tmp_path / "out")
    assert main(argv) == 1 and made == [True, False]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["earlier.png"]
