"""One source of truth: the resolver of what runs, the family table, the settings table, and the same image from the
command line, the web page and the Python API for the same model, overrides and seed."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import model_dir  # noqa: F401  (fixture)

from date_diffusion import TOY_WORLD, DATEPipeline, model_folder, resolve_settings
from date_diffusion.cli.main import main
from date_diffusion.core.config import DATEConfig
from date_diffusion.core.settings import BY_KEY, SETTINGS, SettingError, format_keys, parse_keys
from date_diffusion.families import FAMILIES, NAMES
from date_diffusion.toyworld import world

PROMPT = "a red circle to the left of a blue square"


def test_toy_world_defaults_and_their_sources():
    s = resolve_settings()  # no model: the toy world
    advice = model_folder.read(TOY_WORLD).recommended
    assert s.model == TOY_WORLD and s.family == "sd"
    assert (s.date.rho_relative, s.date.update_every, s.reward) == (0.005, 10, "aug8(toy-ensemble)")
    assert s.guidance_scale == advice["guidance_scale"] and s.num_inference_steps == 50
    assert s.sources["rho_relative"] == s.sources["update_every"] == s.sources["reward"] == "model"
    assert (s.sources["guidance_scale"], s.sources["num_inference_steps"], s.sources["anchor"]) == (
        "model",
        "family",
        "paper",
    )
    assert "rho" not in s.sources  # the alternative of rho_relative that does not run


def test_paper_defaults_ignore_the_models_date_advice_but_not_its_guidance():
    s = resolve_settings(TOY_WORLD, paper_defaults=True)
    assert s.date == DATEConfig() and s.reward == world.PLAIN_REWARD == "toy-clip"
    assert (s.sources["rho"], s.sources["update_every"], s.sources["reward"]) == ("paper", "paper", "model")
    assert s.guidance_scale == model_folder.read(TOY_WORLD).recommended["guidance_scale"]


def test_a_group_comes_whole_from_one_source():
    s = resolve_settings(TOY_WORLD, rho=1.0, update_steps=[0, 5])
    assert (s.date.rho, s.date.rho_relative, s.date.update_every, s.date.update_steps) == (1.0, None, None, (0, 5))
    assert s.sources["rho"] == s.sources["update_steps"] == "user" and "rho_relative" not in s.sources
    with pytest.raises(SettingError, match="give only one of --rho and --rho-relative"):
        resolve_settings(TOY_WORLD, rho=1.0, rho_relative=0.1, names={"rho": "--rho", "rho_relative": "--rho-relative"})
    with pytest.raises(SettingError, match="give only one of update_every and update_intervals"):
        resolve_settings(TOY_WORLD, update_every=5, update_intervals=[(0, 2)])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(rho="abc"), "rho must be a finite number >= 0 and <= 100, got 'abc'"),
        (dict(rho=np.float64("nan")), "rho must be a finite number"),
        (dict(normalize="maybe"), "normalize must be one of true/1/yes/false/0/no"),
        (dict(normalize=1), "normalize must be True or False"),
        (dict(update_steps=[0, 60]), r"update_steps 60 are outside the run"),
        (dict(num_inference_steps=0), "num_inference_steps must be an integer from 1 to 1000"),
        (dict(guidance_scale=float("inf")), "guidance_scale must be a finite number"),
        (dict(reward="ensemble"), "now called 'toy-ensemble'"),
        (dict(reward=3), "reward must be a reward spec"),
    ],
)
def test_bad_values_name_the_setting(overrides, message):
    with pytest.raises(SettingError, match=message):
        resolve_settings(TOY_WORLD, **overrides)


def test_text_and_numpy_values_mean_what_they_say():
    s = resolve_settings(TOY_WORLD, rho="0.25", normalize="no", update_steps="0;3,7", grad_steps=np.int64(2))
    assert (s.date.rho, s.date.normalize, s.date.update_steps, s.date.grad_steps) == (0.25, False, (0, 3, 7), 2)
    with pytest.raises(TypeError, match="unknown settings"):
        resolve_settings(TOY_WORLD, rhoo=1)


def test_bench_keys_round_trip_and_booleans_are_exact():
    values = parse_keys("rho=2,normalize=no,steps=0;10,intervals=0:2;4:6,track=false", "date:...")
    assert values == dict(
        rho=2.0, normalize=False, update_steps=(0, 10), update_intervals=((0, 2), (4, 6)), track_reward_after=False
    )
    assert parse_keys(format_keys(values), "again") == values
    assert parse_keys("normalize=1", "x") == {"normalize": True}
    with pytest.raises(SettingError, match="normalize in 'x' must be one of"):
        parse_keys("normalize=off", "x")
    assert set(BY_KEY) == {s.key for s in SETTINGS} and len(BY_KEY) == len(SETTINGS)  # one key per field


def test_every_config_field_is_in_the_settings_table_once():
    assert [s.field for s in SETTINGS] == list(DATEConfig.__dataclass_fields__)
    for attr in ("flag", "key", "label", "elem_id"):
        assert len({getattr(s, attr) for s in SETTINGS}) == len(SETTINGS)


def test_every_setting_is_a_flag_of_generate_and_edit():
    from date_diffusion.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    for command in ("generate", "edit"):
        flags = {f for a in sub.choices[command]._actions for f in a.option_strings}
        assert {s.flag for s in SETTINGS} | {"--reward", "--paper-defaults"} <= flags, command


def test_the_family_table_drives_loading_and_the_cli():
    from date_diffusion.cli.main import build_parser
    from date_diffusion.pipelines import date_pipeline_class

    for f in FAMILIES:
        assert date_pipeline_class(f.stock) is f.date_pipeline() is date_pipeline_class(f.date_class)
        assert issubclass(f.date_pipeline(), f.stock_pipeline()) and f.reward == "clip-l"
    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    family = next(a for a in sub.choices["generate"]._actions if "--family" in a.option_strings)
    assert tuple(family.choices) == NAMES


def test_a_real_model_gets_the_papers_reward_never_a_toy_one(model_dir):  # noqa: F811
    s = resolve_settings(model_dir)
    assert (s.reward, s.sources["reward"]) == ("clip-l", "family")
    assert s.date == DATEConfig() and (s.num_inference_steps, s.guidance_scale) == (50, 8.0)  # the paper on SD
    assert resolve_settings(model_dir, paper_defaults=True).reward == "clip-l"
    assert resolve_settings(model_dir, reward="toy-clip").reward == "toy-clip"  # only when the user names it


def test_a_real_model_offline_without_the_papers_clip_is_one_clear_line(model_dir, tmp_path, capsys, monkeypatch):  # noqa: F811, E501
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["generate", "a cat", "--model", str(model_dir), "--steps", "2", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("date-diffusion")]
    assert code in (1, 2) and "Traceback" not in err and len(lines) == 1, err
    assert "openai/clip-vit-large-patch14" in err and "hf download" in err
    assert not list(tmp_path.glob("*.png"))


@pytest.fixture(scope="module")
def toy_pipe():
    pipe = DATEPipeline.from_pretrained(TOY_WORLD)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# (command-line flags, page fields, API keyword arguments): the same overrides in each interface's words
CASES = {
    "defaults": ([], {}, {}),
    "overrides": (
        ["--rho", "1.5", "--update-steps", "0,4", "--grad-steps", "2", "--steps", "12", "--reward", "toy-clip",
         "--normalize", "false", "--guidance", "4"],
        {"rho": "1.5", "update_steps": "0, 4", "grad_steps": "2", "num_inference_steps": "12", "reward": "toy-clip",
         "normalize": "false", "guidance_scale": "4"},
        dict(rho=1.5, update_steps=[0, 4], grad_steps=2, num_inference_steps=12, reward="toy-clip", normalize=False,
             guidance_scale=4.0),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_cli_page_and_api_give_the_same_image(case, toy_pipe, tmp_path):
    from date_diffusion.ui.session import Form, Session

    flags, fields, kwargs = CASES[case]
    assert main(["generate", PROMPT, "--out", str(tmp_path), *flags]) == 0
    cli = np.asarray(Image.open(tmp_path / "a-red-circle-to-the-left-of-a-blue-square-s0.png").convert("RGB"))
    record = json.loads((tmp_path / "a-red-circle-to-the-left-of-a-blue-square-s0.json").read_text())

    page = Session(TOY_WORLD).compare(Form(PROMPT, seed="0", settings=fields))

    s = resolve_settings(TOY_WORLD, **kwargs)
    api = toy_pipe(PROMPT, generator=torch.Generator().manual_seed(0), reward=s.load_reward(), **s.call_arguments())

    assert np.array_equal(cli, np.asarray(page.date)) and np.array_equal(cli, np.asarray(api.images[0]))
    assert record["date"] == s.date.to_dict() and record["reward"] == s.reward and record["sources"] == s.sources
    assert page.settings == s
    assert record["trace"]["updates"] and all(u["update_norm"] > 0 for u in record["trace"]["updates"])


def test_the_readmes_laptop_example_runs_quietly_and_saves_the_main_commands_image_with_its_record(tmp_path):
    """The README's block, as a new user runs it (a fresh interpreter): no library notices or loading bars, only the
    pipeline's own sampling bar, the user's own logging and the libraries' other remarks untouched; its PNG is the
    main command's DATE image and carries the same settings (`info` reads them)."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    from date_diffusion.outputs import read_png_metadata

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Python, on a laptop", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    mine = "import logging\nlogging.basicConfig()\nlogging.getLogger('mine').warning('my own record')\n"
    theirs = "\nfrom transformers.utils import logging as tl\ntl.get_logger('transformers.x').warning('their remark')\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", mine + code + theirs], cwd=tmp_path, capture_output=True, text=True,
                         env=env, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout == ""
    lines = [line for line in res.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert "WARNING:mine:my own record" in lines and any("their remark" in line for line in lines)
    bars = [line for line in lines if "my own record" not in line and "their remark" not in line]
    assert bars and all(re.search(r"\| +\d+/50 \[", line) for line in bars), bars  # the sampling bar, nothing else
    assert main(["generate", PROMPT, "--out", str(tmp_path / "cli")]) == 0
    cli_png = tmp_path / "cli" / "a-red-circle-to-the-left-of-a-blue-square-s0.png"
    assert np.array_equal(np.asarray(Image.open(tmp_path / "toy.png").convert("RGB")),
                          np.asarray(Image.open(cli_png).convert("RGB")))  # fmt: skip
    ours, cli = (read_png_metadata(p)["record"] for p in (tmp_path / "toy.png", cli_png))
    same = ("prompt", "seed", "steps", "guidance_scale", "height", "width", "scheduler", "dtype", "method", "date",
            "reward", "trace", "pipeline")  # fmt: skip
    assert {k: ours[k] for k in same} == {k: cli[k] for k in same}
    assert Path(ours["model"]) == Path(cli["model"])
    assert main(["info", str(tmp_path / "toy.png")]) == 0


def test_the_package_lists_its_public_names():
    import date_diffusion

    names = dir(date_diffusion)
    assert {"DATEPipeline", "DATEConfig", "TOY_WORLD", "resolve_settings", "CLIPScoreReward"} <= set(names)
    assert all(getattr(date_diffusion, n) is not None for n in ("TOY_WORLD", "resolve_settings", "FAMILIES"))


def test_the_readmes_picture_is_what_the_main_command_writes(tmp_path):
    """docs/images/compare.png is the main command's grid: a fresh run reproduces each panel's pixels (small float
    slack) and each header's text. The headers' rendering is left out: it follows the installed Pillow's font
    drawing, which changes between releases (the `ui` extra keeps Pillow below 13, a plain install may not)."""
    from pathlib import Path

    from date_diffusion.grids import header_lines
    from date_diffusion.outputs import read_png_metadata

    assert main(["generate", PROMPT, "--compare", "--out", str(tmp_path)]) == 0
    made_path = tmp_path / "a-red-circle-to-the-left-of-a-blue-square-s0-compare.png"
    shown_path = Path(__file__).resolve().parents[1] / "docs" / "images" / "compare.png"
    made, shown = (np.asarray(Image.open(p).convert("RGB")).astype(int) for p in (made_path, shown_path))
    made_panels, shown_panels = (read_png_metadata(p)["record"]["panels"] for p in (made_path, shown_path))
    assert made.shape == shown.shape and len(made_panels) == len(shown_panels) == 3
    for ours, theirs in zip(made_panels, shown_panels):
        assert ours["box"] == theirs["box"]
        left, top, right, bottom = ours["box"]
        assert np.abs(made[top:bottom, left:right] - shown[top:bottom, left:right]).max() <= 2
        assert header_lines(ours) == header_lines(theirs)


@pytest.mark.parametrize("flags", [["--rho", "abc"], ["--reward", "clip"], ["--update-steps", "0,99", "--steps", "10"]])
def test_a_refused_command_leaves_no_new_output_folder(tmp_path, capsys, flags):
    out = tmp_path / "new"
    assert main(["generate", PROMPT, "--out", str(out), *flags]) == 2
    assert not out.exists() and "Traceback" not in capsys.readouterr().err
