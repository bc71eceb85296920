"""The paper's Table 1 protocol (`paper-coco`) end to end on tiny components, its flags, its table and its cost."""

import json

import numpy as np
import pytest
from diffusers import StableDiffusionPipeline
from PIL import Image

from date_diffusion.bench.presets import (
    PAPER_ANE,
    PAPER_COCO,
    PRESETS,
    cost_notice,
    expected_cost,
    get_preset,
    paper_table,
)
from date_diffusion.cli.main import main
from date_diffusion.evaluation.methods import parse_methods

CAPTIONS = ["a red circle", "a blue dog and a cat", "a photo of the green square", "a cat and a dog"]


def test_paper_coco_expands_to_the_papers_protocol():
    args = PAPER_COCO.bench_args("runs/paper", "coco5k.csv")
    assert args == [
        "--suite", "coco", "--captions", "coco5k.csv",
        "--model", "stable-diffusion-v1-5/stable-diffusion-v1-5", "--scheduler", "ddim", "--steps", "50",
        "--guidance", "8", "--seeds", "1", "--seed-base", "6",
        "--reward", "imagereward", "--eval-clip", "clip:laion/CLIP-ViT-g-14-laion2B-s12B-b42K",
        "--methods", "fixed fixed@70 ebca ug:scale=2,every=10 date:reward=clip-l date:reward=imagereward",
        "--batch-size", "4", "--dtype", "float32", "--out", "runs/paper",
    ]  # fmt: skip
    with_fid = PAPER_COCO.bench_args("o", "c.csv", inception_weights="pt_inception.pth", fid_real="val2014")
    assert with_fid[-6:] == ["--fid-real", "val2014", "--inception-weights", "pt_inception.pth", "--out", "o"]
    assert [m.kind for m in parse_methods(" ".join(PAPER_COCO.methods()))] == [
        "fixed", "fixed", "ebca", "ug", "date", "date"
    ]  # fmt: skip
    assert get_preset("paper-coco") is PAPER_COCO and set(PRESETS) == {"paper-coco", "paper-ane"}
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("coco")


def test_apply_preset_sets_what_the_preset_fixes_and_refuses_other_values():
    from dataclasses import make_dataclass

    from date_diffusion.bench.presets import apply_preset

    defaults = dict(suite=None, model=None, scheduler=None, steps=None, guidance=None, seeds=None, seed_base=None,
                    reward=None, eval_clip=None, methods="fixed date", batch_size=32, dtype="float32")  # fmt: skip
    Options = make_dataclass("Options", ["preset", "captions", "out", *defaults], frozen=True)
    given = Options(preset="paper-coco", captions="c.csv", out="o", **defaults)
    preset, args = apply_preset(given, defaults)
    assert preset is PAPER_COCO and given.steps is None  # a new object; the given one unchanged
    expanded = PAPER_COCO.bench_args("o", "c.csv")
    for flag in ("--suite", "--model", "--scheduler", "--reward", "--eval-clip", "--methods", "--dtype"):
        assert getattr(args, flag[2:].replace("-", "_")) == expanded[expanded.index(flag) + 1]
    assert (args.steps, args.guidance, args.seeds, args.seed_base, args.batch_size) == (50, 8.0, 1, 6, 4)
    clashing = Options(preset="paper-coco", captions="c.csv", out="o", **{**defaults, "steps": 20})
    with pytest.raises(ValueError, match="fixes --steps"):
        apply_preset(clashing, defaults)


def test_paper_ane_is_the_multi_concept_protocol():
    args = PAPER_ANE.bench_args("runs/ane")
    assert args[:2] == ["--suite", "ane"] and "--captions" not in args
    assert args[args.index("--seeds") + 1] == "64" and args[args.index("--reward") + 1] == "clip-l"
    assert [k for k, _ in PAPER_ANE.columns] == ["clip_eval", "min_object_clip"]
    assert [m.kind for m in parse_methods(" ".join(PAPER_ANE.methods()))] == ["fixed", "ae", "ebca", "date", "date+ae"]


def test_expected_cost_counts_steps_gradients_and_gpus():
    one, eight = expected_cost(PAPER_COCO), expected_cost(PAPER_COCO, gpus=8)
    s = one.seconds
    assert one.images == 5000 and abs(s["fixed@70"] / s["fixed"] - 1.4) < 0.03  # scoring is per image, not per step
    assert s["date:reward=clip-l"] > s["fixed"] and s["ebca"] > s["fixed"]
    assert abs(eight.wall_seconds * 8 - one.total_seconds) < 1e-6 and eight.peak_gb == one.peak_gb
    half = expected_cost(PAPER_COCO.with_components(dtype="float16"))
    assert half.peak_gb < 0.6 * one.peak_gb
    assert expected_cost(PAPER_COCO, n_prompts=10).total_seconds == pytest.approx(one.total_seconds / 500)
    text = cost_notice(PAPER_COCO, gpus=8)
    assert "5000 images per method x 6 methods" in text and "on 8 GPU(s)" in text and " GB per GPU" in text


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tokenizer):
    """Random-weight SD folder, two tiny CLIPs (DATE's CLIP guide and the stand-in for ImageReward), a tiny
    OpenCLIP-format checkpoint (the stand-in for ViT-g-14), captions and real images for FID."""
    from conftest import make_clip, make_components
    from test_openclip import save_checkpoint, tiny_state

    root = tmp_path_factory.mktemp("paper")
    StableDiffusionPipeline(**make_components(tokenizer)).save_pretrained(root / "sd")
    for name, seed in (("guide", 0), ("judge", 1)):
        make_clip(tokenizer, seed).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    openclip = save_checkpoint(root / "openclip", tiny_state(len(tokenizer)), "safetensors", tokenizer)
    (root / "captions.csv").write_text("image_id,caption\n" + "".join(f"{i},{c}\n" for i, c in enumerate(CAPTIONS)))
    (root / "real").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "real" / f"{i}.png")
    return root, openclip


