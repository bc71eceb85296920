"""Tests generated from the parsers: every option of every command that takes a value, and every benchmark method
key, gets the same bad values; each is refused before any work (exit code 2, one line naming the option, nothing
written) or accepted as a finite, bounded value. A new option or key is covered without writing a test.

The cases run at the parse and validation layer (`cli.common.validate`, what every command runs before any work);
a handful of accepted values run end to end on the toy world with two steps."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
from conftest import overridden
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from date_diffusion.cli.common import CLIError, command_parsers, kind_of, takes_value, validate
from date_diffusion.cli.main import build_parser, main
from date_diffusion.core.settings import BY_KEY, SettingError

BAD = ["0", "-1", "nan", "inf", "1e308", str(10**30), "", "abc"]
PARSER = build_parser()


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A folder with what the commands' required arguments name: an image, a bench run, a toy-world run."""
    root = tmp_path_factory.mktemp("generated")
    Image.new("RGB", (16, 16), "red").save(root / "image.png")
    (root / "bench").mkdir()
    (root / "bench" / "run.json").write_text(json.dumps({"suite": "toy", "methods": {"fixed": {"method": "fixed"}}}))
    (root / "train").mkdir()
    return root


def base(command: str, root) -> dict:
    """The least each command needs, by option (or positional) name."""
    image, run, out = str(root / "image.png"), str(root / "bench"), str(root / "new-out")
    return {
        "generate": {"prompts": ["a red circle"], "--out": out},
        "edit": {"image": image, "--source-prompt": "a red circle", "--target-prompt": "a blue circle", "--out": out},
        "info": {"images": [image]},
        "toyworld": {},
        "toyworld train": {"--out": out},
        "toyworld train-judge": {"--out": out},
        "toyworld finalize": {"--out": str(root / "train")},
        "toyworld audit": {"run_dir": run},
        "toyworld export": {
            "--from": str(root / "train"),
            "--guidance": "5",
            "--rho": "0.5",
            "--update-every": "10",
            "--dest": out,
        },  # fmt: skip
        "ui": {},
        "bench": {"--suite": "toy", "--out": out},
        "bench-perf": {},
        "report": {"dir": run},
    }[command]


def name_of(action: argparse.Action) -> str:
    return action.option_strings[-1] if action.option_strings else action.dest


def argv_for(command: str, parser, values: dict) -> list[str]:
    options, positionals = [], []
    for action in parser._actions:
        name = name_of(action)
        if name not in values:
            continue
        value = values[name]
        if action.option_strings:
            options += [f"{name}={v}" for v in (value if isinstance(value, list) else [value])]
        else:
            positionals += value if isinstance(value, list) else [value]
    return [*command.split(), *options, *(["--", *positionals] if positionals else [])]


