"""Fault injection: bad inputs are refused before any work with one line and exit code 2, runtime failures exit 1
without a traceback, nothing written is ever lost or half-written, killed runs resume to the same files."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import overridden
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
    return overridden(["generate", "a red circle", "--model", str(model_dir), "--reward", f"clip:{clip_dir}",
                       "--steps", "4", "--update-every", "2", "--out", str(out)], list(extra))  # fmt: skip


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seed", "-1"], "--seed must be in [0, 2**63)"),
        (["--seed", str(2**64)], "--seed must be in [0, 2**63)"),
        (["--height", "30"], "--height must be a positive multiple of 8"),
        (["--steps", "1001"], "--steps must be an integer from 1 to 1000, got '1001'"),
        (["--steps", "1000"], "--steps 1000 is more than DDIMScheduler can take"),
        (["--width", "0"], "--width must be a positive multiple of 8"),
        (["--guidance", "nan"], "--guidance must be a finite number"),
        (["--guidance", "1e6"], "--guidance must be a finite number >= 0 and <= 100"),
        (["--rho", "inf"], "--rho must be a finite number"),
        (["--rho-relative", "-0.1"], "--rho-relative must be a finite number >= 0"),
        (["--rho", "0.1", "--rho-relative", "0.1"], "give only one of --rho and --rho-relative"),
        (["--prior-weight", "nan"], "--prior-weight must be a finite number"),
        (["--batch-size", "0"], "--batch-size must be an integer from 1 to 1024, got '0'"),
        (["--images-per-prompt", "0"], "--images-per-prompt must be an integer from 1"),
        (["--images-per-prompt", "1000000000"], "--images-per-prompt must be an integer from 1 to 100000"),
        (["--reward-resolution", str(10**30)], "--reward-resolution must be a positive multiple of 8 up to 4096"),
        (["--reward", "0.5*clip+"], "--reward '0.5*clip+'"),
        (["--reward", "aug0(toy-clip)"], "needs 1 to 64 views"),
        (["--device", "quantum"], "--device 'quantum' is not a device this machine samples on"),
        (["--device", "meta"], "--device 'meta' is not a device this machine samples on"),  # no data: fails late
        (["--device", "cpu:1"], "--device 'cpu:1' is not a device"),  # torch would ignore the index
        (["--lora", "missing.safetensors:0.5"], "--lora 'missing.safetensors': no such file"),
        (["--prompts-file", "missing.txt"], "--prompts-file 'missing.txt': no such readable file"),
        (["--prompts-file", "."], "--prompts-file '.' is a folder: give a file"),
        (["--out", "runs\ntoday"], "--out 'runs\\ntoday' holds the control character U+000A at character 5"),
        (["--prompts-file", "/dev/null"], "--prompts-file '/dev/null' is a device, not a regular file"),
        (["--save-embeddings", "--replay-embeddings", __file__], "--save-embeddings and --replay-embeddings"),
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
    bad = subprocess.run(overridden(cmd, ["--steps", "0"]), env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "date-diffusion generate: error: --steps must be an integer from 1 to 1000, got '0'"
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
        ("1e400*toy-clip", "too large for a 64-bit float"),
        ("nan*toy-clip+1*toy-clip-s1", "a finite number"),
        ("toy-clip+0.5*toy-clip", "listed twice in 'toy-clip.0.5.toy-clip': give it once, with the sum of"),
        ("mean(aug2(toy-clip);toy-clip-s1;aug2(toy-clip))", "reward 'aug2.toy-clip.' is listed twice in 'mean"),
        ("2*toy-clip-s1+1*toy-clip-s1", "reward 'toy-clip-s1' is listed twice"),  # the reward named, not its term
        ("mean(toy-clip;toy-clip-s1)+toy-clip", "reward 'toy-clip' is scored twice"),  # through a mean
        ("0*toy-clip+toy-clip-s1", "reward term '0.toy-clip' has weight 0"),  # loaded and run for nothing
        ("toy-ensemble+toy-clip", "reward 'toy-clip' is scored twice"),  # an ensemble is the mean of its members
        ("toy-clip-s1+0e5*toy-clip", "has weight 0"),
        ("toy-clip-s1+1e-320*toy-clip", "has weight 0 .in 32-bit floats."),  # round nine: 0 once a float32
        ("2e6*toy-clip", "got '2e6'"),  # round nine: as typed, not `2000000.0`
        ("0.5*mean(toy-clip-s1;aug2(toy-clip))+aug2(toy-clip)", "reward 'aug2.....' is scored twice"),
    ],
)
def test_reward_specs_with_unbounded_cost_are_refused_before_any_work(spec, message):
    from date_diffusion.rewards.registry import RewardSpecError, check_spec

    with pytest.raises(RewardSpecError, match=message):
        check_spec(spec)


@pytest.mark.parametrize("scale", ["nan", "inf", "-inf", "1e300", "1e3", "0.5e3", "200", "1E5"])
def test_a_lora_scale_must_be_finite(tmp_path, capsys, scale):
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"not read: the scale is refused first")
    assert main(["generate", "a red circle", "--lora", f"{lora}:{scale}", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--lora: the scale of LoRA" in err and "finite number" in err and not (tmp_path / "o").exists()
    assert f"got {scale!r}" in err, err  # as typed (round nine: `1e3` was quoted as `1000.0`)


def test_prompts_files_with_a_byte_order_mark(tmp_path):
    from date_diffusion.bench.suites import read_captions
    from date_diffusion.cli.generate import read_prompts_file

    text, table = tmp_path / "p.txt", tmp_path / "p.csv"
    text.write_text("a red circle\na blue square\n", encoding="utf-8-sig")
    table.write_text("id,prompt\n7,a red circle\n", encoding="utf-8-sig")
    assert read_prompts_file(text) == (["a red circle", "a blue square"], [])
    prompts, notes = read_prompts_file(table)
    assert prompts == ["a red circle"] and read_captions(table) == ["a red circle"]
    assert notes == ["--prompts-file: the prompts are its 'prompt' column; its other columns ('id') are not read "
                     "(seeds and settings come from the options)"]  # fmt: skip
    lines = tmp_path / "p.jsonl"
    lines.write_text('{"prompt": "a red circle", "promt": "x", "tag": "single"}\n', encoding="utf-8")
    assert read_prompts_file(lines) == (["a red circle"], [
        "--prompts-file: the prompts are its 'prompt' key; its other keys ('promt', 'tag') are not read (seeds and "
        "settings come from the options)"])  # fmt: skip


def test_a_csv_with_both_prompt_and_caption_columns_is_refused(tmp_path, capsys):
    table = tmp_path / "p.csv"
    table.write_text("prompt,caption\na red circle,a blue square\n", encoding="utf-8")
    assert main(["generate", "--prompts-file", str(table), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "has both a 'prompt' and a 'caption' column: keep the one that holds the prompts" in err, err


@pytest.mark.parametrize("flags", [["--seeds", "0"], ["--limit", "0"], ["--limit", "-1"]])
def test_bench_counts_are_never_zero_or_negative(tmp_path, capsys, flags):
    assert main(["bench", "--suite", "toy", "--methods", "fixed", "--out", str(tmp_path / "run"), *flags]) == 2
    assert "must be an integer from 1" in capsys.readouterr().err and not (tmp_path / "run").exists()


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


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "F 0..255", "LA", "P"])
def test_images_of_any_mode_and_bit_depth_are_read_as_they_look(tmp_path, mode):
    from PIL import Image

    from date_diffusion.outputs import open_rgb

    gray = np.linspace(0, 1, 64 * 64).reshape(64, 64)  # a ramp from black to white
    if mode in ("I;16", "I"):
        img = Image.fromarray((gray * 65535).round().astype(np.uint16 if mode == "I;16" else np.int32), mode=mode)
    elif mode.startswith("F"):  # a float image of 0..1, or of 8-bit levels (0..255)
        img = Image.fromarray((gray * (255 if "255" in mode else 1)).astype(np.float32), mode="F")
    else:
        img = Image.fromarray((gray * 255).round().astype(np.uint8), mode="L").convert(mode)
    path = tmp_path / f"ramp.{'tiff' if mode.startswith('F') else 'png'}"
    img.save(path)
    rgb = np.asarray(open_rgb(path)).astype(float)
    assert rgb.shape == (64, 64, 3) and np.abs(rgb[..., 0] - gray * 255).max() <= 1.0, mode


def test_a_photos_exif_orientation_is_applied_as_viewers_show_it(tmp_path):
    from PIL import Image

    from date_diffusion.outputs import open_rgb

    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:, :32] = 255  # stored landscape, white on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    Image.fromarray(stored).save(tmp_path / "photo.jpg", exif=exif, quality=100)
    shown = np.asarray(open_rgb(tmp_path / "photo.jpg"))
    assert shown.shape == (64, 32, 3) and shown[:16].mean() > 200 and shown[-16:].mean() < 50


def test_an_image_no_update_moved_is_recorded_as_fixed(model_dir, clip_dir, tmp_path, monkeypatch):
    import json

    from date_diffusion.cli import generate

    real = generate.load_reward
    out = tmp_path / "o"
    argv = gen_argv(model_dir, clip_dir, out)

    def flat(spec, device, named_by):  # the reward times 0: zero gradients, every update skipped
        reward = real(spec, device, named_by)
        return lambda *args: reward(*args) * 0

    with monkeypatch.context() as patch:
        patch.setattr(generate, "load_reward", flat)
        assert main(argv) == 0
    record = json.loads((out / "a-red-circle-s0.json").read_text())
    assert record["method"] == "fixed" and record["trace"]["skipped_steps"] == [0, 2]
    assert record["trace"]["final_distance"] == 0.0
    assert main(gen_argv(model_dir, clip_dir, tmp_path / "moved")) == 0
    assert json.loads((tmp_path / "moved" / "a-red-circle-s0.json").read_text())["method"] == "date"


# ---------------------------------------------------------------- round three: one validation layer


def _bench(out, *extra):
    return overridden(["bench", "--suite", "toy", "--limit", "1", "--seeds", "1", "--steps", "2", "--batch-size",
                       "1", "--methods", "fixed", "--out", str(out)], list(extra))  # fmt: skip


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--methods", "ug:scale=1,every=0"], "every in 'ug:scale=1,every=0' must be an integer from 1"),
        (["--steps", "0"], "--steps must be an integer from 1 to 1000, got '0'"),
        (["--methods", "date:steps=99"], "method 'date:steps=99' with 2 steps: update_steps 99 are outside"),
        (["--seed-base", str(2**64)], "--seed-base must be in [0, 2**63)"),
        (["--seed-base", str(2**63 - 1), "--seeds", "2"], "--seed-base + --seeds - 1"),
        (
            ["--seed-base", str(2**63 - 2), "--methods", "best-of-2"],  # round thirteen: the largest base said
            f"--seed-base {2**63 - 2}: best-of-N's candidates draw seeds up to 100,003 above each image's seed, "
            f"past the largest seed (2**63 - 1); give a --seed-base of at most {2**63 - 1 - 100_003}",
        ),
        (["--methods", "date:lowres=0"], "lowres in 'date:lowres=0' must be a positive multiple of 8"),
        (["--methods", "date:lowres=12"], "lowres in 'date:lowres=12' must be a positive multiple of 8"),
        (["--methods", "date:decoder=missing-decoder"], "'missing-decoder' is not a decoder folder"),
        (["--fid-real", "missing-folder"], "--fid-real 'missing-folder': no such readable folder"),
        (["--inception-weights", __file__], "--inception-weights needs torch-fidelity"),
        (["--threads", "-1"], "--threads must be an integer from 1 to 1024, got '-1'"),
        (["--suite", "edit-toy", "--edit-skip", "2"], "--edit-skip must be in [0, 1]"),
        (["--scheduler", "fast"], "unknown --scheduler 'fast'"),
    ],
)
def test_bench_arguments_are_checked_before_run_json_is_written(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    assert main(_bench(out, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_bench_run_takes_a_corrected_fid_reference(tmp_path, capsys):
    first, second = tmp_path / "real-a", tmp_path / "real-b"
    first.mkdir(), second.mkdir()
    out = tmp_path / "run"
    assert main(_bench(out, "--fid-real", str(first))) == 0
    assert main(_bench(out, "--fid-real", str(second))) == 0  # a setting that decides no image may be corrected
    assert json.loads((out / "run.json").read_text())["fid_real"] == str(second)
    assert main(_bench(out, "--guidance", "3")) == 2  # one that decides images may not
    assert "holds a run with other settings" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(update_every=10, update_steps=[0, 5]), "give only one of update_every \\(10\\) and update_steps"),
        (dict(update_every=10, update_intervals=[(0, 2)]), "give only one of update_every \\(10\\) and update_int"),
        (dict(rho=0.5, rho_relative=0.002), "give only one of rho \\(0.5\\) and rho_relative"),
        (dict(rho=None), "no step size"),
    ],
)
def test_settings_given_together_are_refused_even_at_the_defaults(kwargs, message):
    from date_diffusion import DATEConfig
    from date_diffusion.evaluation.methods import parse_method

    with pytest.raises(ValueError, match=message):
        DATEConfig(**kwargs)
    assert DATEConfig(rho_relative=0.002).rho is None and DATEConfig(update_steps=[0]).update_every is None
    with pytest.raises(ValueError, match="give only one of rho"):
        parse_method("date:rho=0.5,rel=0.002")
    with pytest.raises(ValueError, match="give only one of update_every"):
        parse_method("date:every=10,steps=0;5")


def test_run_json_of_an_earlier_version_with_rho_beside_rho_relative_still_reads():
    from date_diffusion.evaluation.methods import Method

    old = {"method": "date", "date": {"rho": 0.5, "rho_relative": 0.002, "update_every": 10}}
    assert Method.from_record("date:rel=0.002", old).date.rho_relative == 0.002


def test_an_unwritable_save_embeddings_path_is_refused_before_sampling(pipe, reward, tmp_path, monkeypatch):
    from date_diffusion import DATEConfig
    from date_diffusion.pipelines import run as run_module

    monkeypatch.setattr(run_module, "sample", lambda *a, **k: pytest.fail("sampled before the path was checked"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    for path, why in ((blocker / "e.safetensors", ".* is not a writable folder"), (tmp_path, "it is a folder")):
        with pytest.raises(ValueError, match=f"save_embeddings .* cannot be written: {why}"):
            _call(pipe, date=DATEConfig(update_every=2), reward=reward, save_embeddings=path)


def test_the_page_refuses_a_step_count_the_scheduler_cannot_take():
    import shutil

    from date_diffusion.resolver import default_model
    from date_diffusion.ui.session import Form, InputError, Session

    session = Session(default_model(), max_work=10**6)  # the work bound is not what this checks
    try:
        with pytest.raises(InputError, match="steps 1000 is more than") as caught:
            session.compare(Form("a red circle", settings={"num_inference_steps": "1000"}))
        assert caught.value.field == "num_inference_steps"
    finally:
        shutil.rmtree(session.workdir)


# ---------------------------------------------------------------- files read back: one schema per kind


@pytest.mark.parametrize(
    "text, field",
    [("[]", "it holds an array, not an object"), ('{"suite": "toy"}', "field 'seeds' is missing"),
     ('{"suite": "toy", "seeds": [0], "steps": "2", "model": "m", "methods": {}}',
      "field 'steps' must be a whole number")],
)  # fmt: skip
def test_a_run_json_of_another_shape_is_named_with_its_field(tmp_path, capsys, text, field):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(text)
    for argv in (_bench(out), ["report", str(out)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{out / 'run.json'} is not a valid bench run settings file: {field}" in err, err
        assert len(err.strip().splitlines()) == 1 and "restore it as bench wrote it" in err
        assert "delete" not in err  # round twenty-one: never advice that would lose a run's images


def test_an_empty_record_is_not_an_image_made_and_audit_names_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_bench(out, "--limit", "2")) == 0
    record = sorted((out / "images").rglob("samples/*.json"))[0]
    record.write_text("{}")
    assert main(["toyworld", "audit", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"skipped: {record} is not a valid bench image record: field 'index' is missing" in err
    assert main(_bench(out, "--limit", "2")) == 0  # made again
    assert "1 to make" in capsys.readouterr().err
    assert json.loads(record.read_text())["method"] == "fixed"


_UPDATE = {"step": 0, "reward_before": 0.1, "update_norm": 0.2, "skipped": False}


@pytest.mark.parametrize(
    "record, field",
    [([1], "it holds an array"), ({"trace": {"updates": [{"step": "x"}]}}, "field 'step' must be a whole number"),
     ({"panels": [{"final_distance": 1}]}, "field 'method' is missing"), ("{not json", "not JSON"),
     ({"panels": [{"method": "DATE", "final_reward": "0.9"}]}, "field 'final_reward' must be a finite number"),
     ({"panels": [{"method": "DATE", "final_reward_vs": {"method": "fixed"}}]}, "field 'difference' is missing"),
     # round nine: a number JSON has not, anywhere (`info --json` would print it), and settings no run takes
     ({"final_reward": {"date": float("nan")}}, "field 'final_reward.date' must be a finite number"),
     ({"loras": [["x.safetensors", float("inf")]]}, "field 'loras.0.1' must be a finite number"),
     ({"evaluator": {"date": {"detections": [{"cx": float("-inf")}]}}}, "'evaluator.date.detections.0.cx'"),
     ({"steps": 4, "trace": {"updates": [{"step": 99, "reward_before": 0, "update_norm": 1, "skipped": False}]}},
      "its trace updates at step 99, outside the run's 4 steps"),
     ({"steps": 4, "trace": {"update_steps": [0, 0]}}, "its trace's update_steps lists a step twice"),
     ({"date": {"rho_relative": -5, "update_every": 1}}, "rho_relative must be a finite number >= 0"),
     ({"date": {"rho": 1, "update_every": 0}}, "update_every must be an integer from 1"),
     ({"date": {"rho": 1, "update_every": 1, "lr": 2}}, "'lr' is no DATE setting"),
     # round ten: trace values no run makes
     ({"trace": {"updates": [{**_UPDATE, "reward_after": None}]}}, "field 'reward_after' of an update must be a"),
     ({"trace": {"updates": [{**_UPDATE, "update_norm": -5.0}]}}, "its trace holds a negative distance"),
     ({"trace": {"final_distance": -1.0}}, "its trace holds a negative distance"),
     ({"trace": {"updates": [_UPDATE], "skipped_steps": [0]}}, "skipped_steps are not the updates it marks skipped"),
     ({"date": {"rho": 1, "update_every": 1}, "trace": {"updates": [{**_UPDATE, "grad_norms": [0.1] * 5}]}},
      "lists more gradient norms than its 1 gradient step(s)")],
)  # fmt: skip
def test_forged_png_metadata_is_named_not_a_traceback(tmp_path, capsys, record, field):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("date-diffusion", record if isinstance(record, str) else json.dumps(record))
    Image.new("RGB", (8, 8)).save(tmp_path / "forged.png", pnginfo=info)
    assert main(["info", str(tmp_path / "forged.png")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "forged.png") in err and field in err and len(err.strip().splitlines()) == 1, err


@pytest.fixture
def saved_file(pipe, reward, tmp_path):
    from date_diffusion import DATEConfig

    path = tmp_path / "e.safetensors"
    _call(pipe, date=DATEConfig(update_every=2), reward=reward, save_embeddings=path)
    return path


def _rewrite(path, change, reseal: bool = True):
    """An embeddings file edited by `change(meta, tensors)`, its seal written again for the edit (a forger's file,
    which the checks behind the seal must still catch), or left stale (`reseal=False`: an edit by hand)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from date_diffusion.pipelines.embeddings import _seal

    with safe_open(str(path), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    change(meta, tensors)
    if reseal and "sealed" in meta:
        meta["sealed"] = json.dumps(_seal(meta, tensors))
    save_file(tensors, str(path), metadata=meta)


def _edit_date(**changes):
    return lambda meta, t: meta.update(date=json.dumps({**json.loads(meta["date"]), **changes}))


@pytest.mark.parametrize(
    "change, message",
    [(lambda meta, t: t.pop("step_0000/prompt_embeds"), "its 'final' embedding is not its"),  # an update removed
     (lambda meta, t: t.__setitem__("step_0001/prompt_embeds", 3 * t["step_0000/prompt_embeds"]),
      "its 'final' embedding is not its"),  # one added
     # round nine: a replay's record repeats its file's DATE settings, which must be those that made its stages
     (_edit_date(update_every=1), "its 'date' settings update at steps [0, 1] of 2, and it holds the updates of "
                                  "steps [0]"),
     (_edit_date(update_every=None, update_steps=[1]), "update at steps [1] of 2"),
     (_edit_date(rho_relative=-1), "its 'date' settings are no DATE setting (rho_relative must be a finite"),
     (_edit_date(foo=1), "'foo' is no DATE setting")],
)  # fmt: skip
def test_a_replay_file_whose_updates_or_settings_were_edited_is_named(tmp_path, capsys, change, message):
    """An update stage removed from or added to a saved file (its `final` no longer what its last update left), or
    its DATE settings edited: the file is named, never replayed as another image, or under settings it was not made
    with, under its name."""
    assert main(["generate", "a red circle", "--steps", "2", "--save-embeddings", "--out", str(tmp_path / "s")]) == 0
    saved = next((tmp_path / "s").glob("*-embeddings.safetensors"))
    _rewrite(saved, change)
    capsys.readouterr()
    assert main(["generate", "--replay-embeddings", str(saved), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert str(saved) in err and message in err and not (tmp_path / "r").exists(), err


def test_a_replay_record_names_the_file_as_the_source_of_its_settings(tmp_path):
    """A replay's steps, guidance and scheduler come from its file (the user gives none of them), and its trace
    lists the steps whose embeddings it switched to."""
    assert main(["generate", "a red circle", "--steps", "3", "--save-embeddings", "--out", str(tmp_path / "s")]) == 0
    saved = next((tmp_path / "s").glob("*-embeddings.safetensors"))
    assert main(["generate", "--replay-embeddings", str(saved), "--out", str(tmp_path / "r")]) == 0
    made, again = (json.loads(next((tmp_path / d).glob("*.json")).read_text()) for d in ("s", "r"))
    assert again["sources"] == {"num_inference_steps": "replay", "guidance_scale": "replay", "scheduler": "replay"}
    assert again["trace"]["update_steps"] == made["trace"]["update_steps"] == [0]


def test_replay_files_name_the_real_mismatch(pipe, saved_file):
    from date_diffusion.pipelines.embeddings import load_embeddings

    with pytest.raises(ValueError, match=r"saved for the prompt \['a red circle'\], this call has \['a blue dog'\]"):
        pipe("a blue dog", num_inference_steps=4, height=16, width=16, replay_embeddings=saved_file)
    with pytest.raises(ValueError, match=r"update at loop indices \[2\], outside this call's 2 steps"):
        _call(pipe, num_inference_steps=2, replay_embeddings=saved_file)
    assert _call(pipe, replay_embeddings=saved_file).images.std() > 0  # the file itself replays
    _rewrite(saved_file, lambda meta, t: meta.pop("parts"))
    with pytest.raises(ValueError, match="field 'parts' is missing"):
        load_embeddings(saved_file)


def test_replay_files_with_broken_parts_are_named(saved_file):
    from date_diffusion.pipelines.embeddings import load_embeddings

    def nan(meta, tensors):
        tensors["step_0002/prompt_embeds"][0, 0, 0] = float("nan")

    _rewrite(saved_file, nan)
    with pytest.raises(ValueError, match="part 'prompt_embeds' of stage 'step_0002' holds NaN"):
        load_embeddings(saved_file)

    def shape(meta, tensors):
        tensors["final/prompt_embeds"] = tensors["final/prompt_embeds"][:, :3]

    _rewrite(saved_file, shape)
    with pytest.raises(ValueError, match="part 'prompt_embeds' of stage 'final' has shape"):
        load_embeddings(saved_file)


def test_replay_settings_missing_from_a_file_are_named(saved_file, tmp_path, capsys):
    assert main(["generate", "--replay-embeddings", str(saved_file), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "is not a valid embeddings file for --replay-embeddings: field 'prompt' is missing" in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4])
def test_an_image_s_group_of_files_appears_whole_or_not_at_all(model_dir, clip_dir, tmp_path, monkeypatch, fail_at):
    import date_diffusion.outputs as outputs

    real, calls = outputs.atomic_write, []

    def failing(path, data):
        calls.append(path)
        if len(calls) == fail_at:  # fixed image, grid, DATE image, record: a signal arrives while writing one
            raise KeyboardInterrupt
        return real(path, data)

    monkeypatch.setattr(outputs, "atomic_write", failing)
    assert main(gen_argv(model_dir, clip_dir, tmp_path, "--compare")) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing of the group, no hidden leftover
    monkeypatch.setattr(outputs, "atomic_write", real)
    assert main(gen_argv(model_dir, clip_dir, tmp_path, "--compare")) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"a-red-circle-s0.png", "a-red-circle-s0.json", "a-red-circle-s0-fixed.png",
                     "a-red-circle-s0-compare.png"}  # fmt: skip


def test_a_non_finite_reward_or_embedding_stops_the_run_naming_the_step(pipe, reward):
    import torch

    from date_diffusion import DATEConfig
    from date_diffusion.sampling.date_step import NonFiniteError

    def nan_at_second(images, prompts, calls=[]):  # noqa: B006  (counts the calls)
        calls.append(1)
        scores = reward(images, prompts)
        return scores * float("nan") if len(calls) > 2 else scores

    with pytest.raises(NonFiniteError, match="the reward is not finite at update step 2 \\(images \\[0\\]"):
        _call(pipe, date=DATEConfig(update_every=2), reward=nan_at_second)
    embeds = pipe.encode_prompt("a red circle", "cpu", 1, True)[0].clone()
    embeds[0, 1, 2] = float("nan")
    with pytest.raises(NonFiniteError, match="conditional embedding holds NaN"):
        pipe(prompt_embeds=embeds, reward_prompt="a red circle", num_inference_steps=4, height=16, width=16,
             date=DATEConfig(update_every=2), reward=reward, generator=torch.Generator().manual_seed(0))  # fmt: skip


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_the_page_ends_on_a_signal_with_code_0_and_leaves_no_temporary_folder(tmp_path, signal_name):
    import signal
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, "-m", "date_diffusion", "ui", "--port", str(port), "--device", "cpu"]
    # as from a terminal: a shell without job control starts background commands with SIGINT ignored, and a
    # process that inherits that (e.g. under CI) is meant to ignore Ctrl-C
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint
    )
    try:
        assert "serving" in proc.stdout.readline()
        assert [p.name for p in tmp_path.glob("date-diffusion-ui-*")]  # the page's folder while it serves
        if signal_name == "SIGTERM":  # one request first: Gradio's copies of its images go with the page's folder
            from gradio_client import Client

            fields = ["2", *[""] * 14]
            Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
                "a red circle", "", "0", False, False, *fields, api_name="/generate"
            )
            assert list(tmp_path.glob("date-diffusion-ui-*/.gradio/*"))
        proc.send_signal(getattr(signal, signal_name))
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        proc.kill()
    assert not list(tmp_path.glob("date-diffusion-ui-*")) and not (tmp_path / "gradio").exists()


