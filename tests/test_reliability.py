"""Fault injection: bad inputs are refused before any work with one line and exit code 2, runtime failures exit 1
without a traceback, nothing written is ever lost or half-written, killed runs resume to the same files."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from diffusers import StableDiffusionPipeline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from date_diffusion.cli.main import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    from conftest import make_components

    path = tmp_path_factory.mktemp("tiny-sd-rel")
    StableDiffusionPipeline(**make_components(tokenizer)).save_pretrained(path)
    return path


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def gen_argv(model_dir, clip_dir, out, *extra):
    return ["generate", "a red circle", "--model", str(model_dir), "--reward", f"clip:{clip_dir}", "--steps", "4",
            "--update-every", "2", "--out", str(out), *extra]  # fmt: skip


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seed", "-1"], "--seed must be in [0, 2**63)"),
        (["--seed", str(2**64)], "--seed must be in [0, 2**63)"),
        (["--height", "30"], "--height must be a positive multiple of 8"),
        (["--steps", "1001"], "--steps must be an integer from 1 to 1000, got 1001"),
        (["--steps", "1000"], "--steps 1000 is more than DDIMScheduler can take"),
        (["--width", "0"], "--width must be a positive multiple of 8"),
        (["--guidance", "nan"], "--guidance must be a finite number"),
        (["--guidance", "1e6"], "--guidance must be a finite number >= 0 and <= 100"),
        (["--rho", "inf"], "--rho must be a finite number"),
        (["--rho-relative", "-0.1"], "--rho-relative must be a finite number >= 0"),
        (["--rho", "0.1", "--rho-relative", "0.1"], "give only one of --rho and --rho-relative"),
        (["--prior-weight", "nan"], "--prior-weight must be a finite number"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--images-per-prompt", "0"], "--images-per-prompt must be >= 1"),
        (["--reward", "0.5*clip+"], "--reward '0.5*clip+'"),
        (["--reward", "aug0(toy-clip)"], "needs 1 to 64 views"),
        (["--device", "quantum"], "--device 'quantum' is not a device name"),
        (["--lora", "missing.safetensors:0.5"], "--lora 'missing.safetensors': no such file"),
        (["--prompts-file", "missing.txt"], "--prompts-file 'missing.txt' not found"),
    ],
)
def test_bad_values_are_refused_before_any_work(model_dir, clip_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.png").write_bytes(b"an earlier result")
    before = snapshot(out)
    assert main(gen_argv(model_dir, clip_dir, out, *extra)) == 2
    err = capsys.readouterr().err
    ours = [line for line in err.replace("\r", "\n").splitlines() if "date-diffusion generate:" in line]
    assert message in err and "Traceback" not in err and len(ours) == 1, err
    assert snapshot(out) == before


def test_broken_files_are_named_not_tracebacks(model_dir, clip_dir, tmp_path, capsys):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\x00" * 64)  # a truncated single-file checkpoint
    argv = gen_argv(model_dir, clip_dir, tmp_path / "o")
    argv[argv.index(str(model_dir))] = str(weights)
    assert main(argv) == 2
    assert "could not read" in capsys.readouterr().err
    (tmp_path / "not-an-image.png").write_text("hello")
    argv = ["edit", str(tmp_path / "not-an-image.png"), "--source-prompt", "a", "--target-prompt", "b",
            "--model", str(model_dir), "--out", str(tmp_path / "e")]  # fmt: skip
    assert main(argv) == 2
    assert "is not a readable image" in capsys.readouterr().err
    broken = tmp_path / "broken-model"
    import shutil

    shutil.copytree(model_dir, broken)
    unet = broken / "unet" / "diffusion_pytorch_model.safetensors"
    unet.write_bytes(unet.read_bytes()[:1000])  # a truncated weight file in a folder
    argv = gen_argv(broken, clip_dir, tmp_path / "o2")
    code = main(argv)
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("date-diffusion")]
    assert code in (1, 2) and "Traceback" not in err and len(ours) == 1, err
    assert str(broken) in err or "diffusion_pytorch_model" in err, err


def test_a_full_disk_loses_nothing_already_written(model_dir, clip_dir, tmp_path, capsys, monkeypatch):
    import date_diffusion.outputs as outputs

    real, calls = outputs.atomic_write, []

    def failing(path, data):
        calls.append(path)
        if len(calls) == 3:  # the second image's PNG: the disk is full now
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(outputs, "atomic_write", failing)
    argv = gen_argv(model_dir, clip_dir, tmp_path, "--seed", "1", "--images-per-prompt", "2", "--batch-size", "1")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["a-red-circle-s1.json", "a-red-circle-s1.png"]  # the first image is whole; no partial file
    Image.open(tmp_path / "a-red-circle-s1.png").verify()
    json.loads((tmp_path / "a-red-circle-s1.json").read_text())


def test_two_processes_writing_one_folder_lose_nothing(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "date_diffusion", "generate", "a red circle", "--steps", "6", "--out", str(tmp_path)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["a-red-circle-s0-2.png", "a-red-circle-s0.png"]
    for png in pngs:
        Image.open(tmp_path / png).verify()
        assert json.loads((tmp_path / png.replace(".png", ".json")).read_text())["prompt"] == "a red circle"
    assert not list(tmp_path.glob(".*"))
    # the program exits without interpreter teardown: piped output is still complete, exit codes pass through
    info = subprocess.run([sys.executable, "-m", "date_diffusion", "info", str(tmp_path / pngs[0])], env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert info.returncode == 0 and "a red circle" in info.stdout and info.stdout.endswith("\n")
    bad = subprocess.run([*cmd, "--steps", "0"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "date-diffusion generate: error: --steps must be an integer from 1 to 1000, got 0"
    ]


def test_bench_killed_and_resumed_gives_the_same_images(tmp_path, monkeypatch):
    import date_diffusion.bench.runner as runner

    argv = ["bench", "--suite", "toy", "--limit", "3", "--seeds", "1", "--steps", "4", "--batch-size", "1",
            "--methods", "fixed date"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    real, written = runner._write, []

    def killed(*args, **kwargs):
        if len(written) == 4:
            raise KeyboardInterrupt
        written.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "_write", killed)
    assert main([*argv, "--out", str(tmp_path / "resumed")]) == 130
    monkeypatch.setattr(runner, "_write", real)
    # a damaged image left behind (e.g. by a full disk) is made again, not trusted
    png = next((tmp_path / "resumed" / "images").rglob("*.png"))
    png.write_bytes(b"")
    assert main([*argv, "--out", str(tmp_path / "resumed")]) == 0
    whole = {p.relative_to(tmp_path / "whole"): p.read_bytes() for p in (tmp_path / "whole").rglob("*.png")}
    resumed = {p.relative_to(tmp_path / "resumed"): p.read_bytes() for p in (tmp_path / "resumed").rglob("*.png")}
    assert set(whole) == set(resumed) and len(whole) >= 6
    for key in whole:
        if key.parts[0] == "images":
            a = np.asarray(Image.open(tmp_path / "whole" / key))
            b = np.asarray(Image.open(tmp_path / "resumed" / key))
            assert np.array_equal(a, b), key
    (tmp_path / "resumed" / "run.json").write_text('{"suite": "toy", "se')  # truncated
    assert main([*argv, "--out", str(tmp_path / "resumed")]) == 2


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.one_of(st.integers(-3, 6), st.just(10**9)),
    guidance=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 30)),
    rho=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 50)),
    prior=st.one_of(st.floats(-1, 1e6), st.just(float("nan"))),
    size=st.sampled_from([-8, 0, 7, 8, 16, 24]),
    seed=st.one_of(st.integers(-(2**70), 2**70), st.integers(0, 100)),
    every=st.integers(-2, 7),
)
def test_any_numeric_value_runs_to_a_finite_image_or_is_refused(
    model_dir, clip_dir, tmp_path_factory, steps, guidance, rho, prior, size, seed, every
):
    out = tmp_path_factory.mktemp("prop")
    values = dict(steps=steps, guidance=guidance, rho=rho, prior_weight=prior, height=size, width=size, seed=seed)
    values["update-every"] = every
    argv = ["generate", "a red circle", "--model", str(model_dir), "--reward", f"clip:{clip_dir}", "--out", str(out)]
    argv += [f"--{k.replace('_', '-')}={v!r}" for k, v in values.items()]
    code = main(argv)
    assert code in (0, 2)
    if code == 0:
        record = json.loads(next(out.glob("*.json")).read_text())
        values = [record["trace"]["final_distance"]]
        values += [u[k] for u in record["trace"]["updates"] for k in ("reward_before", "reward_after")]
        assert all(math.isfinite(v) for v in values)
        image = np.asarray(Image.open(next(out.glob("*.png"))))
        assert image.shape == (size, size, 3)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("aug1000000(toy-clip)", "1000000 augmented views"),
        ("aug0(toy-clip)", "1 to 64 views"),
        ("aug8(aug8(aug8(toy-clip)))", "512 augmented views"),
        ("aug2(" * 9 + "toy-clip" + ")" * 9, "nests 9 wrappers"),
        ("1e400*toy-clip", "a finite number"),
        ("nan*toy-clip+1*toy-clip-s1", "a finite number"),
    ],
)
def test_reward_specs_with_unbounded_cost_are_refused_before_any_work(spec, message):
    from date_diffusion.rewards.registry import RewardSpecError, check_spec

    with pytest.raises(RewardSpecError, match=message):
        check_spec(spec)


@pytest.mark.parametrize("scale", ["nan", "inf", "-inf", "1e300"])
def test_a_lora_scale_must_be_finite(tmp_path, capsys, scale):
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"not read: the scale is refused first")
    assert main(["generate", "a red circle", "--lora", f"{lora}:{scale}", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--lora: the scale of LoRA" in err and "finite number" in err and not (tmp_path / "o").exists()


def test_prompts_files_with_a_byte_order_mark(tmp_path):
    from date_diffusion.bench.suites import read_captions
    from date_diffusion.cli.generate import read_prompts_file

    text, table = tmp_path / "p.txt", tmp_path / "p.csv"
    text.write_text("a red circle\na blue square\n", encoding="utf-8-sig")
    table.write_text("prompt,caption\na red circle,a red circle\n", encoding="utf-8-sig")
    assert read_prompts_file(text) == ["a red circle", "a blue square"]
    assert read_prompts_file(table) == ["a red circle"]
    assert read_captions(table) == ["a red circle"]


@pytest.mark.parametrize("flags", [["--seeds", "0"], ["--limit", "0"], ["--limit", "-1"]])
def test_bench_counts_are_never_zero_or_negative(tmp_path, capsys, flags):
    assert main(["bench", "--suite", "toy", "--methods", "fixed", "--out", str(tmp_path / "run"), *flags]) == 2
    assert "must be >= 1" in capsys.readouterr().err and not (tmp_path / "run").exists()


def _call(pipe, **kw):
    import torch

    kw = {"num_inference_steps": 4, "height": 16, "width": 16, "output_type": "np", **kw}
    return pipe("a red circle", generator=torch.Generator().manual_seed(0), **kw)


@pytest.mark.parametrize(
    "kw, error, message",
    [
        (dict(num_inference_steps=0), ValueError, "`num_inference_steps` must be an integer from 1"),
        (dict(guidance_scale=float("nan")), ValueError, "`guidance_scale` must be a finite number"),
        (dict(guidance_scale=float("inf")), ValueError, "`guidance_scale` must be a finite number"),
        (dict(date=7), TypeError, "`date` must be a DATEConfig, a dict of its fields or None"),
        (dict(date={"rho": -1}), ValueError, "rho must be a finite number"),
        (dict(reward="toy-clip", date={"update_every": 2}), TypeError, "build it with"),
    ],
)
def test_the_python_api_refuses_what_cannot_run_naming_the_argument(pipe, kw, error, message):
    with pytest.raises(error, match=message):
        _call(pipe, **kw)


def test_the_python_api_takes_numpy_numbers_and_a_dict_for_date(pipe, reward):
    from date_diffusion import DATEConfig

    plain = _call(pipe, num_inference_steps=4, guidance_scale=3.0, date=DATEConfig(update_every=2), reward=reward)
    numpy = _call(pipe, num_inference_steps=np.int64(4), guidance_scale=np.float32(3.0), date={"update_every": 2},
                  reward=reward)  # fmt: skip
    assert np.array_equal(plain.images, numpy.images) and plain.traces[0]["update_steps"] == [0, 2]


def test_a_reward_must_give_one_score_per_image(pipe, reward):
    from date_diffusion import DATEConfig

    def mean_score(images, prompts):  # a plain function is a reward when it scores each image
        return reward(images, prompts)

    out = _call(pipe, date=DATEConfig(update_every=2), reward=mean_score)
    assert [u["step"] for u in out.traces[0]["updates"]] == [0, 2]
    same = _call(pipe, date=DATEConfig(update_every=2), reward=mean_score, gradient_checkpointing=True)
    assert np.abs(out.images - same.images).max() <= 1e-5  # the memory-saving mode takes a function too
    with pytest.raises(ValueError, match=r"one score per image, a tensor \[1\]; got \(\)"):
        _call(pipe, date=DATEConfig(update_every=2), reward=lambda images, prompts: reward(images, prompts).sum())


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "LA", "P"])
def test_images_of_any_mode_and_bit_depth_are_read_as_they_look(tmp_path, mode):
    from PIL import Image

    from date_diffusion.outputs import open_rgb

    gray = np.linspace(0, 1, 64 * 64).reshape(64, 64)  # a ramp from black to white
    if mode in ("I;16", "I"):
        img = Image.fromarray((gray * 65535).round().astype(np.uint16 if mode == "I;16" else np.int32), mode=mode)
    elif mode == "F":
        img = Image.fromarray(gray.astype(np.float32), mode="F")
    else:
        img = Image.fromarray((gray * 255).round().astype(np.uint8), mode="L").convert(mode)
    path = tmp_path / f"ramp.{'tiff' if mode == 'F' else 'png'}"
    img.save(path)
    rgb = np.asarray(open_rgb(path)).astype(float)
    assert rgb.shape == (64, 64, 3) and np.abs(rgb[..., 0] - gray * 255).max() <= 1.0, mode


def test_an_image_no_update_moved_is_recorded_as_fixed(model_dir, clip_dir, tmp_path):
    import json

    out = tmp_path / "o"
    argv = gen_argv(model_dir, clip_dir, out)
    argv[argv.index("--reward") + 1] = f"0*clip:{clip_dir}"  # a zero reward: zero gradients, every update skipped
    assert main(argv) == 0
    record = json.loads((out / "a-red-circle-s0.json").read_text())
    assert record["method"] == "fixed" and record["trace"]["skipped_steps"] == [0, 2]
    assert record["trace"]["final_distance"] == 0.0
    assert main(gen_argv(model_dir, clip_dir, tmp_path / "moved")) == 0
    assert json.loads((tmp_path / "moved" / "a-red-circle-s0.json").read_text())["method"] == "date"
