import json

import numpy as np
import pytest
from diffusers import StableDiffusionPipeline
from PIL import Image

from date_diffusion.cli.main import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    from conftest import make_components

    path = tmp_path_factory.mktemp("tiny-sd")
    StableDiffusionPipeline(**make_components(tokenizer)).save_pretrained(path)
    return path


def generate(model_dir, clip_dir, out, *extra):
    return main(
        [
            "generate",
            "--model",
            str(model_dir),
            "--reward",
            f"clip:{clip_dir}",
            "--steps",
            "6",
            "--update-every",
            "2",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_generate_compare_writes_images_sidecar_and_grid(model_dir, clip_dir, tmp_path, capsys):
    import re

    from date_diffusion.grids import DIFF_THRESHOLD
    from date_diffusion.outputs import read_png_metadata

    assert generate(model_dir, clip_dir, tmp_path, "a red circle", "--compare", "--seed", "3", "--save-embeddings") == 0
    stem = "a-red-circle-s3"
    for suffix in (".png", "-fixed.png", "-compare.png", ".json", "-embeddings.safetensors"):
        assert (tmp_path / f"{stem}{suffix}").exists(), suffix
    meta = json.loads((tmp_path / f"{stem}.json").read_text())
    assert meta["prompt"] == "a red circle" and meta["seed"] == 3 and meta["steps"] == 6
    assert meta["date"]["rho"] == 0.5 and meta["date"]["update_every"] == 2
    assert [u["step"] for u in meta["trace"]["updates"]] == [0, 2, 4]
    fixed, dated = (np.asarray(Image.open(tmp_path / f"{stem}{s}")).astype(int) for s in ("-fixed.png", ".png"))
    panels = read_png_metadata(tmp_path / f"{stem}-compare.png")["record"]["panels"]
    little = np.abs(dated - fixed).mean() < DIFF_THRESHOLD
    assert [p["method"] for p in panels] == ["fixed", "DATE", "|DATE - fixed| x 16"][: 3 if little else 2]
    grid = Image.open(tmp_path / f"{stem}-compare.png")
    assert [p["box"][2] - p["box"][0] for p in panels] == [256] * len(panels)  # 16-px images enlarged 16x
    assert grid.size == (panels[-1]["box"][2], panels[0]["box"][3]) and panels[0]["box"][1] > 0  # headers on top
    out = capsys.readouterr().out
    assert "step   0: x0_hat reward" in out  # the clean-image estimate's reward at an update, named as such
    assert not (tmp_path / ".embeddings-batch.safetensors").exists()
    # every file written is printed, and every printed path exists
    printed = set(re.findall(r"(" + re.escape(str(tmp_path)) + r"\S+)", out))
    assert printed == {str(p) for p in tmp_path.iterdir()}
    # the summary ends the output: both finished images' reward (what the grid's headers say), what DATE changed,
    # then both verdicts (none on a real model)
    changed = (dated != fixed).any(axis=-1)
    final = meta["final_reward"]
    assert [p.get("final_reward") for p in panels[:2]] == [final["fixed"], final["date"]]
    summary = out.rstrip("\n").splitlines()[-3:]
    assert summary[0] == (f"    reward of the finished images (clip:{clip_dir}): fixed {final['fixed']:.4f}, DATE "
                          f"{final['date']:.4f} ({final['date'] - final['fixed']:+.4f} vs fixed)")  # fmt: skip
    assert summary[1].startswith(f"    DATE changed: embedding moved {meta['trace']['final_distance']:.3f}")
    assert summary[1].endswith(f"pixels changed {changed.mean():.2%} ({changed.sum():,} of {changed.size:,})")
    assert summary[2] == "    evaluator: none for this model (the exact evaluator judges the toy world only)"
    assert main(["info", str(tmp_path / f"{stem}-compare.png")]) == 0
    info = capsys.readouterr().out
    assert "  panel 1: fixed\n" in info and "  panel 2: DATE\n" in info


def test_images_do_not_depend_on_batch_size(model_dir, clip_dir, tmp_path):
    prompts = ["a red circle", "a blue dog", "a green square"]
    assert generate(model_dir, clip_dir, tmp_path / "b1", *prompts, "--batch-size", "1") == 0
    assert generate(model_dir, clip_dir, tmp_path / "b3", *prompts, "--batch-size", "3") == 0
    for png in sorted((tmp_path / "b1").glob("*.png")):
        a = np.asarray(Image.open(png)).astype(int)
        b = np.asarray(Image.open(tmp_path / "b3" / png.name)).astype(int)
        assert np.abs(a - b).max() <= 1, png.name


@pytest.mark.parametrize(
    "args, message",
    [
        (["a cat", "--scheduler", "fast"], "unknown --scheduler 'fast'; choose one of: ddim, ddpm"),
        (["  "], "PROMPT is empty"),
        (["a cat", "--update-steps", "0,6"], "--update-steps 6 are outside the run: allowed indices are 0..5"),
        (["a cat", "--rho", "-1"], "--rho must be a finite number >= 0 and <= 100, got '-1'"),
        (["a cat", "--grad-steps", "0"], "--grad-steps must be an integer from 1 to 100, got '0'"),
        (["a cat", "--normalize", "no", "--grad-steps", "x"], "--grad-steps must be an integer from 1 to 100, got 'x'"),
        (["a cat", "--normalize", "off"], "--normalize must be one of true/1/yes/false/0/no, got 'off'"),
        (["a cat", "--update-every", "2", "--update-steps", "1"], "give only one of --update-every and --update-steps"),
        (["a cat", "--reward", "clip"], "--reward 'clip': 'clip' alone names no model"),
    ],
)
def test_bad_input_fails_early_with_the_fix(model_dir, clip_dir, tmp_path, capsys, args, message):
    reward = [] if "--reward" in args else ["--reward", f"clip:{clip_dir}"]  # an option is given once
    argv = [
        "generate",
        "--model",
        str(model_dir),
        *reward,
        "--steps",
        "6",
        "--out",
        str(tmp_path),
        *args,
    ]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_missing_model_and_unwritable_output(clip_dir, tmp_path, capsys):
    assert main(["generate", "a cat", "--model", "nobody/nothing", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "could not load 'nobody/nothing'" in err and "hf download" in err
    for name in ("toy/", "nobody/no/thing", "no body"):  # round nineteen: no hub id, so no download advice
        assert main(["generate", "a cat", "--model", name, "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "no such file or folder here, and no Hugging Face hub id" in err and "hf download" not in err, err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["generate", "a cat", "--out", str(blocker / "sub")]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_approximate_reward_decoder_and_checkpointing_flags(model_dir, clip_dir, tmp_path):
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    ).save_pretrained(tmp_path / "tiny")
    assert (
        generate(
            model_dir,
            clip_dir,
            tmp_path / "out",
            "a red circle",
            "--reward-decoder",
            str(tmp_path / "tiny"),
            "--gradient-checkpointing",
        )
        == 0
    )
    meta = json.loads((tmp_path / "out" / "a-red-circle-s0.json").read_text())
    assert meta["trace"]["reward_decoder"] == "AutoencoderTiny (approximate)" and meta["gradient_checkpointing"]


def test_negative_prompt_reaches_every_image_of_a_batch(model_dir, clip_dir, tmp_path):
    prompts = ["a red circle", "a blue dog"]
    assert generate(model_dir, clip_dir, tmp_path / "plain", *prompts) == 0
    assert generate(model_dir, clip_dir, tmp_path / "neg", *prompts, "--negative-prompt", "a green square") == 0
    for png in sorted((tmp_path / "plain").glob("*.png")):
        a = np.asarray(Image.open(png)).astype(int)
        b = np.asarray(Image.open(tmp_path / "neg" / png.name)).astype(int)
        assert np.abs(a - b).max() > 0, png.name