def test_sigterm_while_the_page_is_busy_ends_it_with_code_0_and_no_temporary_folder(tmp_path):
    """A visitor's request is sampling (100 steps, a DATE update at each: the most work the page takes, minutes
    here) when SIGTERM arrives: the server stops within the grace (the visitor's open progress stream is ended at
    once, not waited for), not after the request, with code 0, no traceback, and its folder removed."""
    import signal
    import socket
    import time

    from gradio_client import Client

    from date_diffusion.cli.main import SIGTERM_GRACE

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, "-m", "date_diffusion", "ui", "--port", str(port), "--device", "cpu"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving" in proc.stdout.readline()
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        fields = ["100", "", "toy-clip", "", "", "1", *[""] * 9]  # steps, guidance, reward, rho, rho (rel.), every
        job = client.submit("a red circle", "", "0", False, False, *fields, api_name="/generate")
        deadline = time.monotonic() + 60
        while job.status().code.name != "PROGRESS" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert job.status().code.name == "PROGRESS"
        from date_diffusion.ui.access import MAX_QUEUE

        # the queue holds MAX_QUEUE requests beyond the running one: one visitor's flood cannot hold it for long
        waiting = [client.submit("a red circle", "", str(k), False, False, "2", *[""] * 14, api_name="/generate")
                   for k in range(MAX_QUEUE + 4)]  # fmt: skip
        time.sleep(1)
        refused = [j for j in waiting if j.done() and "full" in str(j.exception()).lower()]
        assert refused and job.status().code.name == "PROGRESS", [j.status() for j in waiting]
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        took = time.monotonic() - start
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert code == 0 and took < SIGTERM_GRACE and "Traceback" not in err, (code, took, err)  # not the watchdog's 143
    assert not list(tmp_path.glob("date-diffusion-ui-*"))


def _stuck(tmp_path, command: str, work: str, first: str = "pass") -> tuple[int, float, str, str]:
    """A command whose run is one library call that never looks at signals (one product of two square
    matrices of 16384, a minute on one thread, stands in for a convolution at 4096 px), inside `work` (a `with` of
    what a command makes first) after `first` (a statement: files written into it), sent SIGTERM once inside it:
    (exit code, seconds to end, stdout, stderr)."""
    import signal
    import time

    stuck = (
        "import sys, torch\n"
        "from pathlib import Path\n"
        "from date_diffusion.cli import common, main as m\n"
        "def stuck(args):\n"
        f"    with {work}:\n"
        f"        {first}\n"
        "        a = torch.ones(16384, 16384)\n"
        "        print('stuck', flush=True)\n"
        "        a @ a\n"
        "m.check_kinds = stuck\n"
        f"sys.exit(m.main({command!r}.split()))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", stuck], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "stuck"
        time.sleep(1.0)  # inside the product by now (it takes tens of seconds), not between two Python steps
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        took = time.monotonic() - start
    finally:
        proc.kill()
    return code, took, proc.stdout.read(), proc.stderr.read()


def test_sigterm_ends_a_command_stuck_in_one_library_call_within_the_grace(tmp_path):
    """SIGTERM while the main thread is inside one library call that never looks at signals: the process ends
    SIGTERM_GRACE seconds later, code 143."""
    from date_diffusion.cli.main import SIGTERM_GRACE

    made = "common.output_dir(Path('made/out')), common.temporary_folder('page-') as t"
    code, took, _, err = _stuck(tmp_path, "info x.png", made, "(t / 'image.png').write_text('x')")
    assert code == 143 and SIGTERM_GRACE - 0.5 < took < SIGTERM_GRACE + 10, (code, took)
    assert "did not return within 5 s of SIGTERM" in err
    assert not (tmp_path / "made").exists()  # the empty folders the command made go, as on a failure
    assert not list(tmp_path.glob("page-*"))  # and its temporary folders, whole


def _cli(args, tmp_path, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **kw.pop("env", {})}
    return subprocess.run([sys.executable, "-m", "date_diffusion", *args], env=env, **kw)