def outcome(argv: list[str], capsys):
    """('usage', message) for argparse's refusal, ('refused', message) for the command's, ('accepted', args)."""
    try:
        args = PARSER.parse_args(argv)
    except SystemExit as exit:
        assert exit.code == 2, argv
        return "usage", [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    try:
        validate(args)
    except (CLIError, OSError) as err:  # OSError: ModelNotFoundError, which main reports as a usage error
        return "refused", [str(err)]
    return "accepted", args


def tree(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def cases():
    for command, parser in command_parsers(PARSER):
        for action in value_actions(parser):
            yield pytest.param(command, name_of(action), id=f"{command} {name_of(action)}")


def value_actions(parser):
    return [a for a in parser._actions if takes_value(a) and not isinstance(a, argparse._SubParsersAction)]


def test_every_option_that_takes_a_value_has_a_kind():
    missing = [f"{c} {name_of(a)}" for c, p in command_parsers(PARSER) for a in value_actions(p) if not kind_of(c, a)]
    assert missing == [], f"declare their kinds in cli/common.py OPTION_KINDS: {missing}"


@pytest.mark.parametrize("command, option", list(cases()))
def test_every_bad_value_is_refused_naming_the_option_or_accepted_finite(place, monkeypatch, capsys, command, option):
    monkeypatch.chdir(place)
    parser = dict(command_parsers(PARSER))[command]
    action = next(a for a in parser._actions if name_of(a) == option)
    shown = {option, action.dest.upper(), action.metavar or option}
    before = tree(place)
    for value in BAD:
        values = {**base(command, place), option: [value] if action.nargs in ("+", "*") else value}
        kind, result = outcome(argv_for(command, parser, values), capsys)
        assert tree(place) == before, (option, value)  # nothing written, nothing created
        if kind == "accepted":
            given = getattr(result, action.dest)
            for v in given if isinstance(given, list) else [given]:
                assert not isinstance(v, float) or math.isfinite(v), (option, value, v)
                assert not isinstance(v, int) or abs(v) < 2**63, (option, value, v)
        else:
            assert len(result) == 1 and "\n" not in result[0], (option, value, result)
            named = any(name in result[0] for name in shown) or f"argument {option}" in result[0]
            assert named, (option, value, result)


def method_keys():
    from date_diffusion.evaluation.methods import METHODS

    for cls in METHODS.values():
        keys = [*cls.options, *(BY_KEY if cls.date_keys else ())]
        for key in keys:
            yield pytest.param(cls.kind, key, id=f"{cls.kind}:{key}")


@pytest.mark.parametrize("kind, key", list(method_keys()))
def test_every_bad_method_key_is_refused_naming_it_or_accepted_finite(kind, key):
    from date_diffusion.evaluation.methods import parse_method

    for value in BAD:
        spec = f"{kind}:{key}={value}"
        try:
            method = parse_method(spec)
        except (SettingError, ValueError) as err:
            assert key in str(err) and "\n" not in str(err), (spec, err)
            continue
        record = json.dumps(method.record(), allow_nan=False)  # finite: NaN and infinities do not serialise
        assert record, spec


@pytest.mark.parametrize("spec", ["fixed@0", "fixed@-1", "fixed@nan", "best-of-0", "best-of-100000", "fixed@1001"])
def test_counts_in_method_names_are_bounded(spec):
    from date_diffusion.evaluation.methods import parse_method

    with pytest.raises(ValueError, match=rf"from 1 to|unknown method {spec!r}"):
        parse_method(spec)


@pytest.mark.parametrize(
    "argv",
    [
        ["--seed", "0", "--steps", "2"],
        ["--steps", "2", "--update-every", "1", "--rho", "0", "--negative-prompt", ""],
        ["--steps", "2", "--height", "8", "--width", "16", "--update-steps", "0", "--out", "nan"],
    ],
    ids=["seed-0", "rho-0", "smallest"],
)
def test_accepted_values_run_to_finite_images(tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    argv = overridden(["generate", "a red circle", "--out", str(tmp_path / "o")], argv)
    assert main(argv) == 0
    out = tmp_path / ("nan" if "nan" in argv else "o")
    record = json.loads(next(out.glob("*.json")).read_text())
    values = [record["trace"]["final_distance"]]
    values += [u[k] for u in record["trace"]["updates"] for k in ("reward_before", "reward_after")]
    assert all(math.isfinite(v) for v in values)
    assert np.asarray(Image.open(next(out.glob("*.png")))).std() > 0  # not a black or flat image


# ---------------------------------------------------------------- the Python API's entry points

NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70), st.just("abc"),
                    st.just(""), st.none(), st.booleans())  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from([s for s in BY_KEY.values()]), value=NUMBERS)
def test_date_config_takes_a_bounded_value_or_names_the_field(field, value):
    from date_diffusion import DATEConfig

    try:
        config = DATEConfig(**{field.field: value})
    except SettingError as err:
        assert field.field in str(err), (field.field, value, err)
        return
    assert json.dumps(config.to_dict(), allow_nan=False)
    stored = getattr(config, field.field)
    assert stored is None or isinstance(stored, (bool, str, tuple)) or math.isfinite(stored)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["num_inference_steps", "guidance_scale"]), value=NUMBERS)
def test_pipeline_call_arguments_are_checked_before_any_work(name, value):
    from date_diffusion.pipelines.options import CALL_KINDS, check_sampling
    from date_diffusion.pipelines.request import Request

    call = Request(num_inference_steps=4, guidance_scale=5.0).replace(**{name: value})
    try:
        call = check_sampling(call)
    except SettingError as err:
        assert f"`{name}`" in str(err)
        return
    stored = getattr(call, name)
    assert stored is None or (math.isfinite(stored) and CALL_KINDS[name].low <= stored <= CALL_KINDS[name].high)