def test_paper_coco_runs_end_to_end_on_tiny_components_and_prints_the_papers_table(tiny, tmp_path, capsys):
    root, openclip = tiny
    guide, judge, eval_clip = f"clip:{root / 'guide'}", f"clip:{root / 'judge'}", f"openclip:{openclip}"
    preset = PAPER_COCO.with_components(model=str(root / "sd"), guide=guide, judge=judge, eval_clip=eval_clip,
                                        steps=10)  # fmt: skip
    out, captions = tmp_path / "run", root / "captions.csv"
    explicit = [
        "--suite", "coco", "--captions", str(captions),
        "--model", str(root / "sd"), "--scheduler", "ddim", "--steps", "10",
        "--guidance", "8", "--seeds", "1", "--seed-base", "6",
        "--reward", judge, "--eval-clip", eval_clip,
        "--methods", f"fixed fixed@70 ebca ug:scale=2,every=10 date:reward={guide} date:reward={judge}",
        "--batch-size", "4", "--dtype", "float32", "--fid-real", str(root / "real"), "--out", str(out),
    ]  # fmt: skip
    assert preset.bench_args(out, captions, fid_real=root / "real") == explicit
    assert main(["bench", *explicit]) == 0
    capsys.readouterr()

    results = json.loads((out / "results.json").read_text())
    summary = results["summary"]
    assert set(summary) == set(preset.methods()) and all(e["n"] == len(CAPTIONS) for e in summary.values())
    rec = json.loads((out / "images" / "ebca" / "00001" / "samples" / "00006.json").read_text())
    assert rec["seed"] == 6 and {"clip_eval", "reward"} <= set(rec)
    date_clip = summary[f"date:reward={guide}"]
    assert "clip_eval" in date_clip["metrics"] and "reward" in date_clip["metrics"]
    fixed_png = np.asarray(Image.open(out / "images" / "fixed" / "00000" / "samples" / "00006.png"))
    ebca_png = np.asarray(Image.open(out / "images" / "ebca" / "00000" / "samples" / "00006.png"))
    assert fixed_png.shape == ebca_png.shape and (fixed_png != ebca_png).any()  # EBCA ran, not a second fixed

    table = paper_table(preset, out)
    print(table)
    lines = table.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| method"))
    assert lines[head] == (
        "| method | FID (lower better) paper | FID (lower better) measured | CLIP score paper | CLIP score measured "
        "| ImageReward paper | ImageReward measured |"
    )
    rows = [line.split(" | ") for line in lines[head + 2 : head + 8]]
    assert [r[0].lstrip("| ") for r in rows] == [r.name for r in PAPER_COCO.rows]
    assert rows[0][1:4:2] == ["18.66", "0.3204"] and rows[5][5].rstrip(" |") == "0.4792"
    for r, spec in zip(rows, preset.methods()):  # the measured cells are the run's numbers
        assert r[2] == f"{summary[spec]['fid']['fid_clip']:.4f}\u2020"
        assert r[4].startswith(f"{summary[spec]['metrics']['clip_eval'][0]:.4f} [")
        assert r[6].rstrip(" |").startswith(f"{summary[spec]['metrics']['reward'][0]:.4f} [")
    assert "\u2020 FID on CLIP image features" in table
    note = next(line for line in lines if line.startswith("Not the paper's protocol"))
    assert "steps: 10 (paper: 50)" in note and "model:" in note and "suite" not in note


def test_the_table_prefers_inception_fid_and_marks_what_is_missing():
    summary = {
        "fixed": {"n": 2, "metrics": {"clip_eval": [0.3, 0.29, 0.31], "min_object_clip": [0.2, 0.19, 0.21]},
                  "fid": {"fid_clip": 1.0, "fid_inception": 19.5}},
    }  # fmt: skip
    settings = {"suite": "coco", "model": PAPER_COCO.model, "scheduler": "ddim", "steps": 50, "guidance": 8.0,
                "reward": "imagereward", "eval_clip": PAPER_COCO.eval_clip, "seeds": [6], "limit": None}  # fmt: skip
    table = paper_table(PAPER_COCO, {"summary": summary, "settings": settings})
    fixed = next(line for line in table.splitlines() if line.startswith("| fixed embedding, 50"))
    assert fixed.split(" | ")[1:3] == ["18.66", "19.50"] and "\u2020" not in table
    assert "| EBCA | 25.85 | - |" in table and "Not the paper's protocol" not in table
    ane = paper_table(PAPER_ANE, {"summary": summary, "settings": {**settings, "suite": "ane"}})
    assert "| fixed embedding | - | 0.3000 [0.2900, 0.3100] | - | 0.2000 [0.1900, 0.2100] |" in ane


def test_bench_preset_flag_refuses_what_the_preset_fixes_and_requires_a_suite_without_it(tmp_path, capsys):
    from date_diffusion.cli.main import main

    out = tmp_path / "run"
    assert main(["bench", "--preset", "paper-coco", "--suite", "toy", "--out", str(out)]) == 2
    assert "--preset paper-coco fixes --suite" in capsys.readouterr().err
    assert main(["bench", "--out", str(out)]) == 2
    assert "--suite is required (or --preset" in capsys.readouterr().err
    assert not out.exists()