def test_the_environment_changes_no_argument_and_no_exit_code(tmp_path):
    """A C locale without UTF-8 mode (arguments reach Python as surrogate escapes), a closed stdout, and a reader
    that stops reading (`info | head`): the text typed is the text used, and nothing turns into a failure."""
    c_locale = {"LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    done = _cli(["generate", "une étoile rouge", "--steps", "2", "--out", str(tmp_path / "c")], tmp_path,
                env=c_locale, capture_output=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    record = json.loads(next((tmp_path / "c").glob("*.json")).read_text())
    assert record["prompt"] == "une étoile rouge"
    bad = _cli(["generate", os.fsdecode(b"bad \xff byte"), "--out", str(tmp_path / "b")], tmp_path, env=c_locale,
               capture_output=True, text=True, errors="replace")  # fmt: skip
    assert bad.returncode == 2 and not (tmp_path / "b").exists()
    # the command's full name first, as every usage error; the bytes as typed, never Python's '\udcff'
    assert bad.stderr.startswith("date-diffusion generate: error: argument 2 ('bad \\xff byte') is not UTF-8 text")
    for argv in (["--out", str(tmp_path / "sortie é")], ["--prompts-file", __file__.replace("test_", "tést_")]):
        named = _cli(
            ["generate", "a red circle", *argv],
            tmp_path,
            env=c_locale,
            capture_output=True,
            text=True,
            errors="replace",
        )  # fmt: skip  (a name the locale's ASCII file names cannot hold: one usage line)
        assert named.returncode == 2 and "run it with PYTHONUTF8=1" in named.stderr, named.stderr

    closed = _cli(["generate", "a red circle", "--steps", "2", "--out", str(tmp_path / "s")], tmp_path,
                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, pass_fds=(),
                  preexec_fn=lambda: os.close(1))  # fmt: skip
    assert closed.returncode == 0 and "Traceback" not in closed.stderr
    assert (tmp_path / "s" / "a-red-circle-s0.png").exists()

    png = tmp_path / "s" / "a-red-circle-s0.png"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    pipe = subprocess.Popen([sys.executable, "-m", "date_diffusion", "info", str(png)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    pipe.stdout.readline()
    pipe.stdout.close()  # as `head -1` does
    _, err = pipe.communicate()
    assert pipe.wait() == 0 and b"failed" not in err and b"Traceback" not in err


def _toy_copy(tmp_path, name):
    import shutil

    from date_diffusion.toyworld.world import PIPELINE

    return Path(shutil.copytree(PIPELINE, tmp_path / name))


def _drop_vocabulary(path, prefix):
    """A tokenizer.json whose vocabulary lost the tokens starting with `prefix` (its merges still make them)."""
    data = json.loads(path.read_text())
    data["model"]["vocab"] = {k: v for k, v in data["model"]["vocab"].items() if not k.startswith(prefix)}
    path.write_text(json.dumps(data))


def _recommends(settings: str):
    """A damage: the model folder's toyworld.json recommending `settings` (JSON text, as a file spells it)."""
    return lambda m: (m / "toyworld.json").write_text(f'{{"recommended": {settings}}}')


def _edit_json(path, **values):
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda m: (m / "model_index.json").write_text("[]"), "model_index.json is not a diffusers pipeline index"),
        (lambda m: (m / "toyworld.json").write_text("{oops"), "toyworld.json is not readable JSON"),
        (lambda m: (m / "toyworld.json").write_text("[1]"), "toyworld.json must hold a JSON object (with its "
         "'recommended' settings), it holds an array"),
        (lambda m: (m / "toyworld.json").write_text('{"recommended": []}'),
         "toyworld.json: 'recommended' must be an object of settings, it is an array"),
        (_recommends('{"guidance_scale": NaN}'),
         "toyworld.json: recommended.guidance_scale must be a finite number"),
        (lambda m: _edit_json(m / "unet" / "config.json", sample_size=-8),
         "unet/config.json: its sample_size -8 is not a positive whole number"),
        (lambda m: _edit_json(m / "unet" / "config.json", sample_size=0), "its sample_size 0 is not a positive"),
        (lambda m: _edit_json(m / "unet" / "config.json", sample_size=[8, 8]), "sample_size [8, 8] is not a whole"),
        (lambda m: _edit_json(m / "unet" / "config.json", sample_size=None),  # round eighteen: a TypeError
         "unet/config.json: its sample_size null is no number, and StableDiffusionDATEPipeline reads its default"),
        (lambda m: _edit_json(m / "unet" / "config.json", sample_size="8"), 'its sample_size "8" is not a positive'),
        # round eighteen: a damaged weights file was blamed on config.json in the library's words
        (lambda m: os.truncate(m / "unet" / "diffusion_pytorch_model.safetensors", 100_000),
         "unet/diffusion_pytorch_model.safetensors: it is cut short (100,000 bytes: its tensors reach past its end)"),
        (lambda m: (m / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b""),
         "vae/diffusion_pytorch_model.safetensors: it is empty (0 bytes)"),
        (lambda m: (m / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights at all"),
         "unet/diffusion_pytorch_model.safetensors: it is not a safetensors file (its first bytes are no safetensors"),
        (lambda m: (m / "tokenizer" / "tokenizer.json").write_text("{}"),  # round eighteen: "('added_tokens')"
         "tokenizer/tokenizer.json: not a tokenizer file the tokenizers library reads (Model missing"),
        (lambda m: _drop_vocabulary(m / "tokenizer" / "tokenizer.json", "circle"),
         "tokenizer/tokenizer.json: not a tokenizer file the tokenizers library reads (Token `circle</w>` out"),
        (lambda m: _edit_json(m / "scheduler" / "scheduler_config.json", prediction_type="banana"),
         "scheduler/scheduler_config.json: its prediction_type 'banana' is none of epsilon"),
        (lambda m: _edit_json(m / "scheduler" / "scheduler_config.json", timestep_spacing="banana"),
         "scheduler/scheduler_config.json: its timestep_spacing 'banana' is none of leading"),
        (lambda m: _edit_json(m / "scheduler" / "scheduler_config.json", beta_end=1e-5),
         "its beta_start/beta_end 0.00085/1e-05 is no rising noise schedule"),
        (lambda m: _edit_json(m / "scheduler" / "scheduler_config.json", clip_sample="false"),
         "scheduler_config.json: its clip_sample is text, \"false\", where DDIMScheduler takes true or false"),
        (lambda m: _edit_json(m / "unet" / "config.json", norm_num_groups="8"),
         "unet/config.json: its norm_num_groups is text, \"8\", where UNet2DConditionModel takes a number"),
        (lambda m: _edit_json(m / "vae" / "config.json", scaling_factor=True), "its scaling_factor is true or false"),
        (lambda m: _edit_json(m / "model_index.json", vae=["diffusers", "AutoencoderTiny"]),
         "model_index.json: its class for 'vae' is AutoencoderTiny, which StableDiffusionPipeline does not take"),
        (lambda m: _edit_json(m / "model_index.json", text_encoder=["transformers", "CLIPTextModelWithProjection"]),
         "its class for 'text_encoder' is CLIPTextModelWithProjection, which StableDiffusionPipeline does not"),
        (lambda m: _edit_json(m / "model_index.json", scheduler=["diffusers", "FlowMatchEulerDiscreteScheduler"]),
         "(it takes a scheduler of KarrasDiffusionSchedulers)"),
        (lambda m: _edit_json(m / "vae" / "config.json", scaling_factor=-1e308),
         "vae/config.json: its scaling_factor -1e+308 is not a positive finite number"),
        (lambda m: _edit_json(m / "tokenizer" / "tokenizer_config.json", model_max_length=0),
         "tokenizer/tokenizer_config.json: model_max_length 0 is not a positive whole number of tokens"),
        (lambda m: _edit_json(m / "tokenizer" / "tokenizer_config.json", model_max_length=100000.0),
         "model_max_length 100000.0 is not a positive whole number"),
        (_recommends('{"rho_relative": 1e-999}'),
         "toyworld.json is not readable JSON (number '1e-999' is too small for a 64-bit float"),
        (_recommends('{"update_every": "10"}'),
         "toyworld.json: recommended.update_every must be written without quotes"),
        (_recommends('{"guidance_scale": 100.00000000000000001}'),
         "recommended.guidance_scale must be a finite number >= 0 and <= 100, got 100.00000000000000001"),
        (_recommends('{"update_every": 1E1}'),
         "recommended.update_every must be an integer from 1 to 10000, got 1E1"),  # as the file spells it
        (_recommends('{"guidance_scale": "5"}'),
         "toyworld.json: recommended.guidance_scale must be written without quotes"),
        # round eleven: a schedule allocated at its length (gigabytes) before anything else
        (lambda m: _edit_json(m / "scheduler" / "scheduler_config.json", num_train_timesteps=10**9),
         "scheduler/scheduler_config.json: its num_train_timesteps 1000000000 is no whole number of training steps"),
        # round twelve: values the library builds a schedule or a model from, then fails with torch's words
        (lambda m: _edit_json(m / "scheduler" / "scheduler_config.json", num_train_timesteps=1000.0),
         "scheduler/scheduler_config.json: its num_train_timesteps 1000.0 is no whole number of training steps"),
        (lambda m: _edit_json(m / "scheduler" / "scheduler_config.json", beta_end=-1),
         "scheduler/scheduler_config.json: its beta_start/beta_end 0.00085/-1 is no rising noise schedule"),
        (lambda m: _edit_json(m / "scheduler" / "scheduler_config.json", trained_betas=[0.1, 0.2]),
         "scheduler/scheduler_config.json: its trained_betas holds 2 values, and num_train_timesteps is 1,000"),
        (lambda m: _edit_json(m / "vae" / "config.json", scaling_factor=1e30),
         "vae/config.json: its scaling_factor 1e+30 is not a positive finite number up to 100"),
        (lambda m: _edit_json(m / "text_encoder" / "config.json", layer_norm_eps=-1),
         "text_encoder/config.json: its layer_norm_eps is -1, which the library refuses: it takes a number with a "
         "decimal point"),
        # round ten: transformers builds a tokenizer of no words from its config alone
        (lambda m: (m / "tokenizer" / "tokenizer.json").unlink(), "tokenizer: a tokenizer without its vocabulary"),
        # round nine: a value the file gives is named by its key and quoted as the file spells it
        (_recommends('{"scheduler": "nope"}'),
         "toyworld.json: recommended.scheduler 'nope'; choose one of"),
        (_recommends('{"update_steps": [5000]}'),
         "toyworld.json: recommended.update_steps 5000 are outside the run"),
        (_recommends('{"rho": true}'),
         "toyworld.json: recommended.rho must be a finite number >= 0 and <= 100, got true"),
        (_recommends('{"reward": "toy-judge:/nonexistent"}'),
         "toyworld.json: recommended.reward 'toy-judge:/nonexistent': could not load '/nonexistent': no such file"),
        (lambda m: (m / "model_index.json").write_text(
            (m / "model_index.json").read_text().replace('"StableDiffusionPipeline"', '"StableDiffusionXLPipeline"')),
         "names StableDiffusionXLPipeline, which needs text_encoder_2, tokenizer_2, and its index lists none of them: "
         "it holds another pipeline's parts"),
        # round nineteen: a folder holding its index alone was said to hold "another pipeline's parts"
        (lambda m: [(m / "model_index.json").write_text(
            '{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}'),
            __import__("shutil").rmtree(m / "unet")],
         "and the folder holds none of its parts (no folder of unet): copy the whole saved pipeline there"),
        (lambda m: (m / "scheduler" / "scheduler_config.json").write_text(
            (m / "scheduler" / "scheduler_config.json").read_text().replace('"num_train_timesteps": 1000',
                                                                           '"num_train_timesteps": 0')),
         "scheduler/scheduler_config.json: its num_train_timesteps 0 is no whole number of training steps"),
        # round fifteen: a weights file that is no file was blamed on config.json in the library's words
        (lambda m: _replaced(m / "text_encoder" / "model.safetensors", os.mkfifo),
         "text_encoder/model.safetensors: a FIFO, not a regular file"),
        (lambda m: _replaced(m / "text_encoder" / "model.safetensors", os.mkdir), "model.safetensors: a folder"),
        (lambda m: _replaced(m / "vae" / "diffusion_pytorch_model.safetensors", lambda p: p.symlink_to("/nonexistent")),
         "vae/diffusion_pytorch_model.safetensors: a symbolic link to a file that is missing"),
        (lambda m: _replaced(m / "unet" / "config.json", lambda p: p.symlink_to(p)),
         "unet/config.json: not readable (Too many levels of symbolic links)"),
    ],
)  # fmt: skip
def test_every_file_read_is_named_with_what_is_wrong(tmp_path, capsys, damage, message):
    """A damaged model folder is a usage error (2) in one line that names the file and what is wrong with it."""
    model = _toy_copy(tmp_path, "model")
    damage(model)
    argv = ["generate", "a red circle", "--model", str(model), "--steps", "2", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and str(model) in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_a_weights_file_that_does_not_fit_is_one_line_without_the_librarys_notices(tmp_path, capsys):
    """Round fifteen: the UNet's weights as the VAE's gave the right error after two multi-kilobyte notices of
    diffusers ("Some weights ... were not used", "newly initialized"): the libraries' notices while a model loads
    are held, and dropped when the load fails (`quiet.held`, `loading.MODEL_LOGGERS`)."""
    model = _toy_copy(tmp_path, "model")
    weights = "diffusion_pytorch_model.safetensors"
    (model / "vae" / weights).write_bytes((model / "unet" / weights).read_bytes())
    assert main(["generate", "a red circle", "--model", str(model), "--steps", "2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "vae/diffusion_pytorch_model.safetensors: its tensors do not fit config.json" in err
    assert err.count("\n") == 1, err


def _replaced(path, make) -> None:
    """`path` replaced by what `make(path)` makes there (a FIFO, a folder, a link)."""
    path.unlink()
    make(path)


def test_out_through_a_broken_symlink_is_named(tmp_path, capsys):
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    for out, message in (("dangling", "symbolic link to"), ("loop-a", "symbolic link loop")):
        assert main(["generate", "a red circle", "--steps", "2", "--out", str(tmp_path / out)]) == 2
        err = capsys.readouterr().err
        assert message in err and "File exists" not in err, err


def test_replay_of_another_familys_embeddings_is_refused_before_loading(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    assert main(["generate", "a red circle", "--steps", "4", "--update-every", "2", "--save-embeddings",
                 "--out", str(tmp_path / "a")]) == 0  # fmt: skip
    saved = next((tmp_path / "a").glob("*-embeddings.safetensors"))
    from safetensors import safe_open

    from date_diffusion.pipelines.embeddings import _seal

    with safe_open(str(saved), "pt") as f:
        meta = {**f.metadata(), "pipeline": json.dumps("FluxDATEPipeline")}  # as FLUX saves them
    meta["sealed"] = json.dumps(_seal(meta, load_file(str(saved))))
    save_file(load_file(str(saved)), str(tmp_path / "flux.safetensors"), metadata=meta)
    assert main(["generate", "--replay-embeddings", str(tmp_path / "flux.safetensors"), "--out",
                 str(tmp_path / "b")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "flux.safetensors" in err and "FluxDATEPipeline" in err
    assert not (tmp_path / "b").exists()


def _png_with_chunks(path, chunks):
    import struct
    import zlib

    Image.new("RGB", (8, 8)).save(path)
    raw = path.read_bytes()
    end = raw.rindex(b"IEND") - 4

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(raw[:end] + b"".join(chunk(k, d) for k, d in chunks) + raw[end:])
    return path


@pytest.mark.parametrize(
    "chunks, message",
    [
        ([(b"zTXt", b"date-diffusion\x00\x00" + __import__("zlib").compress(b" " * (64 * 2**20), 9))],
         "Pillow refuses its text"),
        ([(b"tEXt", b"date-diffusion\x00" + b"[" * 50000 + b"]" * 50000)], "JSON nested deeper than any record"),
        ([(b"tEXt", f"k{i}".encode() + b"\x00" + b"v" * 50) for i in range(5000)], "carries no settings"),
    ],
)  # fmt: skip
def test_info_on_hostile_pngs_is_one_line_naming_the_file(tmp_path, capsys, chunks, message):
    png = _png_with_chunks(tmp_path / "hostile.png", chunks)
    assert main(["info", str(png)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(png) in err and "Traceback" not in err


@pytest.mark.parametrize("flags, message", [(["--model", "/nonexistent/model"], "no such file or folder"),
                                            (["--reward", "nope("], "unbalanced parentheses")])  # fmt: skip
def test_bench_perf_refuses_a_missing_model_or_a_bad_reward_before_measuring(tmp_path, capsys, flags, message):
    assert main(overridden(["bench-perf", "--model", "toy"], [*flags, "--out", str(tmp_path / "p")])) == 2
    err = capsys.readouterr().err
    assert message in err and "WorkerFailed" not in err and not (tmp_path / "p").exists()


def test_bench_refuses_a_prompts_file_of_blank_lines(tmp_path, capsys):
    prompts = tmp_path / "blank.txt"
    prompts.write_text("\n  \n\u200b\n")
    argv = ["bench", "--suite", "prompts", "--prompts-file", str(prompts), "--out", str(tmp_path / "b")]
    assert main(argv) == 2
    assert "holds no prompts" in capsys.readouterr().err and not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "\u200b\u2060 \u200c"], "PROMPT is empty (no visible character"),
        (["generate", "\u3164 \u2800"], "PROMPT is empty (no visible character"),  # Hangul filler, Braille blank
        (
            ["generate", "a red circle", "a blue square", "a red circle"],
            "PROMPT 3 'a red circle' is the same prompt as PROMPT 1",
        ),
        (  # round twenty-two: quoted as typed, not as read
            ["generate", "a red circle", " a red circle\t"],
            "PROMPT 2 ' a red circle\\t' is the same prompt as PROMPT 1 'a red circle', once the blanks at each",
        ),
        (["generate", "\uffff\ufdd0\ufffc\uffa0"], "PROMPT is empty (no visible character"),  # noncharacters, ...
        # round twenty: a pasted blank beside a name was stripped by --reward and --scheduler, refused by --anchor
        (["generate", "a red circle", "--reward", "toy-clip\u00a0"], "--reward 'toy-clip\\xa0' has U+00A0 NO-BREAK"),
        (["generate", "a red circle", "--scheduler", "\u3000euler"], "has U+3000 IDEOGRAPHIC SPACE at its start"),
        # round twenty-one: the class name records and `info` show, typed back, was refused without a word on it
        (["generate", "a red circle", "--scheduler", "DDIMScheduler"], "(DDIMScheduler is the model's own scheduler: "),
        # round twenty-three: another class than the model's own was said to run without --scheduler
        (["generate", "a red circle", "--scheduler", "UniPCMultistepScheduler"], "(UniPCMultistepScheduler is unipc"),
        # round twenty-two: a name typed with blanks around it was quoted without them
        (["generate", "a red circle", "--scheduler", " DDIM"], "unknown --scheduler ' DDIM' (names are lower case"),
        (["generate", "a red circle", "--reward", " nope"], "--reward ' nope': unknown reward 'nope'"),
        # round nineteen: a value listed twice under another spelling was named as the plain number
        (["generate", "a red circle", "--update-steps", "0,1,01"], "--update-steps lists 01 (the same as 1) twice"),
        (["generate", "a red circle\U000e0069\U000e0067"], "PROMPT holds the tag character U+E0069 at character 13"),
        (["generate", "a red\ufeff circle"], "PROMPT holds the byte-order mark U+FEFF at character 6"),
        (
            ["bench", "--suite", "toy", "--methods", " ".join(f"date:rho={k + 1}" for k in range(65))],
            "65 methods listed: one run compares at most 64",
        ),
        (["bench-perf", "--first-command", "--steps", "3", "--batch-size", "2"], "not read --batch-size, --steps"),
        (["bench-perf", "--first-command", "--steps", "10", "--model", "toy"], "not read --model, --steps"),  # defaults
        (["bench-perf", "--variants", "fixed", "--reward", "toy-clip"], "--reward is read only by the date, date-"),
        (["bench-perf", "--variants", "fixed", "--update-every", "10"], "--update-every is read only by the date, "),
        (
            ["bench-perf", "--tiny-decoder", "/nonexistent"],
            "--tiny-decoder is read only by the date-approx, date-approx-checkpointing variants",
        ),
        (["bench-perf", "--variants", "date-approx", "--tiny-decoder", "/tmp"], "'/tmp' is not a decoder folder"),
        (["bench", "--suite", "toy", "--prompts-file", __file__], "suite 'toy' does not read --prompts-file"),
        (["toyworld", "train-judge", "--worker", "0/2"], "--worker is read only by --stage data"),
        (["generate", "a red circle", "--reward", "clip:nosuch-org/nosuch-clip"], "--reward 'clip:nosuch-org/nosuch"),
        (["bench", "--suite", "toy", "--steps", "2", "--methods", "fixed fixed@2"], "make the same images in this run"),
        (["bench", "--suite", "ane", "--cfg-src", "7", "--edit-skip", "1"], "does not read --edit-skip, --cfg-src"),
        (["bench", "--suite", "coco", "--captions", __file__, "--prompts-file", __file__], "give one"),
        (["bench", "--suite", "toy", "--methods", "date:rho=1,rho=2"], "rho is given twice"),
        (["generate", "a red circle", "--prior-weight", "1e-320"], "--prior-weight 1e-320 is 0 in 32-bit floats"),
        (["generate", "a red circle", "--reward-resolution", "1024"], "--reward-resolution 1024 is not below the "),
        (["generate", "a red circle", "--reward-resolution", "64"], "decode at the image's size or larger"),
        (["generate", "a red circle", "--direction", "random", "--prior-weight", "5"], "which direction 'random' "),
        (
            ["bench", "--suite", "toy", "--limit", "1", "--seeds", "1", "--steps", "2", "--methods", "date:lowres=64"],
            "'date:lowres=64' decodes for the reward at 64 px, and the model's images are 64x64",
        ),
        (["bench", "--suite", "toy", "--methods", "ug:scale=1,scale=2"], "scale is given twice"),
    ],
)
def test_nothing_is_accepted_silently(tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_an_earlier_audit_or_measurement_is_not_replaced_without_overwrite(tmp_path, capsys):
    """`toyworld audit --out FILE` and `bench-perf --out DIR` over an earlier result: refused before any work,
    naming the file and --overwrite, the file untouched."""
    (tmp_path / "audit.json").write_text("precious")
    (tmp_path / "run").mkdir()
    (tmp_path / "perf").mkdir()
    (tmp_path / "perf" / "perf-toy.json").write_text("precious")
    audit = ["toyworld", "audit", str(tmp_path / "run"), "--out", str(tmp_path / "audit.json")]
    perf = ["bench-perf", "--out", str(tmp_path / "perf"), "--variants", "fixed"]
    for argv, taken in ((audit, "audit.json"), (perf, "perf-toy.json")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert taken in err and "--overwrite" in err, err
    assert (tmp_path / "audit.json").read_text() == "precious" == (tmp_path / "perf" / "perf-toy.json").read_text()


def test_a_prompt_listed_twice_and_a_limit_past_the_suite_are_said(tmp_path, capsys):
    """bench --suite prompts with a prompt listed twice (each is its own item, as the benchmark counts it) and a
    --limit above the file's prompts: both said in a note, never run without a word."""
    (tmp_path / "p.txt").write_text("a red circle\na blue square\na red circle\n")
    argv = ["bench", "--suite", "prompts", "--prompts-file", str(tmp_path / "p.txt"), "--methods", "fixed",
            "--steps", "1", "--seeds", "1", "--limit", "5", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "lists a prompt more than once (prompt 3 is 1, counting from 1)" in err
    assert "--limit 5 is more than the suite's 3 prompts" in err


def test_finalize_names_a_folder_that_is_no_training_run(tmp_path, capsys):
    assert main(["toyworld", "finalize", "--out", str(tmp_path)]) == 2
    assert "is not a `toyworld train` folder (no work/config.json)" in capsys.readouterr().err


def test_a_run_without_a_held_out_clip_finishes_and_reports(tmp_path):
    """`--eval-clip ""` (no held-out CLIP metric) is recorded as none: the run, its resume and `report` work, with
    neither the metric nor FID-CLIP (whose features are that CLIP's)."""
    argv = ["bench", "--suite", "toy", "--limit", "2", "--seeds", "1", "--steps", "2", "--methods", "fixed",
            "--eval-clip", "", "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(argv) == 0 and main(argv) == 0 and main(["report", str(tmp_path / "r")]) == 0
    summary = json.loads((tmp_path / "r" / "results.json").read_text())["summary"]["fixed"]
    assert "clip_eval" not in summary["metrics"] and "fid" not in summary


def test_a_json_prompts_file_is_refused_not_read_as_one_line(tmp_path, capsys):
    """A `.json` file (a JSON array of prompts) is no form a prompts file takes: named with the forms that are,
    never read as text whose one line, brackets and quotes included, is one prompt."""
    (tmp_path / "p.json").write_text('["a red circle", "a blue square"]\n')
    assert main(["generate", "--prompts-file", str(tmp_path / "p.json"), "--out", str(tmp_path / "o")]) == 2
    assert "is a .json file, which is not read" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.parametrize(("name", "text", "said"), [
    ("p.tsv", "prompt\ta\na red circle\tx\n", "is a .tsv file, which is not read"),
    ("p.yaml", "- a red circle\n", "is a .yaml file, which is not read"),
    ("p.txt", "prompt\na red circle\n", "line 1 is 'prompt', a CSV header"),
    ("p.txt", "prompt,seed\na red circle,1\n", "line 1 is 'prompt,seed', a CSV header"),  # round seventeen
    ("p.txt", "prompt\tcategory\na red circle\tsingle\n", "line 1 is 'prompt\\tcategory', a CSV header"),
    ("p.txt", '"prompt"\n"a red circle"\n', "line 1 is '\"prompt\"', a CSV header"),
    ("p.txt", "Caption\na red circle\n", "line 1 is 'Caption', a CSV header"),
])  # fmt: skip
def test_a_prompts_file_of_another_form_is_named_not_read_as_text_lines(tmp_path, capsys, name, text, said):
    """Round fifteen: a .tsv made prompts of its rows, tabs and all, and a .txt's CSV header became the prompt
    "prompt"; each is refused with the forms read. A .ndjson file is JSON lines, as .jsonl is."""
    (tmp_path / name).write_text(text)
    assert main(["generate", "--prompts-file", str(tmp_path / name), "--out", str(tmp_path / "o")]) == 2
    assert said in capsys.readouterr().err and not (tmp_path / "o").exists()
    from date_diffusion.bench.suites import read_captions

    (tmp_path / "p.ndjson").write_text('{"prompt": "a red circle"}\n')
    assert read_captions(tmp_path / "p.ndjson") == ["a red circle"]


@pytest.mark.parametrize(
    "csv_text, message",
    [("prompt\na red circle\n\u200b\n", "line 3: 'prompt' is empty"),
     ("prompt,prompt\na,b\n", "has 2 'prompt' columns")],
)  # fmt: skip
def test_a_csv_prompts_file_never_drops_or_picks_silently(tmp_path, capsys, csv_text, message):
    path = tmp_path / "p.csv"
    path.write_text(csv_text)
    assert main(["generate", "--prompts-file", str(path), "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_a_model_that_makes_nan_is_named_and_nothing_is_written(tmp_path, capsys):
    """A UNet config whose every output is NaN (`norm_eps` -1): the fixed path stops before writing a black image
    (`NonFiniteOutputWarning`, an error on the command line), and DATE names the model's estimate, not the reward."""
    model = _toy_copy(tmp_path, "nan-model")
    _edit_json(model / "unet" / "config.json", norm_eps=-1)
    argv = ["generate", "a red circle", "--steps", "2", "--model", str(model), "--out", str(tmp_path / "o")]
    assert main([*argv, "--rho", "0"]) == 1
    err = capsys.readouterr().err
    assert "the decoded images [0] of the batch hold values that are not finite" in err and "check the model" in err
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "the decoded clean-image estimate is not finite at update step 0" in err and "check the model" in err
    assert not (tmp_path / "o").exists()


def test_the_pipeline_warns_of_a_finished_image_that_is_not_finite(tmp_path):
    """The Python API returns what stock returns (black pixels) with a `NonFiniteOutputWarning` naming the images."""
    import torch

    from date_diffusion.core.finite import NonFiniteOutputWarning
    from date_diffusion.pipelines import load_date_pipeline

    model = _toy_copy(tmp_path, "nan-model")
    _edit_json(model / "unet" / "config.json", norm_eps=-1)
    pipe = load_date_pipeline(str(model))
    with pytest.warns(NonFiniteOutputWarning, match=r"decoded images \[0, 1\]"):
        pipe(["a red circle"] * 2, num_inference_steps=2, generator=torch.Generator().manual_seed(0))


def test_generate_never_calls_an_image_date_did_not_move_date(tmp_path, capsys):
    """`--rho 0 --compare`: the result lines name the DATE image as its grid and record do (inactive, `fixed`)."""
    argv = ["generate", "a red circle", "--steps", "2", "--rho", "0", "--compare", "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "DATE (inactive) changed" in out and "evaluator (date, inactive)" in out, out
    assert "evaluator (date):" not in out and "DATE changed" not in out


def test_edit_never_calls_an_edit_date_did_not_move_date(tmp_path, capsys):
    """`edit --rho 0`: a note before any work, and the DATE edit (the plain edit) recorded as method `fixed`,
    shown as `DATE (inactive)` on the console and in the grid's header."""
    from PIL import Image

    from date_diffusion.outputs import read_png_metadata

    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "in.png")
    argv = ["edit", str(tmp_path / "in.png"), "--source-prompt", "a red circle", "--target-prompt", "a blue circle",
            "--steps", "4", "--rho", "0", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 0
    shown = capsys.readouterr()
    assert "note: DATE cannot move the embedding" in shown.err and "DATE (inactive) " in shown.out
    assert "evaluator (date, inactive)" in shown.out and "evaluator (date):" not in shown.out
    stem = tmp_path / "o" / "a-blue-circle-s0"
    assert read_png_metadata(f"{stem}-date.png")["record"]["method"] == "fixed"
    grid = read_png_metadata(f"{stem}-grid.png")["record"]
    assert "DATE (inactive) edit" in [p["method"] for p in grid["panels"]]


def test_a_negative_prompt_no_branch_runs_is_said(tmp_path, capsys):
    """At guidance 1 no negative branch runs: the negative prompt given is named in a note and in the record's
    `without_effect`, never taken without a word."""
    argv = ["generate", "a red circle", "--steps", "2", "--rho", "0", "--guidance", "1", "--out", str(tmp_path / "o")]
    assert main([*argv, "--negative-prompt", "blurry"]) == 0
    assert "note: --negative-prompt has no effect here: no negative branch runs" in capsys.readouterr().err
    record = json.loads(next((tmp_path / "o").glob("*.json")).read_text())
    assert record["negative_prompt"] is None and record["without_effect"]["negative_prompt"]["value"] == "blurry"


def test_a_huge_prompt_is_cut_to_what_encoders_read_before_any_work(tmp_path, capsys):
    from date_diffusion.core.text import MAX_PROMPT_CHARS

    huge = "a red circle to the left of a blue square " * 130_000  # 5.5 MB on one line
    (tmp_path / "p.txt").write_text(huge + "\n")
    argv = ["generate", "--prompts-file", str(tmp_path / "p.txt"), "--steps", "2", "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    shown = capsys.readouterr()
    assert "only its first 20,000 characters are used" in shown.err
    assert max(len(line) for line in (shown.out + shown.err).splitlines()) < 2000  # every line stays readable
    record = json.loads(next((tmp_path / "o").glob("*.json")).read_text())
    assert record["prompt"] == huge.strip()[:MAX_PROMPT_CHARS]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "a red circle", "--steps", "2.0"], "argument --steps: invalid int value: '2.0'"),
        (["generate", "a", "--steps", "2", "b", "--stepz", "3"], "unrecognized arguments"),
        (["generate", "a red circle", "--reward", "+".join(["0.01*toy-clip"] * 40)], "at most 32"),
        (["bench", "--suite", "toy", "--methods", "best-of-2 best-of-02"], "are the same method"),
    ],
)
def test_more_usage_errors_are_one_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) if "invalid int" in message or "unrecognized" in message else _nothing():
        code = main([*argv, "--out", str(tmp_path / "o")])
        assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists(), err


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_an_out_path_no_file_system_takes_and_a_non_utf8_prompts_file_are_named(tmp_path, capsys):
    assert main(["generate", "a red circle", "--out", str(tmp_path / ("y" * 300))]) == 2
    assert "longer than file systems take" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"prompt\na red circle\na bl\xffe square\n")
    argv = ["bench", "--suite", "prompts", "--prompts-file", str(bad), "--out", str(tmp_path / "b")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{bad} line 3 is not UTF-8 text" in err and not (tmp_path / "b").exists()


@pytest.mark.parametrize("prompt", ["[a red circle]", "123", '"a red circle"', "{a red circle"])
def test_every_saved_embeddings_file_replays_whatever_its_text_looks_like(tmp_path, prompt):
    """Text that reads as JSON (a list, a number, a quoted string) is stored as text and read back as it was typed:
    the file `--save-embeddings` writes replays the same image, its prompt unchanged."""
    argv = ["generate", prompt, "--steps", "2", "--negative-prompt", "[blurry]", "--save-embeddings"]
    assert main([*argv, "--out", str(tmp_path / "s")]) == 0
    saved = next((tmp_path / "s").glob("*-embeddings.safetensors"))
    assert main(["generate", "--replay-embeddings", str(saved), "--out", str(tmp_path / "r")]) == 0
    made, again = (json.loads(next((tmp_path / d).glob("*.json")).read_text()) for d in ("s", "r"))
    assert again["prompt"] == made["prompt"] == prompt and again["negative_prompt"] == "[blurry]"
    png = next((tmp_path / "s").glob("*.png")).name
    assert np.array_equal(np.asarray(Image.open(tmp_path / "s" / png)), np.asarray(Image.open(tmp_path / "r" / png)))


def test_a_replay_whose_model_is_not_here_names_the_file(tmp_path, capsys):
    """The model a replay file records is a folder of the machine it was made on: named by the file and its key,
    with the fix (--model), never as a --model the user did not give."""
    assert main(["generate", "a red circle", "--steps", "2", "--save-embeddings", "--out", str(tmp_path / "s")]) == 0
    saved = next((tmp_path / "s").glob("*-embeddings.safetensors"))
    _rewrite(saved, lambda meta, t: meta.update(model_arg=json.dumps("/nonexistent/model")))
    capsys.readouterr()
    assert main(["generate", "--replay-embeddings", str(saved), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{str(saved)!r}: its 'model_arg' '/nonexistent/model' is no file or folder here" in err, err


def test_replay_refuses_settings_it_would_replace_silently(tmp_path, capsys):
    assert main(["generate", "a red circle", "--steps", "2", "--save-embeddings", "--out", str(tmp_path / "s")]) == 0
    saved = next((tmp_path / "s").glob("*-embeddings.safetensors"))
    for extra in (["--seed", "5"], ["--steps", "1"], ["--guidance", "9"], ["--images-per-prompt", "2"],
                  ["--scheduler", "ddim"], ["--seed", "0"], ["--seed=00"], ["--images-per-prompt", "1"]):  # fmt: skip
        # a value given is replaced by the file's, whether or not it is the option's default (`--seed 0`)
        assert main(["generate", "--replay-embeddings", str(saved), *extra, "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert f"leave out {extra[0].split('=')[0]}" in err and not (tmp_path / "r").exists(), err
    # options of DATE's updates, which a replay does not run: each would be taken and do nothing
    for extra in (
        ["--rho", "3"],
        ["--reward", "toy-clip"],
        ["--paper-defaults"],
        ["--update-every", "1"],
        ["--reward-decoder", "tiny"],
        ["--gradient-checkpointing"],
        ["--batch-size", "7"],
        ["--batch-size", "4"],
    ):  # fmt: skip  (a replay samples alone)
        assert main(["generate", "--replay-embeddings", str(saved), *extra, "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert f"{extra[0]} would do nothing" in err and not (tmp_path / "r").exists(), err
    assert main(["generate", "--replay-embeddings", str(saved), "--out", str(tmp_path / "r")]) == 0


def _drop_tensor(path, name):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    del tensors[name]
    save_file(tensors, str(path))


def _set_json(path, change):
    path.write_text(change(path.read_text()))


@pytest.mark.parametrize(
    "damage, file, message",
    [
        (lambda m: (m / "text_encoder" / "config.json").write_text('{"hidden_size": -3}'), "text_encoder/config.json",
         "hidden size (-3)"),
        (lambda m: (m / "unet" / "config.json").write_text("{}"), "unet/diffusion_pytorch_model.safetensors",
         "its tensors do not fit config.json"),
        (lambda m: (m / "tokenizer" / "tokenizer.json").write_text("{"), "tokenizer/tokenizer.json",
         "not readable JSON"),
        (lambda m: (m / "scheduler" / "scheduler_config.json").write_text("[]"), "scheduler/scheduler_config.json",
         "holds an array, not an object"),
        (lambda m: (m / "vae" / "diffusion_pytorch_model.safetensors").unlink(),
         "vae/diffusion_pytorch_model.safetensors", "missing"),
        (lambda m: _set_json(m / "unet" / "config.json", lambda t: t.replace("{", '{"in_channels": 4,', 1)),
         "unet/config.json", "key 'in_channels' is given twice"),
        (lambda m: __import__("shutil").rmtree(m / "vae"), "vae", "no such folder"),
        (lambda m: (m / "text_encoder" / "model.safetensors").write_bytes((m / "text_encoder" / "model.safetensors")
                                                                .read_bytes()[:4000]),
         "text_encoder/model.safetensors", "is cut short (its header alone says"),
        (lambda m: _set_json(m / "model_index.json", lambda t: t.replace("UNet2DConditionModel", "NoSuchModel")),
         "model_index.json", "its class for 'unet' does not load"),
        # round ten: weights of another component (every tensor missing), or one tensor removed
        (lambda m: __import__("shutil").copy(m / "vae" / "diffusion_pytorch_model.safetensors",
                                             m / "unet" / "diffusion_pytorch_model.safetensors"),
         "unet/diffusion_pytorch_model.safetensors", "its tensors do not fit config.json (324 missing, e.g. conv_in"),
        (lambda m: _drop_tensor(m / "unet" / "diffusion_pytorch_model.safetensors", "conv_in.bias"),
         "unet/diffusion_pytorch_model.safetensors", "(1 missing, e.g. conv_in.bias)"),
    ],
)  # fmt: skip
def test_every_component_of_a_model_folder_is_named_by_its_file(tmp_path, capsys, damage, file, message):
    """Whatever component of a model folder does not load (a config the library refuses, weights that do not fit
    it, a damaged tokenizer file, a scheduler config of another shape, missing weights): one line, exit code 2,
    naming the component's file and what is wrong."""
    model = _toy_copy(tmp_path, "model")
    damage(model)
    argv = ["generate", "a red circle", "--model", str(model), "--steps", "2", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if "date-diffusion generate: error:" in line]
    assert f"{model / file}: " in err and message in err and len(ours) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "text", ["1_000", "\u0661\u0662", "\uff15", "1e3", "0x10", " ", "+", "1.0", "١", "2\u00a0", "\u30002", "\u20072"]
)
def test_one_integer_parser_takes_only_ascii_digits(text):
    from date_diffusion.core.settings import parse_integer

    with pytest.raises(ValueError, match="invalid integer"):
        parse_integer(text)
    assert parse_integer(" -42 ") == -42 and parse_integer("+7") == 7 and parse_integer(str(2**63 - 1)) == 2**63 - 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "a red circle", "--seed", "1_000"], "argument --seed: invalid int value: '1_000'"),
        (["generate", "a red circle", "--steps", "\u0661\u0662"], "argument --steps: invalid int value"),
        (["generate", "a red circle", "--update-every", "1_0"], "--update-every must be an integer"),
        (["generate", "a red circle", "--update-steps", "2,\u0663"], "--update-steps must be a list of loop indices"),
        (["bench", "--suite", "toy", "--methods", "best-of-\u0664"], "N in 'best-of-\u0664' must be an integer"),
        (["bench", "--suite", "toy", "--methods", "date:every=1_0"], "every in 'date:every=1_0' must be an integer"),
        (["bench-perf", "--batch-size", "1,\uff12"], "argument --batch-size: expected comma-separated integers"),
        (["generate", "a red circle", "--reward", "aug\u0663(toy-clip)"], "--reward"),
    ],
)
def test_integers_with_underscores_or_other_digits_are_refused_everywhere(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) if "argument" in message else _nothing():
        assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists(), err


def test_the_page_and_files_read_integers_as_the_command_line_does(tmp_path, capsys):
    from date_diffusion.ui.session import InputError, _seed

    for text in ("1_000", "\u0661\u0662"):
        with pytest.raises(InputError, match="seed must be a whole number written with the digits 0-9"):
            _seed(text)
    model = _toy_copy(tmp_path, "model")
    meta = json.loads((model / "toyworld.json").read_text())
    meta["recommended"]["update_every"] = 10.0
    (model / "toyworld.json").write_text(json.dumps(meta))
    assert main(["generate", "a red circle", "--model", str(model), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "toyworld.json: recommended.update_every must be an integer" in err, err


def test_a_run_json_with_a_float_where_an_integer_is_meant_is_named(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_bench(out)) == 0
    capsys.readouterr()
    run = json.loads((out / "run.json").read_text())
    for key, value in (("seeds", [float(s) for s in run["seeds"]]), ("steps", float(run["steps"]))):
        (out / "run.json").write_text(json.dumps({**run, key: value}))
        assert main(_bench(out)) == 2
        err = capsys.readouterr().err
        assert f"run.json is not a valid bench run settings file: field {key!r} must be" in err, err
        assert "whole number" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("p.txt", "a red circle\na blue\x00 square\n", "p.txt line 2 holds the control character U+0000"),
        ("p.txt", "a red circle\fa blue square\n", "p.txt line 1 holds the control character U+000C"),
        ("p.txt", "\x1b[31m\n", "p.txt line 1 holds the control character U+001B"),
        ("p.txt", "a cat\n\u202eelgnaf\n", "p.txt line 2 holds the bidirectional control U+202E at character 1"),
        ("p.csv", 'prompt\n"a \u2067dog\u2069"\n', "line 2: 'prompt' holds the bidirectional control U+2067"),
        ("p.csv", "prompt\na red circle\na \x07 bell\n", "line 3: 'prompt' holds the control character U+0007"),
        ("p.jsonl", '{"prompt": "a red\\u0000 circle"}\n', "p.jsonl line 1: 'prompt' holds the control character"),
        ("p.jsonl", '{"prompt": "a", "prompt": "b"}\n', "p.jsonl line 1 is not readable JSON (key 'prompt' is given"),
        ("p.txt", "a red circle\na blue\rsquare\x07\n", "p.txt line 2 holds a carriage return without a newline"),
        ("p.jsonl", '{"prompt": "a"}\r{"prompt": "b"}\n', "p.jsonl line 1 holds a carriage return without"),
        ("p.txt", "a red circle\r\na\U000e0041 blue square\r\n", "p.txt line 2 holds the tag character U+E0041"),
        # round twenty-seven: a second file's byte-order mark, joined in, made a prompt that looks like line 1's
        ("p.txt", "\ufeffa red circle\n\ufeffa red circle\n", "p.txt line 2 holds the byte-order mark U+FEFF at"),
        ("p.csv", 'prompt\n"a red\ufeff circle"\n', "line 2: 'prompt' holds the byte-order mark U+FEFF"),
        # round thirty-one: JSON lines under a .txt name were read as prompts, braces and all
        ("p.txt", '{"prompt": "a red circle", "tag": "single"}\n', "p.txt line 1 is a JSON object: a text file"),
        # round twenty-eight: UTF-16 without its byte-order mark was said to hold a NUL, to remove
        ("p.txt", "a red circle\na blue square\n".encode("utf-16-be"), "p.txt is not UTF-8 text (27 of its 54 bytes"),
        ("p.txt", "a red circle\n".encode("utf-32-le"), "bytes are NUL, as in UTF-16 or UTF-32 text without its"),
    ],
)
def test_control_characters_and_keys_given_twice_in_prompts_files_are_named_with_the_line(
    tmp_path, capsys, name, text, message
):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    assert main(["generate", "--prompts-file", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists(), err


def test_a_flag_emoji_is_text_and_a_lone_surrogate_is_refused_on_the_page(tmp_path, capsys):
    from date_diffusion.core.text import check_prompt
    from date_diffusion.ui.session import Form, InputError, check_form

    scotland = "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"  # tag characters inside
    assert check_prompt(f"a flag {scotland}", "PROMPT") == f"a flag {scotland}"
    with pytest.raises(InputError, match="prompt holds the lone surrogate U\\+D800 at character 6"):
        check_form(Form(prompt="a red\ud800 circle", negative_prompt="", seed="0", settings={}))


def test_control_characters_in_typed_prompts_are_refused_on_the_command_line_and_the_page(tmp_path, capsys):
    from date_diffusion.ui.session import Form, InputError, check_form

    for argv in (["a red\x00circle"], ["a red circle", "--negative-prompt", "blur\x1b"]):
        assert main(["generate", *argv, "--out", str(tmp_path / "o")]) == 2
        assert "holds the control character" in capsys.readouterr().err
    (tmp_path / "in.png").write_bytes(b"")  # every command's text for an encoder is checked before its files
    for flag in ("--negative-prompt", "--source-prompt", "--target-prompt"):
        texts = {"--source-prompt": "a red circle", "--target-prompt": "a blue circle", flag: "blur\u2067x"}
        argv = [
            "edit",
            str(tmp_path / "in.png"),
            *[a for kv in texts.items() for a in kv],
            "--out",
            str(tmp_path / "e"),
        ]
        assert main(argv) == 2
        assert f"{flag} holds the bidirectional control U+2067" in capsys.readouterr().err
    with pytest.raises(InputError, match="prompt holds the control character U\\+0000"):
        check_form(Form(prompt="a red\x00 circle", negative_prompt="", seed="0", settings={}))
    assert main(["generate", "a red\tcircle", "--steps", "1", "--out", str(tmp_path / "t")]) == 0  # a tab is text
    with pytest.raises(InputError, match="holds the bidirectional control U\\+202D at character 3"):
        check_form(Form(prompt="a \u202dred circle", negative_prompt="", seed="0", settings={}))
    # the direction marks are text (an Arabic or Hebrew prompt may hold them)
    assert main(["generate", "\u05d7\u05ea\u05d5\u05dc \u200fcat", "--steps", "1", "--out", str(tmp_path / "m")]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "a red circle", "--steps", "2", "--steps", "3"], "argument --steps: given twice"),
        (["generate", "a red circle", "--seed=1", "--seed", "1"], "argument --seed: given twice"),
        (["generate", "a red circle", "--compare", "--compare"], "argument --compare: given twice; give it once"),
        (["bench-perf", "--first-command", "--first-command"], "argument --first-command: given twice; give it"),
        (["bench", "--suite", "toy", "--categories", "single,single"], "single listed twice in 'single,single'"),
        (["bench-perf", "--batch-size", "1,2,1"], "1 listed twice in '1,2,1'"),
        (["bench-perf", "--batch-size", "1,01"], "01 (the same as 1) listed twice in '1,01'"),  # round nineteen
        (["bench", "--suite", "toy", "--methods", "date:steps=2;2"], "lists 2 twice"),
    ],
)
def test_an_option_or_a_list_value_given_twice_is_refused(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) if "argument" in message or "listed" in message else _nothing():
        assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists(), err


def test_repeatable_options_stay_repeatable():
    from date_diffusion.cli.main import build_parser

    args = build_parser().parse_args(["generate", "x", "--lora", "a.safetensors", "--lora", "b.safetensors:0.5"])
    assert args.lora == ["a.safetensors", "b.safetensors:0.5"]


def test_a_long_prompts_file_is_counted_before_any_work_and_estimated_after_the_first_batch(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\na blue square\na green circle\n")
    argv = [
        "generate",
        "--prompts-file",
        str(prompts),
        "--steps",
        "1",
        "--batch-size",
        "1",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    count = err.index("3 images to make (3 prompts x 1 per prompt) in batches of 1")
    assert count < err.index("estimate: about") and "s per image" in err, err


@pytest.mark.parametrize("text", ["1_0", "\u0663", "\uff15", "0x10", "1e", "", ".", "1.0.0", "\u22121", "5 5"])
def test_one_real_parser_takes_only_ascii_numbers(text):
    from date_diffusion.core.settings import parse_real

    with pytest.raises(ValueError, match="invalid number"):
        parse_real(text)
    assert parse_real(" -1.5e-3 ") == -1.5e-3 and parse_real(".5") == 0.5 and math.isinf(parse_real("inf"))


@pytest.mark.parametrize(
    "text, reads_as", [("1e400", "infinity"), ("-1e400", "infinity"), ("1e-400", "0"), ("-2.5e-999", "0")]
)
def test_a_number_beyond_a_floats_range_is_refused_not_read_as_infinity_or_zero(text, reads_as):
    from date_diffusion.core.settings import BeyondFloat, parse_real

    with pytest.raises(BeyondFloat, match=f"reads as {reads_as}"):
        parse_real(text)
    assert parse_real("0e-400") == 0 and parse_real("-0.000") == 0 and parse_real("1e-310") == 1e-310


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "a red circle", "--rho-relative", "1e-400"], "--rho-relative: number '1e-400' is too small"),
        (["bench", "--suite", "toy", "--methods", "date:rho=1e999"], "is too large for a 64-bit float"),
        (
            ["edit", "x.png", "--source-prompt", "a", "--target-prompt", "b", "--strength", "1e-400"],
            "argument --strength: number '1e-400' is too small for a 64-bit float",
        ),
        (["generate", "a red circle", "--rho", "1_0"], "--rho must be a finite number"),
        (
            ["generate", "a red circle", "--reward", "-0.5*toy-clip"],
            "argument --reward: expected one argument (a value that starts with '-' is given as --reward=VALUE)",
        ),
        (["generate", "a red circle", "--guidance", "1e308"], "<= 100, got '1e308'"),
        (["generate", "a red circle", "--rho", "1E5"], "--rho must be a finite number >= 0 and <= 100, got '1E5'"),
        (["generate", "a red circle", "--rho", "100.00000000000000001"], "got '100.00000000000000001'"),  # not 100
        (["generate", "a red circle", "--steps", "0001001"], "from 1 to 1000, got '0001001'"),
        (["generate", "a red circle", "--guidance", "\u0663"], "argument --guidance: invalid float value"),
        (["generate", "a red circle", "--reward", "1_0*toy-clip"], "bad weight in reward"),
        (["bench", "--suite", "toy", "--methods", "date:rho=\uff11"], "rho in 'date:rho=\uff11' must be a finite"),
        (["generate", "a red circle", "--update-steps", "1,,2"], "--update-steps has an empty item"),
        (["generate", "a red circle", "--update-intervals", "0:2,0:2"], "intervals 0:2 and 0:2 overlap (step 0"),
        (["generate", "a red circle", "--update-intervals", "5:9,0:6"], "intervals 0:6 and 5:9 overlap (step 5"),
        (["bench", "--suite", "toy", "--methods", "date:intervals=0:2;1:3"], "intervals 0:2 and 1:3 overlap"),
        (["bench", "--suite", "toy", "--methods", "date:rho=0.5,"], "'date:rho=0.5,' has an empty item"),
        (["bench", "--suite", "toy", "--methods", "ug:scale=2,,every=1"], "'ug:scale=2,,every=1' has an empty item"),
        (["generate", "a red circle", "--update-intervals", "0:1,"], "--update-intervals has an empty item"),
        (["bench-perf", "--batch-size", "1,,2"], "argument --batch-size: expected comma-separated integers"),
        (["bench", "--suite", "toy", "--categories", "single,,position"], "argument --categories: an empty item"),
        (["bench-perf", "--variants", "fixed,date,"], "argument --variants: an empty item"),
        (["generate", "\u0301\u0308"], "PROMPT is empty"),
        (["generate", "a red circle", "--negative-prompt", "x", "--lora", "."], "a folder, not a file"),
    ],
)
def test_numbers_lists_marks_and_folders_are_refused_as_typed(tmp_path, capsys, argv, message):
    """Round five: a float read through `float()` (`1_0` as 10, other scripts' digits), a blank list item dropped,
    a prompt of combining marks alone, a LoRA that is a folder: each a one-line usage error naming the option."""
    with pytest.raises(SystemExit) if "argument" in message else _nothing():
        assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists(), err


def test_a_combining_mark_on_a_letter_is_text():
    from date_diffusion.core.text import check_prompt

    assert check_prompt("cafe\u0301", "PROMPT") == "cafe\u0301"


def test_a_deleted_working_folder_is_a_usage_error(tmp_path, capsys, monkeypatch):
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    assert main(["generate", "a red circle"]) == 2
    err = capsys.readouterr().err
    assert "the current folder no longer exists" in err and len(err.strip().splitlines()) == 1
    assert err.startswith("date-diffusion generate: error:")  # the command's full name, as every usage error


def test_a_full_standard_output_drops_what_it_cannot_show():
    import errno

    from date_diffusion.cli.main import _Shown

    class Full:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            self.write("")

    class Gone(Full):
        def write(self, text):
            raise BrokenPipeError

    shown = _Shown(Full())
    assert shown.write("seed 0 -> out.png\n") == len("seed 0 -> out.png\n")
    shown.flush()
    with pytest.raises(BrokenPipeError):  # a reader that went away still ends the command (exit 141)
        _Shown(Gone()).write("x")


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "a red circle", "--reward", "clip-l:" + "x" * 3000 + "("],
        ["generate", "a red circle", "--reward", "z" * 4000],
        ["generate", "a red circle", "--reward", "3" * 3000 + "*clip-l"],
        ["generate", "a red circle", "--rho", "1" * 5000 + "x"],
        ["generate", "a red circle", "--steps", "9" * 5000 + "q"],
        ["bench", "--suite", "toy", "--methods", "date:rho=" + "7" * 5000 + "z"],
    ],
)
def test_a_long_value_is_quoted_short_in_its_error(tmp_path, capsys, argv):
    """Whatever a user typed, its error is one line that quotes its start and length, not the whole value."""
    try:
        code = main([*argv, "--out", str(tmp_path / "o")])
    except SystemExit as stop:  # argparse's own refusal
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "characters)" in err, err
    assert not any(ch * 100 in err for ch in "xz379"), err  # the value is quoted by its start, never whole


def test_a_config_naming_another_class_than_model_index_is_noted(tmp_path, capsys):
    import shutil

    from date_diffusion.toyworld.world import PIPELINE

    model = tmp_path / "model"
    shutil.copytree(PIPELINE, model)
    config = model / "scheduler" / "scheduler_config.json"
    config.write_text(config.read_text().replace('"DDIMScheduler"', '"EulerDiscreteScheduler"'))
    assert main(["generate", "a red circle", "--model", str(model), "--steps", "1", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert f"{config} names the class EulerDiscreteScheduler, and model_index.json DDIMScheduler" in err, err


def test_without_network_a_hub_id_works_offline_at_once(tmp_path, monkeypatch):
    """No name resolution for the hub's host: HF_HUB_OFFLINE is set before huggingface_hub is imported (cached
    models load, a missing one is named) instead of five retries of each request; a local path or a proxy: untouched."""
    import socket
    import sys
    from argparse import Namespace

    from date_diffusion import hub

    def unresolved(*args):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unresolved)
    monkeypatch.delitem(sys.modules, "huggingface_hub", raising=False)
    for name in ("HF_HUB_OFFLINE", *hub.PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    assert hub.offline_without_network(Namespace(model=str(tmp_path), out="runs/today")) is None  # local
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert hub.offline_without_network(Namespace(model="owner/model")) is None  # a proxy may reach the hub
    monkeypatch.delenv("HTTPS_PROXY")
    assert "HF_HUB_OFFLINE" not in __import__("os").environ
    note = hub.offline_without_network(Namespace(model=None, reward="0.5*clip:owner/clip"))
    assert note.startswith("huggingface.co cannot be resolved (Name or service not known): working offline")
    assert __import__("os").environ["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize(
    "argv, named",
    [(["generate", "a", "--reward", "clip-l"], True), (["generate", "a", "--reward", "0.5*pickscore+toy-clip"], True),
     (["bench", "--suite", "toy", "--eval-clip", "clip-l", "--out", "o"], True),
     (["generate", "a", "--reward", "toy-clip"], False),
     (["generate", "a"], False), (["info", "a.png"], False), (["bench-perf"], False)],
)  # fmt: skip
def test_a_reward_named_for_a_hub_model_counts_as_a_hub_id(tmp_path, argv, named):
    """Round nine: `--reward clip-l` (the paper's CLIP, a hub model by its registered name) was not seen as naming
    the hub, so without network it took half a minute of retries; a real model's default reward counts too."""
    from date_diffusion.cli.common import hub_named
    from date_diffusion.cli.main import build_parser

    parser = build_parser()
    assert hub_named(parser.parse_args(argv)) is named
    (tmp_path / "model_index.json").write_text("{}")  # a real model's folder: its default reward is clip-l
    assert hub_named(parser.parse_args(["generate", "a", "--model", str(tmp_path)])) is True


# ---------------------------------------------------------------- hostile inputs, round G


@pytest.mark.parametrize(
    "text, why",
    [('{"suite": "toy", "seeds": [1' + "0" * 5000 + "]}", "a number too long to read"),
     ("[" * 100000 + "]" * 100000, "JSON nested deeper than any record")],
)  # fmt: skip
def test_json_with_a_number_too_long_or_nesting_too_deep_is_named_as_its_file(tmp_path, capsys, text, why):
    from date_diffusion.schemas import loads

    with pytest.raises(json.JSONDecodeError, match=why):  # one kind of error out of every file read
        loads(text)
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(text)
    assert main(_bench(out)) == 2
    err = capsys.readouterr().err
    assert f"{out / 'run.json'} is not a readable bench run settings file ({why}" in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "text, message",
    [('prompt\na blue square\n"a red circle\na green cross\n', 'line 3 is not CSV (unexpected end of data)'),
     ("prompt\na red circle, to the left of a blue square\n", 'line 2 has 2 fields and its header 1: quote a value')],
)  # fmt: skip
def test_a_csv_prompt_with_an_open_quote_or_an_unquoted_comma_is_refused_naming_its_line(tmp_path, capsys, text,
                                                                                          message):  # fmt: skip
    prompts = tmp_path / "prompts.csv"
    prompts.write_text(text)
    out = tmp_path / "o"
    assert main(["generate", "--prompts-file", str(prompts), "--steps", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{prompts} {message}" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.parametrize("quoted", [True, False])
def test_a_csv_prompt_longer_than_the_csv_modules_field_limit_is_read_as_a_text_files_is(tmp_path, capsys, quoted):
    """Round twenty-three: a prompt of more than 131,072 characters in a CSV file (the csv module's default field
    limit) was refused as "not CSV: close the quote it opens", its quote closed or absent; the same prompt in a
    text file is cut to what encoders read with a note. Both are read alike now."""
    import csv

    prompt = "a red circle " + "x" * 200_000
    (tmp_path / "p.csv").write_text("prompt\n" + (f'"{prompt}"' if quoted else prompt) + "\n")
    (tmp_path / "p.txt").write_text(prompt + "\n")
    records = []
    for name in ("p.csv", "p.txt"):
        argv = ["generate", "--prompts-file", str(tmp_path / name), "--steps", "1", "--out", str(tmp_path / name)[:-4]]
        assert main(argv) == 0
        assert "has 200,013 characters" in capsys.readouterr().err
        records.append(json.loads(next((tmp_path / name[:-4]).glob("*.json")).read_text()))
    assert records[0]["prompt"] == records[1]["prompt"]
    assert csv.field_size_limit() == 131072  # the process's limit is left as it was


def test_values_a_replay_takes_from_its_file_are_named_by_the_file(tmp_path, capsys):
    saved = tmp_path / "a-red-circle-s0-embeddings.safetensors"
    assert main(["generate", "a red circle", "--steps", "2", "--save-embeddings", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    cases = [("height", "100000", "its 'height' must be a positive multiple of 8"),
             ("prompt", json.dumps("a\x1bred"), "its 'prompt' holds the control character"),
             ("num_frames", '"abc"', "field 'num_frames' must be a whole number"),
             ("num_frames", str(10**30), "its 'num_frames' must be an integer from 1 to 10000"),
             ("negative_prompt", json.dumps("x\x07"), "its 'negative_prompt' holds the control character U+0007"),
             ("date", '"x"', "field 'date' must be an object, got \"x\""),
             ("date", '{"rho": 1, "rho": 2}', "'date' is not readable JSON (key 'rho' is given twice")]  # fmt: skip
    for key, value, message in cases:
        bad = tmp_path / f"bad-{key}.safetensors"
        bad.write_bytes(saved.read_bytes())
        _rewrite(bad, lambda meta, t, key=key, value=value: meta.__setitem__(key, value))
        assert main(["generate", "--replay-embeddings", str(bad), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert str(bad) in err and message in err, err
        assert (
            "--height" not in err
            and "--negative-prompt" not in err
            and "PROMPT" not in err
            and len(err.strip().splitlines()) == 1
        ), err


@pytest.mark.parametrize(
    "file, key, value, message",
    [("unet/config.json", "sample_size", 100000, "its sample_size makes a default image of 200000 px a side"),
     ("tokenizer/tokenizer_config.json", "model_max_length", 10**12, "model_max_length 1000000000000 is more than")],
)  # fmt: skip
def test_a_model_config_that_would_allocate_terabytes_is_named(model_dir, tmp_path, file, key, value, message):
    import shutil

    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    config = json.loads((broken / file).read_text())
    config[key] = value
    (broken / file).write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "date_diffusion", "generate", "a red circle", "--steps", "2", "--model", str(broken),
           "--reward", "toy-clip", "--out", str(tmp_path / "o")]  # fmt: skip
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-2000:]  # not a failed allocation (1) or an aborted process
    assert f"{broken / file}: {message}" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "o").exists()


def test_the_page_counts_each_gradient_step_of_an_update_in_a_request_s_work():
    from date_diffusion.ui.session import Form, InputError, check_form

    one = {"num_inference_steps": "50", "update_every": "1", "reward": "toy-clip"}  # one reward model's run
    with pytest.raises(InputError, match="50 DATE updates of 100 gradient steps each is 15050 steps of work") as err:
        check_form(Form("a red circle", settings={**one, "grad_steps": "100"}))
    assert err.value.field == "num_inference_steps"
    check_form(Form("a red circle", settings={**one, "grad_steps": "2"}))


def test_a_full_standard_error_keeps_the_exit_code_and_the_work(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "date_diffusion"]
    with open(os.devnull, "w") as null, open("/dev/full", "w") as full:
        bad = subprocess.run([*base, "generate", "a red circle", "--steps", "0"], env=env, stdout=null, stderr=full)
        made = subprocess.run([*base, *_bench(tmp_path / "run")], env=env, stdout=null, stderr=full)
    assert bad.returncode == 2  # a usage error, whether or not its message could be shown
    assert made.returncode == 0 and len(list((tmp_path / "run").rglob("samples/*.png"))) == 1


@pytest.mark.parametrize("stdout", [">&-", ">/dev/full"])
def test_a_closed_or_full_standard_output_is_said_once_and_keeps_the_exit_code(tmp_path, stdout):
    """Round twenty-seven: `generate ... >&-` exited 0 without a word, the list of what it wrote lost silently."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = f'"{sys.executable}" -m date_diffusion generate "a red circle" --steps 1 --out o {stdout}'
    run = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0 and (tmp_path / "o" / "a-red-circle-s0.png").is_file()
    assert run.stderr.count("note: standard output is closed or full: what the command showed there") == 1, run.stderr
    shown = subprocess.run(["bash", "-c", command.replace(stdout, "--overwrite")], env=env, capture_output=True,
                           text=True, cwd=tmp_path)  # fmt: skip
    assert shown.returncode == 0 and "standard output" not in shown.stderr and "a-red-circle-s0.png" in shown.stdout


def test_a_reward_the_model_s_file_recommends_is_named_by_that_file(tmp_path):
    import shutil

    from date_diffusion import TOY_WORLD, resolve_settings
    from date_diffusion.core.settings import SettingError

    model = tmp_path / "model"
    shutil.copytree(TOY_WORLD, model)
    file = json.loads((model / "toyworld.json").read_text())
    file["recommended"]["reward"] = "aug64(aug64(toy-clip))"
    (model / "toyworld.json").write_text(json.dumps(file))
    with pytest.raises(SettingError, match=r"toyworld.json: recommended.reward 'aug64\(aug64\(toy-clip\)\)'"):
        resolve_settings(model, names={"reward": "--reward"})
    assert resolve_settings(model, reward="toy-clip").reward == "toy-clip"


def test_a_resumed_bench_writes_a_missing_prompt_json_again(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_bench(out)) == 0
    record = next((out / "images").rglob("prompt.json"))
    kept = record.read_text()
    record.unlink()  # the export and the report read it; the images stay made
    assert main(_bench(out)) == 0
    assert record.read_text() == kept
    assert "0 to make" in capsys.readouterr().err


def test_a_path_longer_than_file_systems_take_is_named_as_such(tmp_path):
    from date_diffusion.outputs import unwritable

    assert "the path is" in unwritable(tmp_path / "/".join(["d" * 200] * 25), folder=True)
    assert "255 bytes a name" in unwritable(tmp_path / ("d" * 300), folder=True)


@pytest.mark.parametrize("scale", ["1_0", "", "٣"])
def test_a_lora_scale_that_is_no_number_is_named_as_the_scale_not_a_missing_file(tmp_path, capsys, scale):
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"{}")
    assert main(["generate", "a red circle", "--lora", f"{lora}:{scale}", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"the scale of LoRA {str(lora)!r} must be a finite number" in err and "no such file" not in err, err


def test_the_pages_work_bound_counts_the_rewards_model_runs():
    """A request's work counts each reward model's run (augmented views, ensembles) in every gradient step: 100
    steps updating at every step with 64 views of a 3-CLIP ensemble and 3 other CLIPs is refused, the same request with
    the plain reward runs within the bound."""
    from date_diffusion.rewards.registry import reward_runs
    from date_diffusion.ui.session import Form, InputError, check_form

    specs = ("toy-clip", "aug8(toy-clip)", "toy-ensemble", "mean(aug2(toy-clip);toy-clip)+0.5*aug4(subjects(toy-clip))")
    assert [reward_runs(s) for s in specs] == [1, 8, 3, 3 + 4 * 3]  # subjects(...) without a prompt: two subjects
    assert reward_runs("subjects(toy-ensemble)", "a red circle") == 3  # one subject: the prompt alone
    assert reward_runs("subjects(toy-ensemble)", "a red circle and a blue square") == 3 * 3
    heavy = "mean(aug64(toy-ensemble);aug64(toy-clip);aug64(toy-clip-s1);aug64(toy-clip-m2))"  # 64 x (3 + 3)
    with pytest.raises(InputError, match="an update counts 386 with this reward's 384 model runs") as refused:
        check_form(Form("a red circle", settings={"num_inference_steps": "100", "reward": heavy, "update_every": "1"}))
    assert refused.value.field == "num_inference_steps"
    _, resolved = check_form(Form("a red circle", settings={"num_inference_steps": "100", "reward": "toy-clip",
                                                            "update_every": "1"}))  # fmt: skip
    assert resolved.num_inference_steps == 100


@pytest.mark.parametrize("given, paper", [(False, False), ("false", False), ("0", False), (True, True), ("yes", True)])
def test_the_pages_switches_read_text_as_text(given, paper):
    from date_diffusion.ui.session import Form, check_form

    _, resolved = check_form(Form("a red circle", paper_defaults=given))
    assert (resolved.sources["update_every"] == "paper") is paper


def test_a_switch_the_page_cannot_read_is_refused():
    from date_diffusion.ui.session import Form, InputError, check_form

    for form in (Form("a red circle", paper_defaults="maybe"), Form("a red circle", approximate=[1])):
        with pytest.raises(InputError, match="must be"):
            check_form(form)


def test_with_standard_error_closed_nothing_meant_for_it_reaches_standard_output(tmp_path):
    """`2>&-`: Python's `sys.stderr` is None, and `print(file=None)` writes to stdout; an error (or a note) must not
    land in a file stdout is written to."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(["bash", "-c", f'"{sys.executable}" -m date_diffusion generate "a red circle" --steps 0 2>&-'],
                         env=env, capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 2 and run.stdout == "", run.stdout


def test_info_escapes_the_control_characters_of_another_tools_parameters(tmp_path, capsys):
    """A foreign PNG's A1111 `parameters` text is shown with its line breaks, every other control character (an
    escape sequence that would recolour or retitle the terminal) written as its escape."""
    from PIL import Image, PngImagePlugin

    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", "a cat\x1b[31mRED\x1b]0;pwned\x07\u202e\nSteps: 20")
    Image.new("RGB", (8, 8)).save(tmp_path / "foreign.png", pnginfo=meta)
    assert main(["info", str(tmp_path / "foreign.png")]) == 0
    out = capsys.readouterr().out
    assert "a cat\\x1b[31mRED\\x1b]0;pwned\\x07\\u202e\nSteps: 20" in out and "\x1b" not in out, out


def _png_info(path):
    """A PNG's text chunks, to save again with another image."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in Image.open(path).text.items():
        info.add_text(key, value)
    return info


def _png_with(tmp_path, name, record_change=None, parameters_change=None):
    """A copy of a generated PNG with its record and/or its `parameters` text changed (another program's edit).
    A changed record (`record_change`, `{}` too) loses its seal, as an earlier version's record has none: what is
    checked is then the record's fields (a sealed record changed is named as such whatever the change)."""
    from PIL import Image, PngImagePlugin

    from date_diffusion.outputs import SEAL_KEYS

    src = next(tmp_path.glob("g/*.png"))
    with Image.open(src) as image:
        image.load()
        record = json.loads(image.text["date-diffusion"])
        params = image.text["parameters"]
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", parameters_change(params) if parameters_change else params)
        if record_change is not None:
            record = {k: v for k, v in record.items() if k not in SEAL_KEYS}
        info.add_text("date-diffusion", json.dumps({**record, **(record_change or {})}))
        image.save(tmp_path / name, pnginfo=info)
    return tmp_path / name


def test_info_shows_the_checked_record_not_another_programs_text(tmp_path, capsys):
    """A PNG whose `parameters` text was changed (another prompt, seed and steps) beside its untouched record:
    `info` shows the settings from the record, with a note that the two disagree; a record whose values are out of
    their bounds (a negative seed, 0 steps, NaN guidance, a negative height) is refused naming the file."""
    assert main(["generate", "a red circle", "--steps", "2", "--out", str(tmp_path / "g")]) == 0
    capsys.readouterr()
    lie = _png_with(tmp_path, "lie.png", parameters_change=lambda t: t.replace("a red circle", "a blue square"))
    assert main(["info", str(lie)]) == 0
    shown = capsys.readouterr()
    assert "a red circle" in shown.out and "a blue square" not in shown.out
    assert "its `parameters` text is not what its date-diffusion record says" in shown.err
    resized = _png_with(tmp_path, "resized.png", record_change={})
    Image.open(resized).resize((32, 32)).save(resized, pnginfo=_png_info(resized))
    sealed = _png_with(tmp_path, "sealed.png")
    Image.open(sealed).resize((32, 32)).save(sealed, pnginfo=_png_info(sealed))
    twice = _png_with(tmp_path, "twice.png")
    record = Image.open(twice).text["date-diffusion"]
    info = _png_info(twice)
    info.add_itxt("date-diffusion", record.replace("a red circle", "a blue square"))
    Image.open(twice).save(twice, pnginfo=info)
    long = json.loads(record)
    long["trace"] = {**long["trace"], "updates": long["trace"]["updates"] * 2001}
    for path, message in (
        (resized, "its record is of a 64x64 image, and it is 32x32"),
        (sealed, "its pixels were changed since its record was written"),
        (twice, "holds its 'date-diffusion' text twice"),
        (_png_with(tmp_path, "long.png", record_change={"trace": long["trace"]}), "2,001 updates"),
        (_png_with(tmp_path, "empty.png", record_change={"prompt": " "}), "its prompt is empty"),
    ):
        assert main(["info", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and str(path) in err, err
    for field, value in (("seed", -1), ("seed", 2**64), ("steps", 0), ("guidance_scale", float("nan")),
                         ("height", -64)):  # fmt: skip
        bad = _png_with(tmp_path, f"bad-{field}.png", record_change={field: value})
        for argv in (["info", str(bad)], ["info", "--json", str(bad)]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert f"field {field!r} must be" in err and str(bad) in err, err


def test_info_names_a_png_whose_header_claims_a_decompression_bomb(tmp_path, capsys):
    """A PNG whose header claims 20000 x 20000 pixels (Pillow refuses to open it): a usage error naming the file."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))  # fmt: skip
    assert main(["info", str(bomb)]) == 2
    err = capsys.readouterr().err
    assert f"{bomb} is not a readable image" in err and "exceeds limit" in err, err


def test_a_library_message_is_one_line_with_its_escapes_shown(capsys):
    """A library's note or error text (a multi-line size mismatch, ANSI colours, a 50,000-character truncation
    note) is shown as one line, escapes escaped, its middle left out beyond 2,000 characters."""
    from date_diffusion.cli.main import note
    from date_diffusion.core.text import one_line

    note("size mismatch for lora_A:\n\tcopying a param\x1b[1m bold\x1b[0m")
    assert (
        capsys.readouterr().err
        == "date-diffusion: note: size mismatch for lora_A: copying a param\\x1b[1m bold\\x1b[0m\n"
    )
    long = one_line("truncated: " + "a red circle " * 4000)
    assert len(long) < 2100 and long.startswith("truncated: a red") and "characters)..." in long


@pytest.mark.parametrize(
    "make, reward, message",
    [
        (lambda p: (p / "empty").mkdir(), "toy-judge:{}/empty",
         "cannot be loaded as the toy-judge reward: {}/empty holds no config.json"),
        (lambda p: (p / "bad.safetensors").write_bytes(b"x" * 40), "openclip:{}/bad.safetensors",
         "bad.safetensors' cannot be loaded as the openclip reward: '{}/bad.safetensors' is not a readable "
         "safetensors file: it is not a safetensors file (its first bytes are no safetensors header)"),
        (lambda p: (p / "empty.safetensors").write_bytes(b""), "openclip:{}/empty.safetensors",
         "'{}/empty.safetensors' is not a readable safetensors file: it is empty (0 bytes)"),
        (lambda p: (p / "f.txt").write_text("hi"), "openclip:{}/f.txt", "f.txt' is not a readable PyTorch checkpoint"),
        (lambda p: (p / "f.txt").write_text("hi"), "aesthetic:{}/f.txt", "f.txt' is not a readable PyTorch checkpoint"),
        (lambda p: None, "toy-judge:nowhere", "'nowhere' is no file or folder here, and no hub repository"),
        (lambda p: os.mkfifo(p / "pipe"), "toy-judge:{}/pipe", "is not a regular file or a folder (a device, pipe"),
    ],
)  # fmt: skip
def test_a_reward_source_that_cannot_load_is_a_usage_error_naming_it(tmp_path, capsys, make, reward, message):
    make(tmp_path)
    argv = [
        "generate",
        "a red circle",
        "--steps",
        "2",
        "--reward",
        reward.format(tmp_path),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    message = message.format(tmp_path)
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists(), err


def test_saved_embeddings_of_a_run_no_update_moved_are_written(tmp_path, capsys):
    """`--rho 0 --save-embeddings`: the final embedding is the original tensor itself, which safetensors refuses to
    write twice; the file is written (each stage its own copy) and replays."""
    assert (
        main(["generate", "a red circle", "--steps", "2", "--rho", "0", "--save-embeddings", "--out", str(tmp_path)])
        == 0
    )
    saved = tmp_path / "a-red-circle-s0-embeddings.safetensors"
    assert main(["generate", "--replay-embeddings", str(saved), "--out", str(tmp_path / "r")]) == 0


def test_the_page_names_an_address_it_cannot_listen_on_before_loading(capsys):
    """`ui --host` that is no address here, or a --port in use: one usage line before the model loads (Gradio's
    own answer came after it, in two lines, and blamed the port for an address that does not exist)."""
    import socket

    assert main(["ui", "--host", "999.1.1.1"]) == 2
    err = capsys.readouterr().err
    assert "--host '999.1.1.1' is no address of this machine" in err and len(err.strip().splitlines()) == 1, err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for spelled in (str(port), f"0{port}", f"+{port}"):  # round eighteen: `07861` reached the socket library
            assert main(["ui", "--port", spelled]) == 2  # as a SpelledInt, which it refused (OSError, exit 1)
            err = capsys.readouterr().err
            assert f"--port {port}: cannot listen there" in err and len(err.strip().splitlines()) == 1, err


def test_editing_an_animation_says_which_frame_it_edits(tmp_path, capsys):
    from PIL import Image

    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "blue", "green")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    argv = ["edit", str(tmp_path / "anim.gif"), "--source-prompt", "a red square", "--target-prompt", "a blue square",
            "--steps", "2", "--skip", "5", "--out", str(tmp_path / "e")]  # fmt: skip
    main(argv)  # refused later (--skip 5 of 2 steps): the note comes first, from the image alone
    assert "has 3 frames; its first is edited" in capsys.readouterr().err


def test_a_file_whose_name_is_not_utf8_is_named_as_such(tmp_path):
    """A file name's bytes that are not UTF-8 (in any locale): the refusal says to rename the file, not to change
    the terminal, which is not what is wrong."""
    name = os.fsencode(tmp_path) + b"/caf\xe9.png"
    with open(name, "wb") as f:
        f.write(b"x")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LC_ALL": "C.UTF-8"}
    run = subprocess.run([sys.executable, "-m", "date_diffusion", "info", name], env=env, capture_output=True)
    err = run.stderr.decode()
    assert run.returncode == 2 and "names a file whose name is not UTF-8: rename it" in err, err


@pytest.mark.parametrize(
    "argv, prefix, message",
    [
        (["--version", "extra"], "date-diffusion: error:", "takes nothing else, got 'extra'"),
        (["--version", "--debug"], "date-diffusion: error:", "takes nothing else, got '--debug'"),
        (["toyworld", "train-judge", "--out", "o", "--stage", "data", "--worker", "0/1000001"],
         "date-diffusion toyworld train-judge: error:", "N <= 1000000, got '0/1000001'"),
        (["toyworld", "train-judge", "--out", "o", "--worker", "1/2"],
         "date-diffusion toyworld train-judge: error:", "--worker is read only by --stage data"),
        (["toyworld", "train", "--out", "o", "--bogus"], "date-diffusion toyworld train: error:",
         "unrecognized arguments: --bogus; see `date-diffusion toyworld train --help`"),  # round ten
        (["generate", "a", "--foo"], "date-diffusion generate: error:", "unrecognized arguments: --foo"),
    ],
)  # fmt: skip
def test_a_refusal_names_the_innermost_command_and_quotes_the_value_whole(tmp_path, capsys, monkeypatch, argv,
                                                                          prefix, message):  # fmt: skip
    """Round eight: `--version extra` exited 0 with the rest passed over; `--worker 0/1000001` was refused quoting
    `1000001` alone, under the prefix `date-diffusion toyworld`."""
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(prefix) and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_the_worker_kind_reads_what_its_type_reads():
    from date_diffusion.cli.common import COMMAND_KINDS

    kind = COMMAND_KINDS["toyworld train-judge --worker"]
    assert kind.value("1/3", "--worker") == kind.value((1, 3), "--worker") == (1, 3)


def test_a_scheduler_the_model_recommends_is_the_one_that_samples(tmp_path):
    """Round nine: `recommended.scheduler` was read, listed as known, and then passed over for the model's own."""
    model = _toy_copy(tmp_path, "model")
    (model / "toyworld.json").write_text('{"recommended": {"scheduler": "euler"}}')
    assert main(["generate", "a red circle", "--model", str(model), "--steps", "2", "--out", str(tmp_path / "o")]) == 0
    record = json.loads(next((tmp_path / "o").glob("*.json")).read_text())
    assert (record["scheduler"], record["scheduler_name"]) == ("EulerDiscreteScheduler", "euler")
    assert record["sources"]["scheduler"] == "model"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--update-intervals", "2:0"], "got '2:0'"),
        (["--update-intervals", "0:1,1:2:3"], "got '1:2:3'"),
        (["--update-intervals", ":2"], "got ':2'"),
        (["--reward", "1e7*toy-clip"], "got '1e7'"),
        (["--reward", "0.5e7*toy-clip+toy-clip"], "got '0.5e7'"),
    ],
)
def test_a_refusal_quotes_a_list_item_or_a_weight_as_typed(tmp_path, capsys, argv, message):
    """Round nine: `--update-intervals 2:0` was quoted as `[2, 0]`, `1:2:3` as `'2:3'`; a reward weight as Python
    spells the float it read (`10000000.0`)."""
    assert main(["generate", "a red circle", "--steps", "4", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists(), err


def test_run_json_names_a_field_that_is_none_of_its_own(tmp_path, capsys):
    """Round nine: an unknown run.json key was kept without a word; one inside a method's DATE settings showed
    Python's `__init__() got an unexpected keyword argument`."""
    out = tmp_path / "run"
    assert main(_bench(out, "--methods", "date")) == 0
    run = json.loads((out / "run.json").read_text())
    capsys.readouterr()
    for change, message in (
        (lambda r: r.update(stpes=8), "field 'stpes' is none of its fields"),
        (lambda r: r["methods"]["date"]["date"].update(foo=1), "'foo' is no DATE setting"),
    ):
        edited = json.loads(json.dumps(run))
        change(edited)
        (out / "run.json").write_text(json.dumps(edited))
        assert main(["report", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and "unexpected keyword" not in err and len(err.strip().splitlines()) == 1, err


def test_a_file_output_over_a_pipe_or_device_is_refused_even_with_overwrite(tmp_path, capsys):
    """Round nine: `toyworld audit --out FIFO --overwrite` replaced the FIFO (as root, /dev/null itself) with a
    regular file; an output file's name that is a device, pipe or socket is refused before any work."""
    import os
    import stat

    fifo = tmp_path / "ff"
    os.mkfifo(fifo)
    for out, kind in ((str(fifo), "a FIFO"), ("/dev/null", "a device")):  # each named as what it is
        assert main(["toyworld", "audit", str(tmp_path), "--out", out, "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert f"it is {kind}, which a file" in err and len(err.strip().splitlines()) == 1, err
    assert stat.S_ISFIFO(fifo.stat().st_mode) and stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_prompt_cut_from_a_prompts_file_is_named_by_the_file(tmp_path, capsys):
    """Round nine: a line of a prompts file cut to what encoders read was named `PROMPT`, which was not given."""
    (tmp_path / "p.txt").write_text("a red circle\n" + "a blue square " * 3000 + "\n")
    assert main(["generate", "a cat", "--prompts-file", str(tmp_path / "p.txt"), "--steps", "1", "--out",
                 str(tmp_path / "o")]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert f"note: prompt 2 of --prompts-file {str(tmp_path / 'p.txt')!r} has 41,999 characters" in err, err
    assert "PROMPT" not in err


def test_info_json_prints_json_alone_one_object_per_image(tmp_path, capsys):
    """Round nine: `info --json` printed a `== PATH` line before each record, so its output was no JSON a reader
    (jq, json.load) could take; it prints one object per image (`image`, `record`, `parameters`) and nothing else."""
    from PIL import PngImagePlugin

    assert main(["generate", "a red circle", "--steps", "1", "--compare", "--out", str(tmp_path / "o")]) == 0
    other = PngImagePlugin.PngInfo()
    other.add_text("parameters", "a cat\nSteps: 20, Seed: 1")
    Image.new("RGB", (8, 8)).save(tmp_path / "a1111.png", pnginfo=other)
    images = [str(tmp_path / "o" / "a-red-circle-s0.png"), str(tmp_path / "a1111.png")]
    capsys.readouterr()
    assert main(["info", "--json", *images]) == 0
    out, decoder, shown = capsys.readouterr().out.strip(), json.JSONDecoder(), []
    while out:
        value, end = decoder.raw_decode(out)
        shown.append(value)
        out = out[end:].strip()
    assert [s["image"] for s in shown] == images
    assert shown[0]["record"]["seed"] == 0 and shown[0]["parameters"] is None and shown[0]["sealed"] is True
    assert shown[1] == {"image": images[1], "record": None, "parameters": "a cat\nSteps: 20, Seed: 1", "sealed": False,
                        "changed_by_another_program": None}  # fmt: skip


def test_the_python_api_never_replaces_a_device_with_a_file(tmp_path):
    """Round nine's class, in Python: every file is written by renaming a finished temporary file over its name
    (`outputs.atomic_path`), which would replace a FIFO or /dev/null itself; such a name is refused."""
    import os
    import stat

    from date_diffusion.outputs import atomic_write

    fifo = tmp_path / "ff"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a FIFO"), (Path("/dev/null"), "a device")):
        with pytest.raises(ValueError, match=f"is {kind}, which a file written there would replace"):
            atomic_write(path, b"x")
    assert stat.S_ISFIFO(fifo.stat().st_mode) and stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_an_edits_images_say_what_they_are_and_an_unread_negative_prompt_is_said(tmp_path, capsys):
    """Round nine: every image `edit` writes carried the DATE edit's settings and updates (`info` showed them for
    the input picture), and a negative prompt neither guidance reads was taken without a word."""
    from date_diffusion.outputs import read_png_metadata

    Image.new("RGB", (64, 64), "white").save(tmp_path / "in.png")
    argv = ["edit", str(tmp_path / "in.png"), "--source-prompt", "a red circle", "--target-prompt", "a blue circle",
            "--steps", "4", "--cfg-src", "1", "--cfg-tar", "1", "--negative-prompt", "blurry", "--out",
            str(tmp_path / "e")]  # fmt: skip
    assert main(argv) == 0
    assert "note: --negative-prompt has no effect here: no negative branch runs" in capsys.readouterr().err
    records = {p.stem.rsplit("-", 1)[1]: read_png_metadata(p)["record"] for p in (tmp_path / "e").glob("*.png")}
    assert records["date"]["date"] is not None and records["date"]["trace"]["updates"]
    for name in ("input", "reconstruction", "plain"):
        assert records[name]["image"] == name and records[name]["date"] is None and records[name]["trace"] is None
    assert records["reconstruction"]["prompt"] == "a red circle" and records["plain"]["prompt"] == "a blue circle"
    assert all(r["negative_prompt"] is None and "negative_prompt" in r["without_effect"] for r in records.values())
    assert main(["info", str(next((tmp_path / "e").glob("*-input.png")))]) == 0
    out = capsys.readouterr().out
    assert "this image: the picture given to edit" in out and "update at step" not in out and "DATE" not in out, out


def test_a_folder_that_is_no_model_is_named_without_an_exception_name(tmp_path, capsys):
    """Round nine: a folder of images given as --model was refused with `(OSError: no model_index.json in ...)`."""
    (tmp_path / "pictures").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "pictures" / "a.png")
    assert main(["generate", "a red circle", "--model", str(tmp_path / "pictures"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "the folder has no model_index.json" in err and "Error" not in err.split("error:", 1)[1], err


def test_overwrite_replaces_the_whole_group_of_an_image(tmp_path):
    """Round nine: `--overwrite` replaced the image and its record but left the earlier run's fixed image, grid and
    embeddings beside them (a replay of those embeddings made another image)."""
    out = tmp_path / "o"
    assert main(["generate", "a red circle", "--steps", "2", "--compare", "--save-embeddings", "--out", str(out)]) == 0
    assert main(["generate", "a red circle", "--steps", "2", "--rho", "1", "--overwrite", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a-red-circle-s0.json", "a-red-circle-s0.png"]


def test_info_refuses_one_image_given_twice(tmp_path, capsys, monkeypatch):
    """Round nine: one image given twice (under one name or two) was shown twice."""
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "a red circle", "--steps", "1", "--out", "o"]) == 0
    capsys.readouterr()
    assert main(["info", "o/a-red-circle-s0.png", "./o/a-red-circle-s0.png"]) == 2
    assert "IMAGES names 'o/a-red-circle-s0.png' twice (also as './o/a-red-circle-s0.png')" in capsys.readouterr().err
    (tmp_path / "allowed").mkdir()
    assert main(["ui", "--allow-path", "allowed", "--allow-path", "./allowed/"]) == 2  # round ten: any path option
    assert "--allow-path names 'allowed' twice (also as './allowed/')" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, message",
    [('{"suite": "toy", "seeds": [true], "steps": 4, "model": "m", "methods": {}}', "got [true]"),
     ('{"suite": "toy", "seeds": [1], "steps": true, "model": "m", "methods": {}}', "got true"),
     ('{"suite": "toy", "seeds": [1], "steps": 4.50, "model": "m", "methods": {}}', "got 4.50"),
     ('{"suite": "toy", "seeds": [1], "steps": 4, "model": null, "methods": {}}', "'model' must be text, got null"),
     ('{"suite": "toy", "seeds": [1], "steps": -0, "model": "m", "methods": {}}', "got -0"),
     ('{"suite": "toy", "seeds": [-0, 1e0], "steps": 4, "model": "m", "methods": {}}', "got [-0, 1e0]")],
)  # fmt: skip
def test_a_schema_quotes_a_value_as_the_file_spells_it(text, message):
    """Round ten: the schemas quoted JSON's `true` as Python's `True`. Round twenty-four: `-0` (the one integer
    JSON spells otherwise than its digits) was quoted as `0`."""
    from date_diffusion.schemas import RUN, loads

    assert message in RUN.problem(loads(text))


def test_no_command_replaces_a_pipe_in_its_output_folder_or_its_own_input(tmp_path, capsys):
    """Round ten: `generate --overwrite` replaced a FIFO named as its image; `edit --overwrite` replaced the image it
    edited; `report` failed (exit 1) on a FIFO `results.md` after its work. Each is refused before any work."""
    import os
    import stat

    (tmp_path / "ff").mkdir()
    os.mkfifo(tmp_path / "ff" / "a-red-circle-s0.png")
    assert main(["generate", "a red circle", "--steps", "1", "--out", str(tmp_path / "ff"), "--overwrite"]) == 2
    assert "it holds 'a-red-circle-s0.png', a FIFO, which an output file" in capsys.readouterr().err
    assert stat.S_ISFIFO((tmp_path / "ff" / "a-red-circle-s0.png").stat().st_mode)
    (tmp_path / "e").mkdir()
    Image.new("RGB", (64, 64), "white").save(tmp_path / "e" / "b-s0-date.png")
    argv = ["edit", str(tmp_path / "e" / "b-s0-date.png"), "--source-prompt", "a", "--target-prompt", "b", "--steps",
            "2", "--out", str(tmp_path / "e"), "--overwrite"]  # fmt: skip
    assert main(argv) == 2
    assert "the image being edited" in capsys.readouterr().err and len(list((tmp_path / "e").iterdir())) == 1
    out = tmp_path / "run"
    assert main(_bench(out)) == 0
    (out / "results.md").unlink()
    os.mkfifo(out / "results.md")
    capsys.readouterr()
    assert main(["report", str(out)]) == 2
    assert "it holds 'results.md', a FIFO, which an output file" in capsys.readouterr().err


def test_a_replay_with_overwrite_keeps_the_embeddings_it_replays(tmp_path):
    """`--overwrite` removes the earlier group's members it does not write again, never the file a replay reads."""
    out = tmp_path / "o"
    assert main(["generate", "a red circle", "--steps", "2", "--save-embeddings", "--out", str(out)]) == 0
    saved = out / "a-red-circle-s0-embeddings.safetensors"
    assert main(["generate", "--replay-embeddings", str(saved), "--out", str(out), "--overwrite"]) == 0
    assert saved.is_file() and (out / "a-red-circle-s0.png").is_file()


def _saved_then_changed(tmp_path, capsys, change) -> Path:
    """Embeddings saved from a copy of the toy world, then `change(model)`: a replay of them is refused."""
    import shutil

    from date_diffusion import TOY_WORLD

    model = tmp_path / "model"
    shutil.copytree(TOY_WORLD, model)
    argv = ["generate", "a red circle", "--steps", "2", "--model", str(model), "--save-embeddings"]
    assert main([*argv, "--out", str(tmp_path / "s")]) == 0
    saved = next((tmp_path / "s").glob("*-embeddings.safetensors"))
    change(model)
    capsys.readouterr()
    assert main(["generate", "--replay-embeddings", str(saved), "--out", str(tmp_path / "r")]) == 2
    assert "was saved with other files of the model" in capsys.readouterr().err
    return saved


def test_a_replay_over_a_model_that_changed_since_is_named(tmp_path, capsys):
    """Round ten: a replay re-created "the DATE image" with a model whose scheduler or configs changed since the
    file was saved, without a word (and its record credited the file for the model's new scheduler)."""

    def edit_config(model):
        config = model / "scheduler" / "scheduler_config.json"
        config.write_text(config.read_text().replace('"beta_end": 0.012', '"beta_end": 0.02'))

    saved = _saved_then_changed(tmp_path, capsys, edit_config)
    _rewrite(saved, lambda meta, t: (meta.pop("model_files"), meta.pop("model_content"),
                                     meta.update(scheduler='"EulerDiscreteScheduler"')))  # fmt: skip
    assert main(["generate", "--replay-embeddings", str(saved), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "was sampled with EulerDiscreteScheduler, and the model now samples with DDIMScheduler" in err, err
    assert not (tmp_path / "r").exists()


def test_an_image_states_the_batch_it_was_sampled_in_and_its_replay_says_it_is_alone(tmp_path, capsys):
    """Round twenty-six: `generate --help` said results do not depend on --batch-size, yet a batch's float sums do
    (a level in a pixel or two), so a replay of an image sampled in a batch of 4 differed without a word. Each
    record states its batch; a replay of an image sampled with others says it is sampled alone."""
    out = tmp_path / "o"
    argv = ["generate", "a red circle", "a blue square", "--steps", "2", "--save-embeddings", "--out", str(out)]
    assert main(argv) == 0
    record = json.loads((out / "a-red-circle-s0.json").read_text())
    assert record["batch_size"] == 2
    capsys.readouterr()
    saved = out / "a-red-circle-s0-embeddings.safetensors"
    assert main(["generate", "--replay-embeddings", str(saved), "--out", str(tmp_path / "r")]) == 0
    assert "its image was sampled in a batch of 2, the replay alone" in capsys.readouterr().err
    assert json.loads((tmp_path / "r" / "a-red-circle-s0.json").read_text())["batch_size"] == 1


def test_a_replay_runs_in_the_precision_its_file_was_sampled_in(tmp_path, capsys):
    """Round twenty-five: embeddings saved with `--dtype float16` were refused on replay as "from another embedding"
    unless --dtype was given again, the file's own dtype never named: a replay takes it from the file, as its
    seed and steps; another one given is refused naming it."""
    out = tmp_path / "s"
    assert main(["generate", "a red circle", "--steps", "2", "--dtype", "float16", "--save-embeddings", "--out",
                 str(out)]) == 0  # fmt: skip
    saved = out / "a-red-circle-s0-embeddings.safetensors"
    assert main(["generate", "--replay-embeddings", str(saved), "--out", str(tmp_path / "r")]) == 0
    a, b = (np.asarray(Image.open(p / "a-red-circle-s0.png")) for p in (out, tmp_path / "r"))
    assert np.array_equal(a, b)
    capsys.readouterr()
    argv = ["generate", "--replay-embeddings", str(saved), "--dtype", "float32", "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "was sampled in float16, and --dtype float32 would replace it" in err and not (tmp_path / "x").exists()


def test_a_replay_over_a_model_changed_in_the_middle_of_its_weights_is_named(tmp_path, capsys):
    """Round twenty-three: one layer changed (same size, same first and last MiB) passed the sampled `model_files`
    and was replayed as the saved model; a saved file states `model_content` (every file whole), which a replay
    checks. A file that states only `model_files` (an earlier version's) is compared by it."""

    def flip_a_middle_bit(model):
        weights = model / "unet" / "diffusion_pytorch_model.safetensors"
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 1  # one bit of one weight, more than a MiB from either end
        weights.write_bytes(bytes(data))

    saved = _saved_then_changed(tmp_path, capsys, flip_a_middle_bit)
    _rewrite(saved, lambda meta, t: meta.pop("model_content"))  # an earlier version's file: sizes and ends only
    assert main(["generate", "--replay-embeddings", str(saved), "--out", str(tmp_path / "r")]) == 0


def test_a_link_at_any_level_of_a_runs_images_is_named(tmp_path, capsys):
    """Round ten: a prompt folder or its `samples/` that is a symbolic link was followed, and the run wrote its
    images into another run's folder; and a record without its PNG was named with an exception name."""
    import shutil

    out, other = tmp_path / "run", tmp_path / "other"
    assert main(_bench(out)) == 0 and main(_bench(other)) == 0
    samples = next((out / "images").glob("*/*/samples"))
    for link in (samples, samples.parent):
        backup = tmp_path / "kept"
        shutil.move(link, backup)
        link.symlink_to(other / link.relative_to(out), target_is_directory=True)
        capsys.readouterr()
        assert main(_bench(out)) == 2
        assert f"{link} is a symbolic link, not a folder a run writes" in capsys.readouterr().err
        link.unlink()
        shutil.move(backup, link)
    png = next(samples.glob("*.png"))
    png.unlink()
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{png} is missing beside its record {png.stem}.json" in err and "Error" not in err, err


def test_a_negative_prompt_longer_than_the_encoder_reads_is_said_with_what_is_cut(tmp_path, capsys):
    """Round ten: the words of a negative prompt past the text encoder's tokens were dropped without a word (and
    transformers' "will result in indexing errors" notice, which is wrong here, was shown)."""
    negative = (
        "a red circle to the left of a blue square and a green triangle to the right of a yellow cross and "
        "two big red circles"
    )
    argv = ["generate", "a red circle", "--negative-prompt", negative, "--steps", "1", "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    note = "note: --negative-prompt has 28 tokens and the text encoder reads 24: 'two big red circles' is not read"
    assert f"date-diffusion generate: {note}" in err and "indexing errors" not in err, err


def test_a_reward_decoder_the_model_file_names_is_named_by_that_file(tmp_path, capsys):
    """Round ten: a model file's `reward_decoder` that is no folder was blamed on `--reward-decoder tiny`."""
    model = _toy_copy(tmp_path, "model")
    meta = json.loads((model / "toyworld.json").read_text())
    (model / "toyworld.json").write_text(json.dumps({**meta, "reward_decoder": "nowhere"}))
    argv = ["generate", "a red circle", "--model", str(model), "--reward-decoder", "tiny", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert f"{model / 'toyworld.json'}: reward_decoder 'nowhere'" in capsys.readouterr().err


@pytest.mark.parametrize("key, value", [("seed", "5"), ("guidance_scale", "7.5"), ("negative_prompt", '"blurry"'),
                                        ("reward", '"nonsense"'), ("dtype", '"float16"')])  # fmt: skip
def test_a_replay_file_edited_by_hand_is_named_by_its_seal(tmp_path, capsys, key, value):
    """Round ten: a saved file whose seed, guidance or negative prompt was edited replayed as an image no run made;
    every file is sealed when written (`embeddings._seal`), and one changed since is named."""
    assert main(["generate", "a red circle", "--steps", "2", "--save-embeddings", "--out", str(tmp_path / "s")]) == 0
    saved = next((tmp_path / "s").glob("*-embeddings.safetensors"))
    _rewrite(saved, lambda meta, t: meta.update({key: value}), reseal=False)
    capsys.readouterr()
    assert main(["generate", "--replay-embeddings", str(saved), "--out", str(tmp_path / "r")]) == 2
    assert "its content was changed since it was written" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, message", [(["generate", "a", "--out", " "], "--out must be a non-empty text, got ' '"),
                                           (["generate", "a", "--steps", " 0", "--out", "o"], "got ' 0'"),
                                           (["generate", "a", "--out", "   "], "non-empty text, got '   '"),
                                           (["generate", "   ", "--out", "o"], "no visible character in '   '")],
                         )  # fmt: skip
def test_a_blank_value_is_quoted_with_its_blanks(tmp_path, capsys, monkeypatch, argv, message):
    """Round ten: a value of blanks was quoted as `''`, the blanks stripped; round eleven: three spaces were
    quoted as one (a message's runs of spaces were joined)."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_a_resume_that_adds_a_method_making_a_recorded_ones_images_is_refused(tmp_path, capsys):
    """Round eleven: the same list in one command was refused, but a resume added `date:rho=0.5` beside the run's
    `date` (the same images, a second row of the same numbers)."""
    out = tmp_path / "run"
    assert main(_bench(out, "--methods", "fixed date")) == 0
    capsys.readouterr()
    assert main(_bench(out, "--methods", "fixed date:rho=0.5")) == 2
    assert "'date:rho=0.5' makes the same images as 'date'" in capsys.readouterr().err
    assert main(_bench(out, "--methods", "fixed date")) == 0  # the run's own methods resume


def test_an_audit_never_writes_into_the_run_it_audits(tmp_path, capsys):
    """Round eleven: `toyworld audit RUN --out RUN/run.json --overwrite` replaced the run's settings file."""
    out = tmp_path / "run"
    assert main(_bench(out)) == 0
    before = (out / "run.json").read_text()
    capsys.readouterr()
    assert main(["toyworld", "audit", str(out), "--out", str(out / "run.json"), "--overwrite"]) == 2
    assert "lies inside the bench run" in capsys.readouterr().err and (out / "run.json").read_text() == before


def test_an_interval_past_the_run_is_spelled_as_the_options_write_it(tmp_path, capsys):
    """Round eleven: `--update-intervals 0:5` past a 4-step run was quoted `[(0, 5)]`."""
    argv = ["generate", "a red circle", "--steps", "4", "--update-intervals", "0:5", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "--update-intervals 0:5 end past the run" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["a-red-circle-s0-fixed.png", "a-red-circle-s0-embeddings.safetensors"])
def test_overwrite_never_removes_a_users_file_that_only_has_a_group_members_name(tmp_path, capsys, name):
    """Round fifteen: `generate --overwrite` (no --compare) removed a user's `a-red-circle-s0-fixed.png`, a text
    file no run wrote, as a stale member of an earlier group. Only an earlier output of date-diffusion is removed
    (`outputs.package_output`); anything else is named before any work. A real earlier group is still replaced
    whole."""
    out = tmp_path / "o"
    out.mkdir()
    (out / name).write_text("precious")
    argv = ["generate", "a red circle", "--steps", "2", "--out", str(out)]
    assert main([*argv, "--overwrite"]) == 2
    assert f"--overwrite would remove {str(out / name)!r}, which is no earlier output" in capsys.readouterr().err
    assert (out / name).read_text() == "precious" and sorted(p.name for p in out.iterdir()) == [name]
    (out / name).unlink()
    assert main([*argv, "--compare", "--save-embeddings"]) == 0
    assert main([*argv, "--overwrite"]) == 0  # the earlier group's grid, fixed image and embeddings go
    assert sorted(p.name for p in out.iterdir()) == ["a-red-circle-s0.json", "a-red-circle-s0.png"]


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("a-red-circle-s0-fixed.png", ["--compare"]),  # a name this run writes
        ("a-red-circle-s0.json", []),  # the record's own name, a JSON file of the user's
        ("a-red-circle-s0.png", []),
        ("a-red-circle-s0-embeddings.safetensors", ["--save-embeddings"]),
    ],
)
def test_overwrite_never_replaces_a_users_file_with_a_name_the_run_writes(tmp_path, capsys, name, extra):
    """Round eighteen: `generate --overwrite --compare` replaced a user's text file named
    `a-red-circle-s0-fixed.png` with the fixed image (and a user's `a-red-circle-s0.json` with the record): only the
    names the run would remove were checked. Every name --overwrite replaces or removes is checked alike
    (`cli.common.check_overwrite`), beside an earlier group of the run's own or alone."""
    out = tmp_path / "o"
    argv = ["generate", "a red circle", "--steps", "2", "--out", str(out), *extra]
    for earlier in (False, True):
        if earlier:  # beside a real earlier group: the user's file is still named
            assert main(argv) == 0
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_text('{"my": "notes"}')
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        capsys.readouterr()
        assert main([*argv, "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert f"--overwrite would replace {str(out / name)!r}, which is no earlier output of date-diffusion" in err
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        for p in out.iterdir():
            p.unlink()


def test_overwrite_never_replaces_a_users_link_or_a_file_beside_an_edit(tmp_path, capsys):
    """Round eighteen: a user's link with a member's name was removed by --overwrite without a word, and `edit
    --overwrite` replaced a user's file named like its grid."""
    out = tmp_path / "o"
    argv = ["generate", "a red circle", "--steps", "2", "--out", str(out)]
    assert main([*argv, "--compare"]) == 0
    kept = tmp_path / "keep.png"
    (out / "a-red-circle-s0-compare.png").rename(kept)
    (out / "a-red-circle-s0-compare.png").symlink_to(kept)  # an earlier output of ours, behind a user's link
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 2
    assert "would remove" in capsys.readouterr().err and (out / "a-red-circle-s0-compare.png").is_symlink()
    Image.new("RGB", (32, 32), "red").save(tmp_path / "in.png")
    (out / "a-blue-circle-s0-grid.png").write_text("my notes")
    edit = ["edit", str(tmp_path / "in.png"), "--source-prompt", "a red circle", "--target-prompt", "a blue circle",
            "--steps", "2", "--out", str(out), "--overwrite"]  # fmt: skip
    assert main(edit) == 2
    assert f"--overwrite would replace {str(out / 'a-blue-circle-s0-grid.png')!r}" in capsys.readouterr().err
    assert (out / "a-blue-circle-s0-grid.png").read_text() == "my notes"
    (out / "a-blue-circle-s0-grid.png").unlink()
    assert main(edit[:-1]) == 0 and main(edit) == 0  # an earlier edit of ours is replaced whole
    assert (out / "a-blue-circle-s0-grid.png").is_file() and not list(out.glob("a-blue-circle-s0-2*"))


@pytest.mark.parametrize("command", ["generate", "edit"])
def test_overwrite_onto_a_folder_of_an_outputs_name_is_refused_before_any_work(tmp_path, capsys, command):
    """Round eleven: `generate --overwrite` where an output's name was a folder made the image, then failed with
    IsADirectoryError; every name --overwrite would replace is checked before any work, the folder kept."""
    out = tmp_path / "o"
    if command == "generate":
        blocker = out / "a-red-circle-s1-fixed.png"
        argv = ["generate", "a red circle", "--seed", "0", "--images-per-prompt", "2", "--compare"]
    else:
        Image.new("RGB", (32, 32), "red").save(tmp_path / "in.png")
        blocker = out / "a-blue-circle-s0.json"
        argv = ["edit", str(tmp_path / "in.png"), "--source-prompt", "a red circle", "--target-prompt",
                "a blue circle"]  # fmt: skip
    blocker.mkdir(parents=True)
    assert main([*argv, "--steps", "2", "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"--overwrite would replace {str(blocker)!r}, which is a folder, not a file" in err, err
    assert [p.name for p in out.iterdir()] == [blocker.name] and blocker.is_dir()


def test_a_t2i_compbench_export_of_a_prompt_too_long_for_a_file_name_is_refused_before_the_run(tmp_path, capsys):
    """Round eleven: `bench --export t2i-compbench` over a 300-character prompt ran, then failed with OSError
    (name too long), leaving empty folders."""
    (tmp_path / "p.txt").write_text("a red circle " * 23 + "\n")
    argv = ["bench", "--suite", "prompts", "--prompts-file", str(tmp_path / "p.txt"), "--steps", "1", "--limit",
            "1", "--seeds", "1", "--methods", "fixed", "--out", str(tmp_path / "run"), "--export", "t2i-compbench",
            str(tmp_path / "t2i")]  # fmt: skip
    assert main(argv) == 2
    assert "makes a T2I-CompBench file name of 309 bytes, longer than file systems take (255)" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "run").exists() and not (tmp_path / "t2i").exists()


def test_an_export_that_fails_part_way_leaves_its_folder_as_it_was(tmp_path, monkeypatch):
    """An export interrupted between methods (a full disk) removes what it wrote: never a half export that looks
    whole."""
    from date_diffusion.bench import export

    out = tmp_path / "run"
    assert main(_bench(out, "--methods", "fixed date")) == 0
    copied = []

    def copy_then_fail(src, dst):
        if copied:
            raise OSError(28, "No space left on device")
        copied.append(dst)
        return Path(dst).write_bytes(Path(src).read_bytes())

    monkeypatch.setattr(export.shutil, "copyfile", copy_then_fail)
    for target in (tmp_path / "new", tmp_path / "empty"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        copied.clear()
        with pytest.raises(OSError, match="No space left"):
            export.export_run(out, ["fixed", "date"], "t2i-compbench", target)
        assert copied and (not target.exists() if target.name == "new" else not any(target.iterdir()))


@pytest.mark.parametrize("command", ["train", "train-judge"])
def test_training_never_writes_into_a_folder_of_other_files(tmp_path, capsys, command):
    """Round eleven: `toyworld train --out` trained into any folder (a bench run, a user's pipeline/); a folder
    that holds other files and no training run's settings is refused, nothing written into it."""
    (tmp_path / "run.json").write_text("{}")
    (tmp_path / "pipeline").mkdir()
    assert main(["toyworld", command, "--out", str(tmp_path), "--smoke"]) == 2
    err = capsys.readouterr().err
    assert f"--out {str(tmp_path)!r} holds other files (pipeline, run.json) and is no `toyworld {command}`" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipeline", "run.json"]


@pytest.mark.parametrize("argv, named", [(["generate", "--", "-a", "--steps", "4"], "--steps"),
                                         (["info", "--", "x.png", "--json"], "--json"),
                                         (["generate", "--", "-a", "--steps=4"], "--steps=4")])  # fmt: skip
def test_an_option_after_the_double_dash_is_named_not_taken_as_text(tmp_path, capsys, monkeypatch, argv, named):
    """Round eleven: `generate -- "-a" --steps 4 --out x` made images of the prompts `--steps`, `4`, `--out`."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:  # argparse's own refusal
        main([*argv, "--out", "x"] if argv[0] == "generate" else argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert f"error: {named!r} comes after `--`, so it is read as text, not as the option" in err, err
    assert not list(tmp_path.iterdir())


@pytest.mark.filterwarnings("default::FutureWarning")  # the suite's configuration ignores them
def test_an_outdated_scheduler_configuration_is_said_in_one_short_note(tmp_path, capsys):
    """Round eleven: a scheduler configuration with `steps_offset: 0` gave diffusers' 700-character deprecation
    (the whole configuration quoted), and what it changed was not said plainly."""
    model = _toy_copy(tmp_path, "m")
    path = model / "scheduler" / "scheduler_config.json"
    path.write_text(path.read_text().replace('"steps_offset": 1', '"steps_offset": 0'))
    assert main(["generate", "a red circle", "--model", str(model), "--steps", "2", "--out", str(tmp_path / "o")]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "steps_offset" in line]
    assert len(notes) == 1 and len(notes[0]) < 300, notes
    assert "has steps_offset 0: the images sample with steps_offset 1" in notes[0], notes


@pytest.mark.parametrize("change", [{"reward_resolution": 3}, {"method": "banana"}, {"loras": [["x", 1e9]]},
                                    {"sources": {"guidance_scale": "wizard"}}, {"dtype": "float99"}])  # fmt: skip
def test_info_names_a_record_changed_since_it_was_written_whatever_the_field(tmp_path, capsys, change):
    """Round eleven: `info` showed a record whose fields had been edited by hand (reward_resolution 3, a LoRA
    scale of 1e9, method "banana", a source "wizard"): every file's record is sealed when written, and one changed
    since is named, whatever field changed; a record without a seal (an earlier version's) is shown with a note."""
    from PIL import Image, PngImagePlugin

    assert main(["generate", "a red circle", "--steps", "2", "--out", str(tmp_path / "g")]) == 0
    src = tmp_path / "g" / "a-red-circle-s0.png"
    with Image.open(src) as image:
        image.load()
        record = json.loads(image.text["date-diffusion"])
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", image.text["parameters"])
        info.add_text("date-diffusion", json.dumps({**record, **change}))
        image.save(tmp_path / "edited.png", pnginfo=info)
    capsys.readouterr()
    assert main(["info", str(tmp_path / "edited.png")]) == 2
    assert "its record was changed since it was written (its seal no longer matches" in capsys.readouterr().err
    assert main(["info", str(src)]) == 0 and "carries no seal" not in capsys.readouterr().err
    unsealed = _png_with(tmp_path, "unsealed.png", record_change={})
    assert main(["info", str(unsealed)]) == 0 and "its record carries no seal" in capsys.readouterr().err


def test_a_png_given_for_its_embeddings_is_named_as_the_image(tmp_path, capsys):
    """Round eleven: `--replay-embeddings x.png` said `SafetensorError: header too large`; it says the file is the
    image and names the file to give."""
    assert main(["generate", "a red circle", "--steps", "2", "--save-embeddings", "--out", str(tmp_path / "g")]) == 0
    capsys.readouterr()
    png = tmp_path / "g" / "a-red-circle-s0.png"
    assert main(["generate", "--replay-embeddings", str(png), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "is a PNG image, not an embeddings file: give the NAME-embeddings.safetensors" in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("delay", [0.5, 1.0, 2.5, 4.0])
def test_sigterm_while_the_page_starts_ends_it_with_code_0_and_no_temporary_folder(tmp_path, delay):
    """Round twelve: SIGTERM about 4 s into `ui` (its imports) gave a dropped KeyboardInterrupt's traceback, the
    watchdog's 5 s and code 143, and left the page's folder; at other moments code 130. Whenever it comes, the page
    ends with code 0, "stopped", and no folder of its own left."""
    import signal
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "date_diffusion", "ui", "--port", str(port), "--device", "cpu"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
    out, err = proc.stdout.read(), proc.stderr.read()
    assert code == 0 and "stopped" in out and "Traceback" not in err and "Exception ignored" not in err, (code, err)
    assert not list(tmp_path.glob("date-diffusion-ui-*"))


@pytest.mark.parametrize("where", ["__del__", "weakref callback"])
def test_an_interrupt_that_would_be_dropped_is_sent_again(monkeypatch, capsys, where):
    """Python prints and drops an exception raised inside `__del__` or a weakref callback (the fresh-clone CI found
    SIGTERM inside an import lock's callback, `_get_module_lock.<locals>.cb`, printing "Exception ignored"): the
    dropped interrupt is not printed, and the signal is sent again a moment later (`cli.main._resend_dropped`)."""
    import signal
    import time
    import weakref

    from date_diffusion.cli import main as cli_main

    sent = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    monkeypatch.setattr(cli_main, "_INTERRUPTED", cli_main.threading.Event())  # this test's own
    monkeypatch.setattr(sys, "unraisablehook", cli_main._resend_dropped)

    class Finalized:
        def __del__(self):
            cli_main._interrupt(signal.SIGTERM, sys._getframe())

    if where == "__del__":
        Finalized()  # collected at once: its __del__ runs the handler
    else:
        target = Finalized.__new__(Finalized)
        Finalized.__del__ = lambda self: None
        ref = weakref.ref(target, lambda _: cli_main._interrupt(signal.SIGTERM, None))  # noqa: F841
        del target
    time.sleep(0.3)
    assert sent == [(os.getpid(), signal.SIGTERM)]
    assert "Exception ignored" not in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt):  # anywhere else: raised where it is
        cli_main._interrupt(signal.SIGTERM, sys._getframe())


@pytest.mark.parametrize("spec, message", [
    ("toy-clip*2", "reward term 'toy-clip*2': the weight goes before the reward: 2*toy-clip"),
    ("1*1*toy-clip", "has more than one weight"),
    ("1e9*toy-clip", "the weight must be a finite number >= -1000000 and <= 1000000, got '1e9'"),
    ("mean(toy-clip)", "mean(toy-clip) is the mean of one reward, which is that reward: write toy-clip"),
    ("subjects(subjects(toy-clip))", "splits the prompt's subjects inside a split"),
    ("subjects(0.5*toy-clip+subjects(toy-clip-s1))", "splits the prompt's subjects inside a split"),
    ("toy-clip 0.5*toy-clip-eval", "holds a space: the terms of a sum are joined by '+'"),  # was: a bad weight
    ("aug2(toy-clip toy-clip-eval)", "reward term 'toy-clip toy-clip-eval' holds a space"),
])  # fmt: skip
def test_a_reward_spec_that_says_something_else_than_it_does_is_refused(tmp_path, capsys, spec, message):
    """Round twelve: a weight after its reward was blamed on the reward's name as a weight, a bound was quoted
    `1e+06`, and a mean of one reward or subjects inside subjects ran without a word."""
    assert main(["generate", "a red circle", "--steps", "2", "--reward", spec, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_a_number_option_is_quoted_as_typed_by_a_commands_own_check(tmp_path, capsys):
    """Round twelve: `edit --strength 1e-9` was quoted `1e-09` by edit's own check."""
    Image.new("RGB", (64, 64), "red").save(tmp_path / "in.png")
    argv = ["edit", str(tmp_path / "in.png"), "--source-prompt", "a red circle", "--target-prompt", "a blue circle",
            "--steps", "4", "--strength", "1e-9", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2
    assert "--strength 1e-9 regenerates no step of 4" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["generate", "a red circle", "--steps", "4", "--update-steps", "0,0009"], "--update-steps 0009 are outside"),
        (["generate", "a red circle", "--steps", "4", "--update-intervals", "0:0009"], "--update-intervals 0:0009 end"),
        (["generate", "a red circle", "--update-intervals", "0:0009,1:2"], "the intervals 0:0009 and 1:2 overlap"),
        (["generate", "a red circle", "--update-steps", "1,01"], "lists 01 (the same as 1) twice, got 1,01"),
        (["bench-perf", "--batch-size", "1,00"], "--batch-size must be an integer from 1 to 1024, got 00"),
    ],
)
def test_an_integer_in_a_list_is_quoted_as_typed_by_a_later_check(tmp_path, capsys, argv, said):
    """Round thirteen's leftovers: `--update-steps 0,0009` was refused as `9`, `bench-perf --batch-size 00` as `0`:
    an integer read from text keeps its spelling for every later message (`core.settings.SpelledInt`,
    `core.text.spelled`), and only there: what runs and what is recorded is the plain integer."""
    import json
    import pickle

    from date_diffusion.core.settings import parse_integer

    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert said in capsys.readouterr().err and not (tmp_path / "o").exists()
    typed = parse_integer("+007")
    assert (repr(typed), str(typed), f"{typed}", json.dumps([typed]), typed + 1) == ("7", "7", "7", "[7]", 8)
    assert pickle.loads(pickle.dumps(typed)).text == "+007" and type(parse_integer("7")) is int


def test_a_csv_without_a_prompt_column_names_its_header_as_written(tmp_path, capsys):
    """Round thirteen's leftover: a headerless CSV's first row was listed as a Python list of column names."""
    (tmp_path / "p.csv").write_text("a red circle,a blue square\n")
    assert main(["generate", "--prompts-file", str(tmp_path / "p.csv"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "the header, names 'a red circle', 'a blue square'; add a header line" in err and "[" not in err


def test_a_random_direction_without_normalizing_is_refused(tmp_path, capsys):
    """Round twelve: `--direction random --normalize false` moved the embedding 15.4 (rho times raw noise) where
    the ablation's point is DATE's distance (0.28): refused, in the Python API and every command."""
    from date_diffusion.core.config import DATEConfig

    with pytest.raises(ValueError, match="normalize false would step rho times the raw noise"):
        DATEConfig(direction="random", normalize=False)
    argv = ["generate", "a red circle", "--steps", "2", "--direction", "random", "--normalize", "false"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert "leave one of them out" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_a_relative_step_without_normalizing_is_refused_naming_where_it_came_from(tmp_path, capsys):
    """Round fourteen: `--normalize false --rho-relative 0.01` moved 0.78% of the embedding's norm where the option
    promises 1% (the fraction times the raw gradient): refused in DATEConfig, for every command and the API; where
    the relative step is the model's recommendation, the refusal says so, and `--rho` beside it runs."""
    from date_diffusion.core.config import DATEConfig

    with pytest.raises(ValueError, match="give rho \\(an absolute step\\) with normalize false"):
        DATEConfig(rho_relative=0.01, normalize=False)
    base = ["generate", "a red circle", "--steps", "2", "--normalize", "false", "--out", str(tmp_path / "o")]
    assert main([*base, "--rho-relative", "0.01"]) == 2
    assert "--normalize false steps rho times the raw gradient" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(base) == 2  # the toy world recommends a relative step
    assert "(--rho-relative 0.005 is the model's recommendation, which a value" in capsys.readouterr().err
    assert main([*base, "--rho", "0.5"]) == 0


@pytest.mark.parametrize("negative", ["   ", "\u200b", "\u3164"])
def test_a_negative_prompt_that_shows_nothing_is_refused_not_recorded_as_empty(tmp_path, capsys, negative):
    """Round fourteen: `--negative-prompt $'\u200b'` ran and was recorded as `''`, a text changed without a word;
    `''` itself stays a value."""
    argv = ["generate", "a red circle", "--steps", "2", "--rho", "0", "--out", str(tmp_path / "o")]
    assert main([*argv, "--negative-prompt", negative]) == 2
    from date_diffusion.core.text import spelled

    assert f"--negative-prompt shows nothing ({spelled(negative)}) and is not empty: give ''" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main([*argv, "--negative-prompt", ""]) == 0
    assert json.loads((tmp_path / "o" / "a-red-circle-s0.json").read_text())["negative_prompt"] == ""


@pytest.mark.parametrize("prompt", ["\ufe0f", "\u034f", "\u3164 "])
def test_an_empty_prompt_is_quoted_with_every_invisible_character_escaped(tmp_path, capsys, prompt):
    """Round fifteen: U+FE0F and U+034F (marks Python counts as printable) were quoted as they are, so the refusal
    read `''`: a text that shows nothing is quoted with each character that is no space escaped
    (`core.text.spelled`)."""
    assert main(["generate", prompt, "--out", str(tmp_path / "o")]) == 2
    shown = repr(prompt).replace(prompt.strip(), "\\u" + f"{ord(prompt.strip()):04x}")
    assert f"PROMPT is empty (no visible character in {shown})" in capsys.readouterr().err


def test_a_distance_too_small_for_three_decimals_is_shown_with_its_digits():
    """Round twelve: `--rho 1e-7` showed `moved 0.000` beside a record of 4.5e-08."""
    from date_diffusion.grids import distance_text

    assert [distance_text(d) for d in (0.0, 4.5e-8, 0.2771, 0.0004)] == ["0.000", "4.5e-08", "0.277", "0.0004"]


@pytest.mark.parametrize("command", ["generate", "edit", "audit", "audit-run-json", "export", "bench-perf", "bench",
                                     "train"])  # fmt: skip
def test_no_command_writes_into_a_bench_run(tmp_path, capsys, command):
    """Round twelve: `generate --out RUN/images/fixed/00000/samples` was taken, and the run's report then refused
    the run for the stray files. Round fifteen found the same in `toyworld audit --out` (also replacing a run's
    run.json with --overwrite), `report --export`, `bench-perf --out` and a `bench --out` nested in another run:
    every output option's kind checks it (`cli.common.OutputPath`, `check_outside_runs`)."""
    out = tmp_path / "run"
    assert main(_bench(out)) == 0
    capsys.readouterr()
    inside = out / "images" / "fixed" / "00000" / "samples"
    Image.new("RGB", (64, 64), "red").save(tmp_path / "in.png")
    argv = {
        "generate": ["generate", "a red circle", "--steps", "2", "--out", str(inside)],
        "edit": ["edit", str(tmp_path / "in.png"), "--source-prompt", "a red circle", "--target-prompt",
                 "a blue circle", "--steps", "2", "--out", str(out / "edits")],
        "audit": ["toyworld", "audit", str(out), "--out", str(out / "images" / "fixed" / "audit.json")],
        "audit-run-json": ["toyworld", "audit", str(out), "--out", str(out / "run.json"), "--overwrite"],
        "export": ["report", str(out), "--export", "t2i-compbench", str(out / "images" / "export")],
        "bench-perf": ["bench-perf", "--variants", "fixed", "--repeats", "1", "--steps", "2", "--out", str(inside)],
        "bench": [*_bench(out / "images" / "nested")],
        "train": ["toyworld", "train", "--smoke", "--out", str(out / "images" / "toy")],
    }[command]  # fmt: skip
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err  # (the run's own export: "lies inside the run's folder")
    assert f"lies inside the bench run {str(out.resolve())!r}" in err or "lies inside the run's folder" in err, err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert main(["report", str(out)]) == 0


def test_a_transparent_input_image_is_said_to_be_read_without_its_alpha(tmp_path, capsys):
    """Round twelve: a fully transparent RGBA image was edited as its hidden colours, without a word."""
    Image.new("RGBA", (64, 64), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    argv = ["edit", str(tmp_path / "clear.png"), "--source-prompt", "a red circle", "--target-prompt",
            "a blue circle", "--steps", "2", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 0
    assert "is transparent in 100% of its pixels; the edit reads the colours stored under" in capsys.readouterr().err
    Image.new("RGBA", (64, 64), (255, 0, 0, 255)).save(tmp_path / "opaque.png")
    argv[1] = str(tmp_path / "opaque.png")
    assert main(argv) == 0 and "transparent" not in capsys.readouterr().err
    one = Image.new("RGBA", (64, 64), (255, 0, 0, 255))  # round twenty-eight: one clear pixel was said as 0%
    one.putpixel((0, 0), (255, 0, 0, 0))
    one.save(tmp_path / "one.png")
    argv[1] = str(tmp_path / "one.png")
    assert main([*argv, "--overwrite"]) == 0
    assert "is transparent in under 1% of its pixels" in capsys.readouterr().err


def test_a_library_error_that_follows_sigterm_ends_the_command_as_interrupted(monkeypatch, capsys):
    """The CI's case: SIGTERM broke an import, a library took the interrupt for its own error, and the next import
    failed ("cannot load module more than once per process"): exit 1 `failed: ImportError`. An error once SIGTERM
    has arrived ends the command as the interrupt it is (130; the page: 0, "stopped")."""
    from date_diffusion.cli import main as cli_main

    monkeypatch.setattr(cli_main, "_INTERRUPTED", cli_main.threading.Event())

    def broken(args):
        cli_main._INTERRUPTED.set()
        raise ImportError("cannot load module more than once per process")

    monkeypatch.setattr(cli_main, "check_kinds", broken)
    assert cli_main.main(["info", "x.png"]) == 130
    assert "interrupted; every file written so far is complete" in capsys.readouterr().err
    assert cli_main.main(["ui"]) == 0 and "stopped" in capsys.readouterr().out


def test_a_copy_made_transparent_is_named_as_changed_pixels(tmp_path, capsys):
    """Round thirteen: the pixel fingerprint read RGB only, so a fully transparent copy (which every viewer shows
    blank) passed `info`, `report` and a bench resume; the fingerprint is of what an image shows, alpha included."""
    from PIL import PngImagePlugin

    assert main(["generate", "a red circle", "--steps", "2", "--out", str(tmp_path / "g")]) == 0
    out = tmp_path / "run"
    assert main(_bench(out)) == 0
    capsys.readouterr()
    png = tmp_path / "g" / "a-red-circle-s0.png"
    bench_png = next((out / "images").rglob("*.png"))
    for path in (png, bench_png):
        with Image.open(path) as image:
            image.load()
            info = PngImagePlugin.PngInfo()
            for key, value in image.text.items():
                info.add_text(key, value)
            clear = image.convert("RGBA")
            clear.putalpha(0)
            clear.save(path, pnginfo=info)
    assert main(["info", str(png)]) == 2
    assert "its pixels were changed since its record was written" in capsys.readouterr().err
    assert main(["report", str(out)]) == 2
    assert str(bench_png) in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--model", "--reward", "--reward-decoder"])
def test_a_symbolic_link_that_leads_nowhere_is_named_as_one_not_a_hub_id(tmp_path, capsys, monkeypatch, option):
    """Round thirteen: `--model dang` (a link to a missing folder) and a link loop were looked up as hub ids, with
    the advice `hf download dang`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dang").symlink_to(tmp_path / "missing")
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    for name, what in (("dang", f"a symbolic link to {str(tmp_path / 'missing')!r}, which is missing"),
                       ("loop1", "a symbolic link that leads back to itself (a loop)")):  # fmt: skip
        value = f"clip:{name}" if option == "--reward" else name
        assert main(["generate", "a red circle", "--steps", "2", option, value, "--out", "o"]) == 2
        err = capsys.readouterr().err
        assert what in err and "hf download" not in err, err
    assert not (tmp_path / "o").exists()


def test_a_cut_short_embeddings_file_is_said_to_be_cut_short(tmp_path, capsys):
    """Round thirteen: a truncated or empty embeddings file showed `SafetensorError: ... incomplete metadata, file
    not fully covered`; it says the file is cut short, or empty."""
    assert main(["generate", "a red circle", "--steps", "2", "--save-embeddings", "--out", str(tmp_path / "g")]) == 0
    saved = tmp_path / "g" / "a-red-circle-s0-embeddings.safetensors"
    data = saved.read_bytes()
    capsys.readouterr()
    for cut, message in ((len(data) // 2, "is cut short ("), (0, "is empty (0 bytes)"), (4, "is cut short (4 bytes")):
        (tmp_path / "cut.safetensors").write_bytes(data[:cut])
        assert main(["generate", "--replay-embeddings", str(tmp_path / "cut.safetensors"), "--out",
                     str(tmp_path / "o")]) == 2  # fmt: skip
        err = capsys.readouterr().err
        assert f"is not a readable embeddings file: it {message}" in err and "SafetensorError" not in err, err


def test_a_run_json_refusal_spells_values_as_json_does(tmp_path, capsys):
    """Round thirteen: `"limit": null` in run.json was quoted `limit: None -> 1`."""
    out = tmp_path / "run"
    assert main(_bench(out)) == 0
    run = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**run, "limit": None}))
    capsys.readouterr()
    assert main(_bench(out)) == 2
    err = capsys.readouterr().err
    assert "limit: null -> 1" in err and "None" not in err, err


def test_a_default_reward_that_does_not_load_says_whose_default_it_is(tmp_path, capsys):
    """Round thirteen: a toy pipeline without its toyworld.json (a fresh `toyworld train` output) failed on
    `--reward 'clip-l'`, which nobody typed."""
    model = _toy_copy(tmp_path, "m")
    (model / "toyworld.json").unlink()
    assert main(["generate", "a red circle", "--model", str(model), "--steps", "2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert (
        "the default reward of sd models (neither --reward nor the model's folder names one; --reward REWARD "
        "chooses another), 'clip-l'"
        in err
        and "--reward 'clip-l'" not in err
    ), err


def test_a_request_of_days_of_work_is_said_before_it_starts(tmp_path, capsys, monkeypatch):
    """Round thirteen: 999 steps with 100 gradient steps at each over aug64(toy-ensemble) started without a word
    (one batch: no count, no estimate before it ended); the work is said before the first step."""
    from date_diffusion.cli import generate

    def no_work(*args, **kwargs):
        raise KeyboardInterrupt  # stop before the first step: the note comes first

    monkeypatch.setattr(generate, "generate_all", no_work)
    argv = ["generate", "a red circle", "--steps", "999", "--update-every", "1", "--grad-steps", "100", "--reward",
            "aug64(toy-ensemble)", "--images-per-prompt", "4", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "note: this request is 19,381,599 sampling steps' work per image (999 steps" in err, err
    # round twenty-nine: one step at 4096x4096 (4096 times the toy model's pixels) started hours of work unsaid
    assert main(["generate", "a red circle", "--steps", "1", "--height", "4096", "--width", "4096", "--out",
                 str(tmp_path / "big")]) == 130  # fmt: skip
    err = capsys.readouterr().err
    assert "at 4096x4096: 4,096 times the pixels of the model's 64x64), 1 image(s)" in err, err
    monkeypatch.undo()
    assert main(["generate", "a red circle", "--steps", "2", "--out", str(tmp_path / "o")]) == 0
    assert "sampling steps' work" not in capsys.readouterr().err


@pytest.mark.parametrize("name, message", [("aesthetic", "holds no aesthetic predictor head"),
                                           ("openclip", "holds no OpenCLIP checkpoint"),
                                           ("hpsv2", "holds no OpenCLIP checkpoint")])  # fmt: skip
def test_a_weights_file_of_another_kind_is_named_before_any_base_model_loads(tmp_path, capsys, name, message):
    """Round thirteen: a LoRA given as an `aesthetic:`, `openclip:` or `hpsv2:` source asked for a CLIP-L download
    (the base model loaded first; online, 1.7 GB before the file was looked at): the file is read first."""
    import torch
    from safetensors.torch import save_file

    save_file({"unet.down.lora_A.weight": torch.zeros(2, 2)}, tmp_path / "lora.safetensors")
    argv = ["generate", "a red circle", "--steps", "2", "--reward", f"{name}:{tmp_path / 'lora.safetensors'}",
            "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "hf download" not in err and "'unet.down.lora_A.weight'" in err, err


def test_a_clip_source_of_another_kind_is_named_before_the_library_reads_it(tmp_path, capsys):
    """Round thirteen: `clip:` given a text encoder alone printed transformers' load report (missing and unexpected
    weights) and then blamed a missing tokenizer; given a whole diffusers pipeline, it called it an incomplete
    diffusers checkpoint."""
    model = _toy_copy(tmp_path, "m")
    cases = [
        (model / "text_encoder", "its config.json is a 'clip_text_model' model, and CLIPModel is a 'clip' one"),
        (model, "it is a diffusion pipeline's folder (model_index.json), not a CLIPModel"),
    ]
    for source, message in cases:
        argv = ["generate", "a red circle", "--steps", "2", "--reward", f"clip:{source}", "--out", str(tmp_path / "o")]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "LOAD REPORT" not in err, err


def test_sigterm_held_off_in_the_pages_start_still_stops_it_with_code_0(tmp_path):
    """The CI's case: SIGTERM 0.5 s into `ui` (a fresh install: imports compile) was taken inside an import that
    swallowed the interrupt, the start went on, and the watchdog ended the page with code 143. For the page,
    SIGTERM is its end whatever holds it: code 0, "stopped", its temporary folders removed."""
    code, _, out, err = _stuck(tmp_path, "ui", "common.temporary_folder('date-diffusion-ui-')")
    assert code == 0 and "stopped" in out, (code, err)
    assert not list(tmp_path.glob("date-diffusion-ui-*"))


def test_info_shows_every_image_it_can_and_what_else_made_each(tmp_path, capsys):
    """Round fifteen: one image without a record made `info outputs/*.png` show nothing (exit 2 at the first); and
    the summary left out LoRAs, DATE settings that are not the paper's and how the reward decoded, so the image
    could not be made again from it. Each image is shown or named (exit 2 if any is named), and the summary says
    them (`cli.info.settings_lines`)."""
    argv = ["generate", "a red circle", "--steps", "2", "--grad-steps", "2", "--anchor", "original",
            "--reward-resolution", "32", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 0
    Image.new("RGB", (8, 8)).save(tmp_path / "other.png")
    capsys.readouterr()
    assert main(["info", str(tmp_path / "other.png"), str(tmp_path / "o" / "a-red-circle-s0.png")]) == 2
    out, err = capsys.readouterr()
    assert "other.png carries no settings" in err and err.count("\n") == 1
    assert 'DATE, beside the paper\'s settings: grad_steps 2, anchor "original"' in out
    assert "the reward decoded approximately: at 32 px" in out
    from date_diffusion.cli.info import settings_lines

    assert settings_lines({"loras": [["style.safetensors", 0.5]]}) == ["  LoRAs: style.safetensors at scale 0.5"]


def test_a_reward_decoder_of_another_model_class_is_named_by_its_config(tmp_path, capsys):
    """Round sixteen: a full VAE (or UNet) folder as `--reward-decoder` ended in torch's "Cannot copy out of meta
    tensor" (exit 1) after kilobytes of diffusers' notes: its config's class is read first (`check_tiny_decoder`)."""
    from date_diffusion.toyworld.world import PIPELINE

    vae = PIPELINE / "vae"
    assert main(["generate", "a red circle", "--steps", "2", "--reward-decoder", str(vae),
                 "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "holds the model class AutoencoderKL (its config.json), not a tiny decoder" in err and err.count("\n") == 1


def test_a_text_encoder_that_does_not_fit_its_config_names_the_tensor(tmp_path, capsys):
    """Round sixteen: `max_position_embeddings` 4 was refused with transformers' last line ("You set
    `ignore_mismatched_sizes` ..."), which names no tensor: the tensor and its shapes come from the library's report
    logged before its error (`quiet.held_messages`)."""
    model = _toy_copy(tmp_path, "model")
    _edit_json(model / "text_encoder" / "config.json", max_position_embeddings=4)
    assert main(["generate", "a red circle", "--model", str(model), "--steps", "2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "text_encoder/model.safetensors: its tensors do not fit config.json (embeddings.position_embedding" in err


def test_a_replay_of_embeddings_date_never_moved_is_recorded_as_the_fixed_image(tmp_path, capsys):
    """Round sixteen: embeddings saved where DATE could not act replayed as an image `info` labelled "DATE: on"."""
    argv = ["generate", "a red circle", "--steps", "2", "--rho-relative", "1e-8", "--save-embeddings"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    saved = tmp_path / "a" / "a-red-circle-s0-embeddings.safetensors"
    assert main(["generate", "--replay-embeddings", str(saved), "--out", str(tmp_path / "b")]) == 0
    assert "recorded as method 'fixed'" in capsys.readouterr().out
    assert json.loads((tmp_path / "b" / "a-red-circle-s0.json").read_text())["method"] == "fixed"
    # round seventeen: a replay's summary says it is one, and of which file
    from date_diffusion.cli.info import settings_lines

    assert settings_lines({"replayed_from": "e.safetensors"})[0].startswith("  replayed from e.safetensors (its saved")


def test_an_output_path_through_a_missing_folder_is_refused(tmp_path, capsys):
    """Round sixteen: `--out x/../gdot` with no `x` made `x` too and left it empty."""
    out = f"{tmp_path}/x/../gdot"
    assert main(["generate", "a red circle", "--steps", "2", "--out", out]) == 2
    assert f"goes up (..) out of {str(tmp_path / 'x')!r}, which does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "gdot").exists()


def test_bench_ends_when_the_reader_of_its_output_goes_away(tmp_path):
    """Round seventeen: `bench ... | head` made every image and wrote every table into the broken pipe before exit
    code 141 (bench writes its tables to stdout only at the end): it checks its reader between batches
    (`outputs.check_reader`) and ends there, as `generate` does at its next line."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    argv = ["bench", "--suite", "toy", "--limit", "4", "--seeds", "1", "--steps", "2", "--methods", "fixed date",
            "--out", str(tmp_path / "run")]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "date_diffusion", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    proc.stdout.close()  # the reader goes away at once
    assert proc.wait(timeout=300) == 141
    assert not list((tmp_path / "run").rglob("*.png"))  # ended before the first batch, not after the last


def test_overwrite_never_replaces_the_image_of_another_prompt_with_the_same_file_name(tmp_path, capsys):
    """Round seventeen: `generate "a red circle!" --overwrite` replaced the image of "a red circle" (both named
    `a-red-circle-s0`): an earlier output is replaced only when its record is of the same prompt and seed
    (`cli.common.check_overwrite`); the same prompt is still replaced."""
    out = tmp_path / "o"
    argv = ["generate", "--steps", "2", "--out", str(out)]
    assert main([*argv, "a red circle"]) == 0
    before = (out / "a-red-circle-s0.png").read_bytes()
    assert main([*argv, "a red circle!", "--overwrite"]) == 2
    assert "the image of another prompt ('a red circle', seed 0) whose file name is the same" in capsys.readouterr().err
    assert (out / "a-red-circle-s0.png").read_bytes() == before
    assert main([*argv, "a red circle", "--overwrite"]) == 0


def test_a_prompt_given_twice_is_named_where_it_was_given_and_a_cut_one_says_so(tmp_path, capsys):
    """Round eighteen: two 26,000-character lines of a prompts file, alike in their first 20,000 characters, were
    called `PROMPT 2 ... is PROMPT 1 again`: the file's lines are named as its lines, and prompts that differ only
    past the part that is used are said to be the same in that part."""
    long = "a red circle " * 2000
    (tmp_path / "p.txt").write_text(f"{long}alpha\n{long}beta\n")
    assert main(["generate", "--prompts-file", str(tmp_path / "p.txt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"prompt 2 of --prompts-file {str(tmp_path / 'p.txt')!r}" in err, err
    assert "is the same in its first 20,000 characters, the part that is used, as prompt 1 of" in err, err
    (tmp_path / "p.txt").write_text("a blue square\n")
    again = ["generate", "a blue square", "--prompts-file", str(tmp_path / "p.txt"), "--out", str(tmp_path / "o")]
    assert main(again) == 2
    assert "is the same prompt as PROMPT 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_generate_names_date_settings_that_change_no_image(tmp_path, capsys):
    """Round eighteen: `generate --anchor original` with one update, or `--reward R` with a random direction, made
    images pixel-identical to runs without them, with no word (bench refuses two methods that differ only so).
    Each is named in a note and under the DATE record's `without_effect` (`methods.date_without_effect`, the
    benchmark's `Date.images_key`); the fixed image's record does not list DATE's settings."""
    from date_diffusion.outputs import read_png_metadata

    out = tmp_path / "o"
    argv = ["generate", "a red circle", "--steps", "5", "--out", str(out)]
    assert main([*argv, "--anchor", "original", "--compare"]) == 0
    err = capsys.readouterr().err
    assert "note: --anchor 'original' changes no image here" in err, err
    record = json.loads((out / "a-red-circle-s0.json").read_text())
    assert record["without_effect"]["anchor"]["value"] == "original"
    assert "without_effect" not in read_png_metadata(out / "a-red-circle-s0-fixed.png")["record"]
    assert main([*argv, "--direction", "random", "--reward", "toy-ensemble"]) == 0
    assert "note: --reward 'toy-ensemble' changes no image here" in capsys.readouterr().err
    assert main([*argv, "--anchor", "original", "--update-steps", "0,2"]) == 0  # two updates: the anchor acts
    assert "changes no image" not in capsys.readouterr().err


def test_toy_names_the_toy_world_in_every_command(tmp_path, capsys):
    """Round eighteen: `--model toy`, which bench-perf takes (as the README shows), sent generate to the hub: it
    names the shipped toy world in every command, the same record as the default model's."""
    assert main(["generate", "a red circle", "--steps", "2", "--out", str(tmp_path / "a")]) == 0
    assert main(["generate", "a red circle", "--steps", "2", "--model", "toy", "--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / f / "a-red-circle-s0.json").read_text()) for f in "ab")
    assert a["model"] == b["model"] and a["trace"] == b["trace"]


def test_a_resume_that_spells_a_method_of_the_run_otherwise_names_the_runs_spelling(tmp_path, capsys):
    """Round eighteen: resuming a run of `date:every=02` with `date:every=2` was refused with "... make the same
    images in this run: list one", though one was listed: the run's own spelling is named, to resume with."""
    out = tmp_path / "run"
    argv = ["bench", "--suite", "toy", "--limit", "1", "--seeds", "1", "--steps", "2", "--out", str(out)]
    assert main([*argv, "--methods", "fixed date:every=02"]) == 0
    capsys.readouterr()
    assert main([*argv, "--methods", "fixed date:every=2"]) == 2
    err = capsys.readouterr().err
    assert "'date:every=2' makes the same images as 'date:every=02'" in err, err
    assert f"which the run {str(out)!r} already holds (its run.json): list it as 'date:every=02'" in err, err
    assert main([*argv, "--methods", "fixed date:every=02"]) == 0


def test_a_lora_or_embeddings_file_that_does_not_read_is_said_in_words(tmp_path, capsys):
    """Round eighteen: a LoRA file of text was "not a readable .safetensors file (Error while deserializing header:
    header too large)", an embeddings file without metadata "(found None)"."""
    from safetensors.torch import load_file, save_file

    (tmp_path / "l.safetensors").write_text("not a lora")
    assert main(["generate", "a red circle", "--lora", str(tmp_path / "l.safetensors"), "--steps", "2",
                 "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "is not a safetensors file (its first bytes are no safetensors header)" in err and "header too" not in err
    argv = ["generate", "a red circle", "--steps", "2", "--save-embeddings", "--out", str(tmp_path / "e")]
    assert main(argv) == 0
    saved = tmp_path / "e" / "a-red-circle-s0-embeddings.safetensors"
    save_file(load_file(saved), tmp_path / "bare.safetensors")
    capsys.readouterr()
    replay = ["generate", "--replay-embeddings", str(tmp_path / "bare.safetensors"), "--out", str(tmp_path / "r")]
    assert main(replay) == 2
    err = capsys.readouterr().err
    assert "(it has no metadata)" in err and "None" not in err, err
    assert main(["generate", "a red circle", "--lora", str(saved), "--out", str(tmp_path / "l")]) == 2  # round 19
    assert "is prompt embeddings saved by --save-embeddings, no LoRA: replay them with --replay-embeddings" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("where", ["", "sub/deeper"])
def test_no_command_writes_into_a_model_folder(tmp_path, capsys, where):
    """Round nineteen: `generate --out MODEL` wrote its image and record beside model_index.json, which changed the
    model's fingerprint: a bench run on that model then refused to resume saying its configs or weights changed.
    Every output option refuses a model folder and any place inside one (`cli.common.check_outside_runs`)."""
    model = _toy_copy(tmp_path, "model")
    out = model / where if where else model
    before = sorted(p.relative_to(model) for p in model.rglob("*"))
    for argv in (
        ["generate", "a red circle", "--steps", "2", "--model", str(model)],
        ["bench", "--suite", "toy", "--limit", "1", "--seeds", "1", "--steps", "2", "--methods", "fixed"],
    ):
        assert main([*argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"lies inside the model folder {str(model)!r} (its model_index.json)" in err, err
    assert sorted(p.relative_to(model) for p in model.rglob("*")) == before


def test_an_absolute_step_below_the_embeddings_precision_is_said(tmp_path, capsys):
    """Round nineteen: `--rho 1e-8` ran as DATE and moved the embedding 9.7e-10 (float32 rounded most of the step
    away) without a word, while `--rho-relative 1e-8` is refused as unable to act. The update that moved less than
    half its step is named (`core.trace.rounded_away`); a step that moves as asked is not."""
    argv = ["generate", "a red circle", "--steps", "4", "--out", str(tmp_path / "o")]
    assert main([*argv, "--rho", "1e-8"]) == 0
    out = capsys.readouterr().out
    assert "note: DATE's step of 1e-8 moved the embedding only" in out and "below the precision" in out, out
    assert main([*argv, "--rho", "0.5"]) == 0
    assert "below the precision" not in capsys.readouterr().out
    # re-anchored at the original embedding, a second update moves rho times the change of direction: not judged
    assert main([*argv, "--rho", "0.5", "--anchor", "original", "--update-steps", "0,2"]) == 0
    assert "below the precision" not in capsys.readouterr().out
    assert main([*argv, "--rho", "0.5", "--normalize", "false"]) == 0  # a step of rho times the gradient's norm
    assert "below the precision" not in capsys.readouterr().out
    run = tmp_path / "run"  # bench's report counts such images under its table
    assert main(["bench", "--suite", "toy", "--limit", "1", "--seeds", "1", "--steps", "4", "--methods",
                 "fixed date date:rho=1e-8", "--out", str(run)]) == 0  # fmt: skip
    notes = [line for line in (run / "results.md").read_text().splitlines() if "less than half its step" in line]
    assert notes == [notes[0]] and notes[0].startswith("`date:rho=1e-8`: in 1 of 1 images"), notes
    # round twenty-seven: a step that moved nothing at all (1e-45) was said both unmoved and moved a little
    tiny = tmp_path / "tiny"
    assert main(["bench", "--suite", "toy", "--limit", "1", "--seeds", "1", "--steps", "4", "--methods",
                 "fixed date:rho=1e-45", "--out", str(tiny)]) == 0  # fmt: skip
    report = (tiny / "results.md").read_text()
    assert "in 1 of 1 images DATE did not move the embedding" in report and "less than half" not in report, report


def test_bench_perf_refuses_steps_the_scheduler_cannot_take(tmp_path, capsys):
    """Round nineteen: `bench-perf --steps 1000` started a measuring process that died with an IndexError (exit 1,
    advice naming every option but the steps), where generate refuses the same value: the measuring process asks
    `check_steps_fit` once the model is loaded, and its answer is a usage error, nothing measured or written."""
    argv = ["bench-perf", "--steps", "1000", "--variants", "fixed", "--repeats", "1", "--out", str(tmp_path / "p")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--steps 1000 is more than DDIMScheduler can take" in err and err.count("\n") == 1, err
    assert not (tmp_path / "p").exists()


def test_bench_steps_no_method_reads_are_refused_and_the_title_names_a_methods_own(tmp_path, capsys):
    """Round nineteen: `bench --steps 1000 --methods fixed@999` was accepted (no method reads --steps) and its
    results.md title said `1000 steps`: given and read by no method, --steps is refused; a method that samples its
    own steps is named in the title."""
    argv = ["bench", "--suite", "toy", "--limit", "1", "--seeds", "1", "--out", str(tmp_path / "r")]
    assert main([*argv, "--steps", "1000", "--methods", "fixed@999"]) == 2
    assert "--steps 1000: no method of this run reads it" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main([*argv, "--steps", "3", "--methods", "fixed fixed@2"]) == 0
    title = (tmp_path / "r" / "results.md").read_text().splitlines()[0]
    assert "3 steps (`fixed@2` samples 2), guidance" in title, title


@pytest.mark.parametrize("limit, batch, removed", [("3", "4", (1, 4)), ("6", "3", (5,))])
def test_a_resumed_image_is_remade_in_its_own_batch_to_the_last_bit(tmp_path, limit, batch, removed):
    """Round nineteen: images a resume remade were sampled in a batch of their own (only the missing ones), and a
    batch's float sums depend on its size and members: a pixel or two differed by one level from the uninterrupted
    run's. A missing image is remade in the batch it had (`runner.MethodWork`: the others made again, not
    written), so every image, its record's trace and its reward are the uninterrupted run's. Round twenty-three:
    the reward's text features, cached per prompt, were encoded in batches of the prompts not cached yet, which a
    resume fills otherwise (the last image of the third batch differed): each prompt is encoded alone."""
    import shutil

    argv = ["bench", "--suite", "toy", "--limit", limit, "--seeds", "2", "--steps", "4", "--batch-size", batch,
            "--methods", "fixed date"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    shutil.copytree(tmp_path / "whole", tmp_path / "resumed")
    records = sorted((tmp_path / "resumed" / "images" / "date").rglob("samples/*.json"))
    kept = {p: p.stat().st_mtime_ns for p in records}
    for gone in (records[k] for k in removed):  # (3, 4): the second image of the first batch, the first of the
        gone.unlink()  # second; (6, 3): the last of the third
        gone.with_suffix(".png").unlink()
    assert main([*argv, "--out", str(tmp_path / "resumed")]) == 0
    for path in records:
        twin = tmp_path / "whole" / path.relative_to(tmp_path / "resumed")
        a, b = (np.asarray(Image.open(p.with_suffix(".png"))) for p in (twin, path))
        assert np.array_equal(a, b), path
        old, new = (json.loads(p.read_text()) for p in (twin, path))
        assert (old["trace"], old["reward"]) == (new["trace"], new["reward"]), path
    assert all(kept[p] == p.stat().st_mtime_ns for k, p in enumerate(records) if k not in removed)


def test_a_resume_without_batch_size_makes_its_images_in_the_runs_own_batches(tmp_path, capsys):
    """Round twenty-four: a run did not record its --batch-size, so a resume that left it out remade images in the
    default batches (other pixels in float32's last digits) without a word. run.json records the first command's
    batch size; a resume without --batch-size takes it; another one given is said in a note and not recorded."""
    import shutil

    argv = ["bench", "--suite", "toy", "--limit", "1", "--seeds", "2", "--steps", "2", "--methods", "fixed date"]
    assert main([*argv, "--batch-size", "1", "--out", str(tmp_path / "whole")]) == 0
    assert json.loads((tmp_path / "whole" / "run.json").read_text())["batch_size"] == 1
    for name, more in (("resumed", []), ("other", ["--batch-size", "04"])):
        shutil.copytree(tmp_path / "whole", tmp_path / name)
        gone = next((tmp_path / name / "images" / "date").rglob("samples/01001.json"))
        gone.unlink()
        gone.with_suffix(".png").unlink()
        capsys.readouterr()
        assert main([*argv, *more, "--out", str(tmp_path / name)]) == 0
        err = capsys.readouterr().err
        assert ("note: --batch-size 04: this run made its images in batches of 1" in err) == bool(more), err
        assert json.loads((tmp_path / name / "run.json").read_text())["batch_size"] == 1
    twin = tmp_path / "whole" / gone.relative_to(tmp_path / "other")
    resumed = tmp_path / "resumed" / gone.relative_to(tmp_path / "other")
    assert json.loads(resumed.read_text())["pixels"] == json.loads(twin.read_text())["pixels"]
    # round twenty-six: run.json's batch_size edited by hand was trusted: each record states its batch size, sealed
    settings = json.loads((tmp_path / "resumed" / "run.json").read_text())
    (tmp_path / "resumed" / "run.json").write_text(json.dumps({**settings, "batch_size": 32}))
    batch = "its batch_size 32 is not what any of the run's images was made with (1, as their records say)"
    # round twenty-seven: its processes alike (a resume said its images may differ), and report names both as bench
    for edited, said in (({"batch_size": 32}, batch), ({"processes": 2}, "its processes 2 is not what any of the")):
        (tmp_path / "resumed" / "run.json").write_text(json.dumps({**settings, **edited}))
        for command in ([*argv, "--out", str(tmp_path / "resumed")], ["report", str(tmp_path / "resumed")]):
            capsys.readouterr()
            assert main(command) == 2
            assert said in capsys.readouterr().err
    (tmp_path / "resumed" / "run.json").write_text(json.dumps(settings))
    assert main(["report", str(tmp_path / "resumed")]) == 0


def test_a_run_whose_first_command_made_no_image_is_made_as_its_resume_makes_it(tmp_path, capsys):
    """A first command stopped before any image kept its batch size in run.json: a resume at another one then made
    every image with a batch size no image of the run states, and the run's next reader called run.json edited."""
    argv = ["bench", "--suite", "toy", "--limit", "1", "--seeds", "2", "--steps", "2", "--methods", "fixed"]
    run = tmp_path / "run"
    assert main([*argv, "--out", str(run)]) == 0
    for path in sorted((run / "images").rglob("*"), reverse=True):  # as if stopped before its first image
        path.unlink() if path.is_file() else path.rmdir()
    capsys.readouterr()
    assert main([*argv, "--batch-size", "1", "--out", str(run)]) == 0
    assert "--batch-size" not in capsys.readouterr().err  # no run's own batches to differ from
    assert json.loads((run / "run.json").read_text())["batch_size"] == 1
    assert main(["report", str(run)]) == 0


def test_a_resume_says_when_it_cannot_make_images_in_the_runs_own_batches(tmp_path, capsys):
    """A run.json of an earlier version records no batch size: a resume says so and records none (the run's own
    is unknown); one made in other processes is said too (`cli.bench._made_in`)."""
    from date_diffusion.cli.bench import _made_in

    argv = ["bench", "--suite", "toy", "--limit", "1", "--seeds", "1", "--steps", "2", "--methods", "fixed"]
    run = tmp_path / "run"
    assert main([*argv, "--out", str(run)]) == 0
    settings = json.loads((run / "run.json").read_text())
    assert (settings["batch_size"], settings["processes"]) == (32, 1)
    (run / "run.json").write_text(
        json.dumps({k: v for k, v in settings.items() if k not in ("batch_size", "processes")})
    )
    capsys.readouterr()
    assert main([*argv, "--out", str(run)]) == 0
    assert "an earlier version's) does not record the batch size" in capsys.readouterr().err
    assert "batch_size" not in json.loads((run / "run.json").read_text()) or json.loads(
        (run / "run.json").read_text())["batch_size"] is None  # fmt: skip
    from date_diffusion.bench.runner import RunSettings

    (run / "run.json").write_text(json.dumps(settings))
    given = RunSettings(**{k: settings.get(k) for k in ("suite", "captions", "limit", "seeds", "steps", "guidance",
                                                        "model", "reward", "eval_clip")})  # fmt: skip
    made, now = _made_in(run, given, None, 2, settings["threads"], True)
    assert (made.batch_size, made.processes, now["batch_size"]) == (32, 1, 32)
    assert "shared its images among 1 processes, this command among 2" in capsys.readouterr().err
    # round twenty-seven: another CPU thread count sums floats in another order, and was neither said nor recorded
    made, now = _made_in(run, given, None, 1, settings["threads"] + 2, True)
    assert (made.threads, now["threads"]) == (settings["threads"], settings["threads"] + 2)
    err = capsys.readouterr().err
    assert f"this run made its images with {settings['threads']} CPU threads, this command with" in err, err
    import torch

    record = json.loads(next((run / "images").rglob("samples/*.json")).read_text())
    assert record["threads"] == settings["threads"] == torch.get_num_threads()


def test_the_csv_field_limit_is_the_processs_own_again_after_any_read(tmp_path):
    import csv

    from date_diffusion.bench.suites import read_csv

    with pytest.raises(FileNotFoundError):
        read_csv(tmp_path / "missing.csv")
    assert csv.field_size_limit() == 131072


def test_a_guidance_that_runs_no_guidance_is_said_and_shown_by_info(tmp_path, capsys):
    """Round twenty: `--guidance 0` (or 0.5) sampled as guidance 1, pixel for pixel, without a word, and `info`
    showed no guidance at all: the note says so, and info shows what the record lists under `without_effect`."""
    argv = ["generate", "a red circle", "--steps", "2", "--out", str(tmp_path / "o")]
    assert main([*argv, "--guidance", "0"]) == 0
    assert "note: --guidance 0 has no effect here: no classifier-free guidance runs" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "o" / "a-red-circle-s0.png")]) == 0
    assert "  without effect: guidance_scale 0.0 (no classifier-free guidance runs" in capsys.readouterr().out
    assert main([*argv, "--guidance", "5"]) == 0
    assert "has no effect" not in capsys.readouterr().err
    # round twenty-seven: typed above 1, read as 1.0, and told it is not above 1 without the value that ran
    assert main([*argv, "--guidance", "1.0000000000000001", "--overwrite"]) == 0
    assert "--guidance 1.0000000000000001 (read as 1.0, the nearest float) has no effect" in capsys.readouterr().err
    assert main([*argv, "--guidance", "0.10", "--overwrite"]) == 0  # 0.1 as a float, its nearest: nothing to say
    assert "--guidance 0.10 has no effect here" in capsys.readouterr().err
    # round twenty-three: a replay of a file saved at guidance 1 named --guidance, which a replay refuses
    assert main([*argv, "--guidance", "1", "--save-embeddings", "--overwrite"]) == 0
    saved = tmp_path / "o" / "a-red-circle-s0-embeddings.safetensors"
    capsys.readouterr()
    assert main(["generate", "--replay-embeddings", str(saved), "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "note: the replayed file's guidance 1" in err and "--guidance" not in err, err


@pytest.mark.parametrize("command", [["generate", "a red circle"], ["bench-perf"]])
def test_an_output_folder_that_is_a_fifo_or_a_file_is_named_as_what_it_is(tmp_path, capsys, command):
    """Round twenty: a FIFO given as `--out` (a folder) was called "a file": the refusal names what the entry is
    (`schemas.entry_kind`, the one naming of file-system entries)."""
    os.mkfifo(tmp_path / "ff")
    (tmp_path / "plain").write_text("x")
    for name, kind in (("ff", "a FIFO"), ("plain", "a file")):
        assert main([*command, "--out", str(tmp_path / name)]) == 2
        assert f"is not writable (it is {kind}; give a new name)" in capsys.readouterr().err


def test_a_no_break_space_at_a_prompts_end_is_prose_not_a_pasted_name(tmp_path, capsys):
    """The pasted-blank rule of names (`--reward 'toy-clip\\xa0'` refused) is no prompt's: a prompt or negative
    prompt ending in a no-break space is text an encoder reads (stripped by the prompt check) and runs."""
    argv = ["generate", "a red circle\u00a0", "--negative-prompt", "\u3000blurry", "--steps", "2"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "a-red-circle-s0.json").read_text())["prompt"] == "a red circle"


def test_an_embeddings_file_whose_seal_was_removed_is_refused(tmp_path, capsys):
    """Round twenty-one: deleting the `sealed` key of an embeddings file (and editing its seed and tensors) made
    `--replay-embeddings` replay the edits silently into a sealed record. Files of the current format are always
    sealed when written, so one without its seal is refused; an earlier format's unsealed file is replayed with a
    note that it is unverified."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    assert main(["generate", "a red circle", "--steps", "2", "--save-embeddings", "--out", str(tmp_path / "e")]) == 0
    saved = tmp_path / "e" / "a-red-circle-s0-embeddings.safetensors"
    with safe_open(str(saved), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    unsealed = {k: v for k, v in meta.items() if k != "sealed"}
    save_file({k: t * 1.5 for k, t in tensors.items()}, tmp_path / "edited.safetensors", metadata=unsealed)
    capsys.readouterr()
    replay = ["generate", "--replay-embeddings", str(tmp_path / "edited.safetensors"), "--out", str(tmp_path / "r")]
    assert main(replay) == 2
    assert "its seal is missing (every file of its format is sealed when written" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    older = {**unsealed, "format": "date-diffusion/embeddings/3"}  # written before files were sealed
    save_file(tensors, tmp_path / "older.safetensors", metadata=older)
    replay[2] = str(tmp_path / "older.safetensors")
    assert main(replay) == 0
    assert "carries no seal (an earlier version wrote it): its embeddings and settings are replayed as written" in (
        capsys.readouterr().err
    )


def test_a_run_json_saved_with_a_byte_order_mark_reads_as_utf8(tmp_path, capsys):
    """Round twenty-one: a run.json an editor re-saved as "UTF-8 with BOM" was refused in Python's words ("decode
    using utf-8-sig"), with advice to delete the folder: every JSON file the package reads takes a leading BOM, as
    its prompts files do (`schemas.loads`)."""
    out = tmp_path / "run"
    assert main(_bench(out)) == 0
    (out / "run.json").write_text("\ufeff" + (out / "run.json").read_text(), encoding="utf-8")
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert main(_bench(out)) == 0 and "0 to make" in capsys.readouterr().err


def test_info_on_the_record_beside_an_image_names_the_image(tmp_path, capsys):
    """Round twenty-one: `info NAME.json` (the record generate prints beside each image) answered in Pillow's words
    ("cannot identify image file"): it names the image to give."""
    assert main(["generate", "a red circle", "--steps", "2", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "a-red-circle-s0.json")]) == 2
    err = capsys.readouterr().err
    assert f"is the record date-diffusion writes beside the image {str(tmp_path / 'a-red-circle-s0.png')!r}" in err
    assert "cannot identify" not in err


def test_edit_says_when_its_input_is_enlarged_or_stretched(tmp_path, capsys):
    """Round twenty-one: `edit` read a 1x1 input blown up to 64x64, and a 100x60 one squashed to a square, without
    a word; an input of the edit's own shape is read without a note."""
    for size, how in (((1, 1), "enlarged, up to 64 times a side"), ((100, 60), "stretched to another aspect ratio"),
                      ((64, 64), None)):  # fmt: skip
        Image.new("RGB", size, "red").save(tmp_path / "in.png")
        argv = ["edit", str(tmp_path / "in.png"), "--source-prompt", "a red circle", "--target-prompt",
                "a blue circle", "--steps", "2", "--out", str(tmp_path / "o")]  # fmt: skip
        assert main(argv) == 0
        err = capsys.readouterr().err
        assert (
            (f"is {size[0]}x{size[1]}; the edit reads it resized to 64x64 ({how}" in err)
            if how
            else ("resized" not in err)
        ), err


def test_numbers_typed_without_their_point_never_make_info_call_a_file_changed(tmp_path, capsys):
    """Round twenty-four: `edit --cfg-tar 7 --cfg-src 2` wrote `CFG scale: 7` (the number as typed) in each PNG's
    `parameters` text while its record, read back from JSON, gives 7.0: `info` said another program changed every
    image. The text writes numbers plainly (`outputs.parameters_text`), as the record gives them."""
    Image.new("RGB", (64, 64), "red").save(tmp_path / "in.png")
    argv = ["edit", str(tmp_path / "in.png"), "--source-prompt", "a red circle", "--target-prompt", "a blue circle",
            "--steps", "4", "--cfg-tar", "7", "--cfg-src", "2", "--out", str(tmp_path / "e")]  # fmt: skip
    assert main(argv) == 0
    pngs = sorted((tmp_path / "e").glob("*.png"))
    assert len(pngs) == 5
    capsys.readouterr()
    for png in pngs:
        assert main(["info", str(png)]) == 0
        out, err = capsys.readouterr()
        assert "another program" not in err and "CFG scale: " in out, (png, err)


def test_outputs_carry_no_chunk_of_their_source_and_any_prompt_text_is_a_chunk_bench_writes(tmp_path, capsys):
    """A prompt outside Latin-1 (`’`, `猫`) is written in an iTXt chunk: a bench run of one was refused by its own
    report as holding a chunk bench never writes; `edit`'s copy of a paletted input kept its transparency and colour
    profile (chunks no output is to carry), and `info` said another program had changed it."""
    from date_diffusion.outputs import png_layout_problem

    source = Image.new("P", (64, 64), 1)
    source.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    source.save(tmp_path / "in.png", transparency=0, icc_profile=b"\0" * 128)
    argv = ["edit", str(tmp_path / "in.png"), "--source-prompt", "a cat’s red circle", "--target-prompt",
            "a blue circle 猫", "--steps", "2", "--out", str(tmp_path / "e")]  # fmt: skip
    assert main(argv) == 0
    pngs = sorted((tmp_path / "e").glob("*.png"))
    assert len(pngs) == 5 and all(png_layout_problem(p) is None for p in pngs), [png_layout_problem(p) for p in pngs]
    capsys.readouterr()
    for png in pngs:
        assert main(["info", str(png)]) == 0
        assert "another program" not in capsys.readouterr().err
    (tmp_path / "p.txt").write_text("a red circle’s twin 猫\n", encoding="utf-8")
    run = tmp_path / "run"
    assert main(["bench", "--suite", "prompts", "--prompts-file", str(tmp_path / "p.txt"), "--seeds", "1", "--steps",
                 "2", "--methods", "fixed", "--out", str(run)]) == 0  # fmt: skip
    assert main(["report", str(run)]) == 0


def test_edit_names_a_guidance_at_which_no_guidance_runs(tmp_path, capsys):
    """Round twenty-four: `edit --cfg-tar 0.5` (or `--cfg-src 1`) ran without guidance, pixel for pixel the edit at
    1, its record stating 0.5 as applied, without a word: each is said in a note, null in the record and named
    under `without_effect`, as generate does for --guidance."""
    Image.new("RGB", (64, 64), "red").save(tmp_path / "in.png")
    argv = ["edit", str(tmp_path / "in.png"), "--source-prompt", "a red circle", "--target-prompt", "a blue circle",
            "--steps", "4", "--cfg-src", "1"]  # fmt: skip
    assert main([*argv, "--cfg-tar", "0.5", "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "note: --cfg-tar 0.5 has no effect here: no classifier-free guidance runs" in err, err
    assert "note: --cfg-src 1 has no effect here" in err
    record = json.loads((tmp_path / "a" / "a-blue-circle-s0.json").read_text())
    assert (record["cfg_tar"], record["cfg_src"], record["guidance_scale"]) == (None, None, None)
    assert record["without_effect"]["cfg_tar"]["value"] == 0.5
    assert main([*argv, "--cfg-tar", "1", "--out", str(tmp_path / "b")]) == 0  # the same edit, as said
    a, b = (np.asarray(Image.open(tmp_path / f / "a-blue-circle-s0-date.png")) for f in "ab")
    assert np.array_equal(a, b)
    capsys.readouterr()
    assert main([*argv[:-2], "--cfg-tar", "3", "--out", str(tmp_path / "c")]) == 0  # guidance runs: nothing said
    assert "has no effect" not in capsys.readouterr().err


def test_edit_names_date_settings_that_change_no_edit(tmp_path, capsys):
    """`edit --anchor original` with one update made the DATE edit pixel for pixel the edit without it, with no
    word: named in a note and under the record's `without_effect`, as generate names it (one note:
    `cli.common.say_without_effect`); with two updates the anchor acts and nothing is said."""
    Image.new("RGB", (64, 64), "red").save(tmp_path / "in.png")
    argv = ["edit", str(tmp_path / "in.png"), "--source-prompt", "a red circle", "--target-prompt", "a blue circle",
            "--steps", "5"]  # fmt: skip
    assert main([*argv, "--anchor", "original", "--out", str(tmp_path / "a")]) == 0
    assert "note: --anchor 'original' changes no image here" in capsys.readouterr().err
    record = json.loads((tmp_path / "a" / "a-blue-circle-s0.json").read_text())
    assert record["without_effect"]["anchor"]["value"] == "original"
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0  # the default anchor: the same edit
    a, b = (np.asarray(Image.open(tmp_path / f / "a-blue-circle-s0-date.png")) for f in "ab")
    assert np.array_equal(a, b)
    capsys.readouterr()
    assert main([*argv, "--anchor", "original", "--update-steps", "0,1", "--out", str(tmp_path / "c")]) == 0
    assert "changes no image" not in capsys.readouterr().err


def test_a_reader_that_leaves_never_costs_an_image_already_sampled(tmp_path):
    """Round twenty-one: `generate A B C | head -c 10` ended (141) after writing two images of a batch of three
    already sampled: every image of the batch is written, then the command ends as a write to that pipe would."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "date_diffusion", "generate", "a red circle", "a blue square", "a green cross",
           "--steps", "2", "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proc.stdout.read(10)
    proc.stdout.close()  # the reader leaves after its first bytes
    assert proc.wait(timeout=300) in (0, 141)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "a-blue-square-s0.png",
        "a-green-cross-s0.png",
        "a-red-circle-s0.png",
    ]


def test_limits_that_select_the_same_prompts_are_one_run(tmp_path, capsys):
    """Round twenty-one: `--limit 1000000` (noted: all of the suite's 24 prompts run) was recorded as typed, and the
    same run resumed with `--limit 24` was refused as other settings: limits are compared by the prompts they
    select; a limit that selects fewer is still another run."""
    argv = ["bench", "--suite", "toy", "--categories", "single", "--seeds", "1", "--steps", "1", "--methods",
            "fixed", "--out", str(tmp_path / "r")]  # fmt: skip
    assert main([*argv, "--limit", "1000000"]) == 0
    capsys.readouterr()
    assert main([*argv, "--limit", "24"]) == 0 and "0 to make" in capsys.readouterr().err
    assert main([*argv]) == 0  # no limit: all of them too
    assert main([*argv, "--limit", "3"]) == 2
    assert "holds a run with other settings (limit:" in capsys.readouterr().err
    # round twenty-nine: categories and a limit that select the same prompts as the run's are the run too
    plain = ["bench", "--suite", "toy", "--limit", "1", "--seeds", "1", "--steps", "1", "--methods", "fixed", "--out",
             str(tmp_path / "p")]  # fmt: skip
    assert main(plain) == 0
    capsys.readouterr()
    assert main([*plain, "--categories", "single"]) == 0 and "0 to make" in capsys.readouterr().err
    assert main([*plain, "--categories", "counting"]) == 2
    assert 'holds a run with other settings (categories: ["single"] -> ["counting"])' in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "name", "data", "said"),
    [
        ("--lora", "empty.txt", b"", "LoRA file '{}' is empty (0 bytes)"),
        ("--model", "junk.safetensors", b"abc", "as a checkpoint: it is cut short (3 bytes: not even a safetensors"),
        ("--model", "e.safetensors", b"", "as a checkpoint: it is empty (0 bytes)"),
    ],
)
def test_an_empty_or_cut_lora_or_checkpoint_is_said_in_words(tmp_path, capsys, flag, name, data, said):
    """Round twenty-two: an empty LoRA of another format, and a single-file checkpoint cut short or empty, were named
    in the libraries' words ("Unable to load weights", "header too small")."""
    (tmp_path / name).write_bytes(data)
    argv = ["generate", "a red circle", "--steps", "2", flag, str(tmp_path / name), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert said.format(tmp_path / name) in err and "header too small" not in err, err


def test_a_bench_guidance_that_runs_no_guidance_is_said(tmp_path, capsys):
    """`bench --guidance 0.5` made guidance 1's images, pixel for pixel, without a word (as `generate` says it)."""
    import numpy as np

    def images(guidance: str) -> list:
        out = tmp_path / guidance
        argv = ["bench", "--suite", "toy", "--limit", "1", "--seeds", "1", "--steps", "2", "--methods", "fixed"]
        assert main([*argv, "--guidance", guidance, "--out", str(out)]) == 0
        return [np.asarray(Image.open(p)) for p in sorted((out / "images").rglob("*.png"))]

    half = images("0.5")
    note = "note: --guidance 0.5 has no effect here: no classifier-free guidance runs"
    assert note in capsys.readouterr().err
    assert half and all((a == b).all() for a, b in zip(half, images("1"), strict=True))
    capsys.readouterr()
    images("5")
    assert "has no effect" not in capsys.readouterr().err


@pytest.mark.parametrize("name, what", [("t odd\nline", "a control character"), ("t\udcff", "a byte that is no UTF-8")])
def test_a_temporary_folder_the_page_cannot_serve_from_is_named_before_it_starts(tmp_path, capsys, monkeypatch, name,
                                                                                 what):  # fmt: skip
    """Round twenty-eight: under a TMPDIR holding a line break every image and download of the page was a 404; with
    a byte that is no UTF-8 text, `ui` failed with a bare UnicodeEncodeError."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / name))
    assert main(["ui", "--port", "7999"]) == 2
    err = capsys.readouterr().err
    assert f"(TMPDIR), whose name holds {what}" in err and "set TMPDIR to a folder" in err, err


@pytest.mark.parametrize("ignored", [False, True])
def test_a_hang_up_ends_a_command_as_sigterm_does_unless_nohup_ignores_it(tmp_path, ignored):
    """Round twenty-nine: `ui` ended by SIGHUP (its terminal closed) died without a word and left its temporary
    folder. A hang-up ends every command as SIGTERM does (its folder removed, every finished file kept); under
    `nohup` (SIGHUP ignored before it starts) it keeps running."""
    import signal
    import time

    script = (
        "import signal, sys, time\n"
        f"if {ignored}: signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
        "from date_diffusion.cli import common, main as m\n"
        "def waiting(args):\n"
        "    with common.temporary_folder('date-diffusion-ui-'):\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(60)\n"
        "m.check_kinds = waiting\n"
        "sys.exit(m.main(['info', 'x.png']))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert len(list(tmp_path.glob("date-diffusion-ui-*"))) == 1
        proc.send_signal(signal.SIGHUP)
        time.sleep(2)
        assert (proc.poll() is None) == ignored
        if ignored:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
    assert code == 130 and "interrupted" in proc.stderr.read()
    assert not list(tmp_path.glob("date-diffusion-ui-*"))


def test_an_image_date_did_not_move_is_said_as_what_it_is(tmp_path, capsys):
    """Round thirty: `--rho 1e-30` moved no value of the embedding, and the note said the image "is the fixed image"
    while one of its pixels differed by a level (its update steps run the model on their own, which rounds
    otherwise): the note says it is sampled with the original embedding, and what may differ."""
    import numpy as np

    argv = ["generate", "a red circle", "--steps", "2", "--rho", "1e-30", "--compare", "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "it is sampled with the original embedding, as the fixed image is (a pixel or two may differ" in out, out
    record = json.loads((tmp_path / "o" / "a-red-circle-s0.json").read_text())
    assert record["method"] == "fixed" and record["trace"]["final_distance"] == 0
    dated, fixed = (np.asarray(Image.open(tmp_path / "o" / name), dtype=int)
                    for name in ("a-red-circle-s0.png", "a-red-circle-s0-fixed.png"))  # fmt: skip
    assert np.abs(dated - fixed).max() <= 1  # within a level, as said


@pytest.mark.parametrize("kind", ["generate", "edit"])
def test_a_dangling_link_under_an_outputs_name_is_never_replaced(tmp_path, capsys, kind):
    """Round thirty: a symbolic link to nothing under an output's name was replaced by `generate` and `edit` without
    --overwrite (a live link got a `-2` name): a name any entry holds, a dangling link too, is taken."""
    out = tmp_path / "o"
    out.mkdir()
    if kind == "generate":
        argv, stem = ["generate", "a red circle", "--steps", "1", "--out", str(out)], "a-red-circle-s0"
    else:
        Image.new("RGB", (64, 64), "red").save(tmp_path / "in.png")
        argv = ["edit", str(tmp_path / "in.png"), "--source-prompt", "a red circle", "--target-prompt", "a blue circle",
                "--steps", "2", "--out", str(out)]  # fmt: skip
        assert main(argv) == 0  # the edit's names, then made again beside a link under one of them
        stem = "a-blue-circle-s0"
        assert (out / f"{stem}-date.png").is_file()
        for p in list(out.iterdir()):
            p.unlink()
    name = f"{stem}.png" if kind == "generate" else f"{stem}-date.png"
    (out / name).symlink_to(tmp_path / "nowhere.png")
    assert main(argv) == 0
    assert (out / name).is_symlink() and not (tmp_path / "nowhere.png").exists()
    assert (out / name.replace("-s0", "-s0-2")).is_file()


@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_list_value_is_refused_not_read_as_none(tmp_path, capsys, value):
    """Round thirty: `--update-steps ""` was read as no update step (DATE never ran, the image recorded as fixed),
    where a blank item (`1,,2`) is refused; `date:steps=` was refused with advice about a step size."""
    assert main(["generate", "a red circle", "--update-steps", value, "--out", str(tmp_path / "o")]) == 2
    assert "--update-steps is empty" in capsys.readouterr().err
    argv = ["bench", "--suite", "toy", "--limit", "1", "--methods", f"fixed date:steps={value}", "--out",
            str(tmp_path / "b")]  # fmt: skip
    assert main(argv) == 2
    assert "steps in 'date:steps=" in (err := capsys.readouterr().err) and "is empty" in err, err


@pytest.mark.parametrize("char", ["\u200b", "\ufeff", "\u2028", "\U000e0041"])
def test_an_output_name_holding_an_invisible_character_is_refused(tmp_path, capsys, char):
    """Round thirty: `--out` refused a line break but took a zero-width space, a byte-order mark, a tag character or
    a line separator, and printed a path that is not the folder it made."""
    assert main(["generate", "a red circle", "--out", str(tmp_path / f"o{char}x")]) == 2
    assert f"holds the invisible character U+{ord(char):04X}" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_model_toy_beside_a_folder_named_toy_says_which_runs(tmp_path, capsys, monkeypatch):
    """Round thirty-one: with a model folder named `toy` in the working folder, `--model toy` ran the shipped toy
    world without a word (only the record's absolute path showed it)."""
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "a red circle", "--steps", "1", "--model", "toy", "--out", "a"]) == 0
    assert "is the shipped toy world" not in capsys.readouterr().err
    (tmp_path / "toy").mkdir()
    assert main(["generate", "a red circle", "--steps", "1", "--model", "toy", "--out", "b"]) == 0
    err = capsys.readouterr().err
    assert (
        err.count("note: --model toy is the shipped toy world; the folder named 'toy' here is not read (give ./toy")
        == 1
    )


def test_a_users_file_put_under_an_outputs_name_while_generate_samples_is_kept(tmp_path, capsys, monkeypatch):
    """Round thirty-one: `generate --overwrite` checked the names it replaces only before sampling: a user's file put
    under the earlier `-fixed.png` meanwhile was removed when the run ended. Checked again when the group is
    written: the user's file is kept and the image's files are not written."""
    from date_diffusion.cli import generate

    argv = ["generate", "a red circle", "--steps", "1", "--compare", "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    mine = tmp_path / "o" / "a-red-circle-s0-fixed.png"
    sample = generate.generate_all

    def meanwhile(*args, **kwargs):  # the user's file arrives while the command samples
        mine.write_bytes(b"USER DATA")
        return sample(*args, **kwargs)

    monkeypatch.setattr(generate, "generate_all", meanwhile)
    assert main([*argv, "--overwrite"]) == 1
    assert "was taken by a file or link of another program while this command ran: it is kept" in (
        capsys.readouterr().err)  # fmt: skip
    assert mine.read_bytes() == b"USER DATA"
