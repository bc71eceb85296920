"""Edit-friendly DDPM inversion: reconstruction, equality with plain editing, DATE inside the edit."""

import numpy as np
import pytest
import torch

from date_diffusion import DATEConfig
from date_diffusion.sampling.loop import guided


def image_of(pipe):
    """A decodable test image: the tiny model's own sample, as a [1, 3, 16, 16] tensor in [0, 1]."""
    return torch.from_numpy(
        pipe(
            "a red circle", num_inference_steps=4, output_type="np", generator=[torch.Generator().manual_seed(5)]
        ).images
    ).permute(0, 3, 1, 2)


def test_same_prompt_no_date_reconstructs_the_input_latents(pipe):
    img = image_of(pipe)
    out = pipe.edit(
        img,
        "a red circle",
        "a red circle",
        num_inference_steps=20,
        skip=4,
        cfg_src=3.5,
        cfg_tar=3.5,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    )
    x0 = pipe.vae.decode(pipe.vae.encode(pipe.image_processor.preprocess(img)).latent_dist.mode()).sample
    target = pipe.image_processor.postprocess(x0, output_type="pt")
    # float32 round trip over 16 regenerated steps: the error varies from run to run on CPU (seen 4.5e-5 to
    # 1.0e-4, before and after the template refactor); a wrong noise map or schedule is off by more than 1e-2
    assert (out.images - target).abs().max() <= 2e-4


def plain_edit(pipe, img, src, tar, steps, skip, cfg_src, cfg_tar, seed):
    """Edit-friendly DDPM editing written out independently (the reference algorithm, no DATE)."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps)
    x0 = pipe.vae.encode(pipe.image_processor.preprocess(img)).latent_dist.mode() * pipe.vae.config.scaling_factor
    g = torch.Generator().manual_seed(seed)
    ts = sched.timesteps
    acp = sched.alphas_cumprod
    xs = [acp[t].sqrt() * x0 + (1 - acp[t]).sqrt() * torch.randn(x0.shape, generator=g) for t in ts] + [x0]

    def eps(x, t, prompt, w):
        c, u = pipe.encode_prompt(prompt, "cpu", 1, True)
        out = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([u, c])).sample
        return guided(*out.chunk(2), w)

    zs = []
    for i, t in enumerate(ts):
        prev = t - 1000 // steps
        std = sched._get_variance(t, prev) ** 0.5
        mu = sched.step(eps(xs[i], t, src, cfg_src), t, xs[i], eta=1.0, variance_noise=torch.zeros_like(x0)).prev_sample
        zs.append((xs[i + 1] - mu) / std)
    x = xs[skip]
    for i, t in enumerate(ts[skip:]):
        x = sched.step(eps(x, t, tar, cfg_tar), t, x, eta=1.0, variance_noise=zs[skip + i]).prev_sample
    return pipe.image_processor.postprocess(
        pipe.vae.decode(x / pipe.vae.config.scaling_factor).sample, output_type="pt"
    )


def test_without_date_equals_plain_ddpm_inversion_editing(pipe):
    img = image_of(pipe)
    with torch.no_grad():
        expected = plain_edit(pipe, img, "a red circle", "a blue square", 12, 3, 3.5, 15.0, seed=1)
    out = pipe.edit(
        img,
        "a red circle",
        "a blue square",
        num_inference_steps=12,
        skip=3,
        generator=torch.Generator().manual_seed(1),
        output_type="pt",
    )
    assert (out.images - expected).abs().max() <= 1e-5


def test_date_adapts_the_target_embedding_during_the_edit(pipe, reward):
    img = image_of(pipe)
    kw = dict(num_inference_steps=12, skip=3, generator=torch.Generator().manual_seed(1), output_type="np")
    plain = pipe.edit(img, "a red circle", "a blue square", **kw)
    kw["generator"] = torch.Generator().manual_seed(1)
    dated = pipe.edit(
        img, "a red circle", "a blue square", date=DATEConfig(rho=0.5, update_every=3), reward=reward, **kw
    )
    assert [u["step"] for u in dated.traces[0]["updates"]] == [0, 3, 6]
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for u in dated.traces[0]["updates"])
    assert np.abs(dated.images - plain.images).max() > 0
    with pytest.raises(ValueError, match="skip"):
        pipe.edit(img, "a", "b", num_inference_steps=10, skip=10)


def test_edit_cli_writes_all_outputs(pipe, clip_dir, tmp_path, capsys):
    import json

    from conftest import overridden
    from PIL import Image

    from date_diffusion.cli.main import main

    pipe.save_pretrained(tmp_path / "model")
    arr = (image_of(pipe)[0].permute(1, 2, 0).numpy() * 255).astype("uint8")
    Image.fromarray(arr).save(tmp_path / "in.png")
    argv = [
        "edit",
        str(tmp_path / "in.png"),
        "--source-prompt",
        "a red circle",
        "--target-prompt",
        "a blue square",
        "--model",
        str(tmp_path / "model"),
        "--reward",
        f"clip:{clip_dir}",
        "--steps",
        "8",
        "--skip",
        "2",
        "--update-every",
        "3",
        "--out",
        str(tmp_path / "out"),
    ]
    from date_diffusion.outputs import read_png_metadata

    assert main(argv) == 0
    names = ("input", "reconstruction", "plain", "date", "grid")
    first = {n: (tmp_path / "out" / f"a-blue-square-s0-{n}.png").read_bytes() for n in names}
    meta = json.loads((tmp_path / "out" / "a-blue-square-s0.json").read_text())
    assert [u["step"] for u in meta["trace"]["updates"]] == [0, 3]
    png = read_png_metadata(tmp_path / "out" / "a-blue-square-s0-date.png")
    assert png["record"]["method"] == "date" and png["record"]["trace"] == meta["trace"]
    assert png["parameters"].startswith("a blue square\n")
    assert main(argv) == 0  # a second edit never replaces the first
    assert all((tmp_path / "out" / f"a-blue-square-s0-{n}.png").read_bytes() == first[n] for n in names)
    assert all((tmp_path / "out" / f"a-blue-square-s0-2-{n}.png").exists() for n in names)
    assert main(overridden(argv, ["--skip", "8", "--out", str(tmp_path / "o2")])) == 2
    assert "--skip must be in [0, 7]" in capsys.readouterr().err


def test_sd_keeps_the_inversion_papers_defaults_and_skip_scales_with_steps():
    from date_diffusion.editing import EDIT_DEFAULTS
    from date_diffusion.editing.plan import EditArguments
    from date_diffusion.editing.plan import edit_plan as plan_of

    def edit_plan(defaults, **kw):
        names = {"steps": "num_inference_steps"}
        return plan_of(defaults, EditArguments(**{names.get(k, k): v for k, v in kw.items()}))

    paper = edit_plan(EDIT_DEFAULTS["sd"])
    assert (paper.editor, paper.steps, paper.skip, paper.cfg_src, paper.cfg_tar) == ("ddpm", 100, 36, 3.5, 15.0)
    assert edit_plan(EDIT_DEFAULTS["sd"], steps=50).skip == 18  # the same fraction, as the benchmark's suites
    assert edit_plan(EDIT_DEFAULTS["sd"], steps=50, strength=0.5).skip == 25
