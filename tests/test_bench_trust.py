"""Every reader of a bench run's records (the resume, `report`, the export, the web page) reads only the run's own
(method, prompt, seed) images, each verified by its fingerprints, through one bounded reader of the run folder's
files; anything else is one usage error line naming it."""

import json
import os
import shutil

import pytest

from date_diffusion.bench.runner import sealed
from date_diffusion.cli.main import main

BENCH = ["bench", "--suite", "toy", "--limit", "2", "--seeds", "1", "--steps", "2", "--methods", "fixed date"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("trust") / "base"
    assert main([*BENCH, "--out", str(out)]) == 0
    return out


@pytest.fixture
def run(base, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(base, out)
    return out


def record_path(run, method="date", index=0, seed=1000):
    return run / "images" / method / f"{index:05d}" / "samples" / f"{seed:05d}.json"


def edit(path, resealed=False, **fields):
    record = {**json.loads(path.read_text()), **fields}
    if resealed:
        record["sealed"] = sealed(record)
    path.write_text(json.dumps(record))


def refused(capsys, argv, *names):
    """`argv` is a usage error: exit 2, one line on stderr naming each of `names`, no results written."""
    out = next(a for a in argv[1:] if not a.startswith("-")) if argv[0] == "report" else argv[argv.index("--out") + 1]
    results = os.path.join(out, "results.md")
    before = os.path.getmtime(results) if os.path.exists(results) else None
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for name in names:
        assert str(name) in err, err
    after = os.path.getmtime(results) if os.path.exists(results) else None
    assert after == before
    return err


def test_report_refuses_a_record_edited_by_hand(run, capsys):
    """H1: `report` and `report --export` verify the fingerprints a resume checks."""
    edit(record_path(run), exact=7.0)
    err = refused(capsys, ["report", str(run)], record_path(run))
    assert "changed after it was written" in err
    refused(capsys, ["report", str(run), "--export", "t2i-compbench", str(run.parent / "exp")], record_path(run))
    assert not (run.parent / "exp").exists()


def test_report_refuses_a_resealed_record_of_another_category(run, capsys):
    """H1: a record sealed again after an edit still differs from the run's record of its prompt."""
    edit(record_path(run), resealed=True, category="single\u202e")
    refused(capsys, ["report", str(run)], record_path(run).with_suffix(".png"), "category is not this image's")
    assert "\u202e" not in (run / "results.md").read_text()


def test_a_stray_image_is_named_by_bench_and_report(run, capsys):
    """H2: only the run's own (method, prompt, seed) records are read; anything else under images/ is named."""
    samples = record_path(run, "fixed").parent
    for suffix in (".png", ".json"):
        shutil.copy(samples / f"01000{suffix}", samples / f"01007{suffix}")
    for argv in (["report", str(run)], [*BENCH, "--out", str(run)]):
        err = refused(capsys, argv, samples / "01007.json", samples / "01007.png")
        assert "not an image of this run" in err and "move them out" in err


def test_a_copied_prompt_folder_is_named_with_the_true_reason(run, capsys):
    shutil.copytree(run / "images" / "fixed" / "00000", run / "images" / "fixed" / "00099")
    for argv in (["report", str(run)], [*BENCH, "--out", str(run)]):
        err = refused(capsys, argv, run / "images" / "fixed" / "00099")
        assert "not a prompt this run selects" in err and "earlier version" not in err


def test_a_fifo_or_a_device_in_the_run_folder_is_named_not_read(run, capsys):
    """M1: every read of a run folder file checks it is a regular file of bounded size first."""
    rec = record_path(run, "fixed")
    rec.unlink()
    os.mkfifo(rec)
    for argv in (["report", str(run)], [*BENCH, "--out", str(run)]):
        assert "is a FIFO, not a regular file" in refused(capsys, argv, rec)
    rec.unlink()
    prompt = rec.parent.parent / "prompt.json"
    prompt.unlink()
    prompt.symlink_to("/dev/zero")
    for argv in (["report", str(run)], [*BENCH, "--out", str(run)]):
        assert "is a device, not a regular file" in refused(capsys, argv, prompt)


def test_a_big_record_is_named_not_read(run, capsys):
    rec = record_path(run)
    rec.write_text(json.dumps({**json.loads(rec.read_text()), "pad": "x" * 1_100_000}))
    assert "larger than such a file ever is" in refused(capsys, ["report", str(run)], rec)


@pytest.mark.parametrize(
    "fields, why",
    [
        ({"seed": -5}, "field 'seed' must be in [0, 2**63 - 1]"),  # M2
        ({"index": -1}, "field 'index' must be in [0,"),
        ({"index": True}, "field 'index' must be int"),  # L1
        ({"reward": float("nan")}, "field 'reward' must be number"),
    ],
)
def test_a_record_out_of_its_bounds_is_a_usage_error(run, capsys, fields, why):
    edit(record_path(run), **fields)
    assert why in refused(capsys, ["report", str(run)], record_path(run))


def test_an_empty_record_is_a_usage_error_for_report(run, capsys):
    """L1: a damaged record read by report: exit 2, one line (bench makes it again)."""
    record_path(run).write_text("{}")
    assert "field 'index' is missing" in refused(capsys, ["report", str(run)], record_path(run))


def test_run_json_listing_a_seed_twice_is_refused(run, capsys):
    """L2"""
    settings = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**settings, "seeds": [1000, 1000]}))
    assert "field 'seeds' lists 1000 twice" in refused(capsys, ["report", str(run)], run / "run.json")


def test_the_untrusted_images_refusal_is_one_line(run, capsys):
    """L3: the count, the first two named, the fix: one line."""
    records = sorted((run / "images").glob("*/*/samples/*.json"))
    for path in records:
        edit(path, exact=1.0 - json.loads(path.read_text())["exact"])
    first = record_path(run, "fixed").with_suffix(".png")  # the first method's first prompt
    err = refused(capsys, [*BENCH, "--out", str(run)], first, "and 2 more")
    assert f"holds {len(records)} file(s)" in err and "use another --out" in err


def test_a_prompt_record_replaced_by_a_folder_is_called_a_folder(run, capsys):
    """L4"""
    prompt = record_path(run, "fixed").parent.parent / "prompt.json"
    prompt.unlink()
    prompt.mkdir()
    for argv in (["report", str(run)], [*BENCH, "--out", str(run)]):
        err = refused(capsys, argv, prompt)
        assert "is a folder, not a file" in err and "changed after" not in err


@pytest.mark.parametrize("spec", ["date:rho=0", "date:rho=-0", "date:rho=1e-320", "date:rel=0", "date+ae:rho=0,res=4"])
def test_a_date_method_that_cannot_act_is_refused_before_any_work(tmp_path, capsys, spec):
    """M3: the test generate uses (`DATEConfig.acts`): never a DATE label on the fixed sampler's images."""
    out = tmp_path / "run"
    err = refused(capsys, [*BENCH[:-1], f"fixed {spec}", "--out", str(out)], spec)
    assert "DATE cannot act" in err and not out.exists()


def test_generate_and_bench_share_the_zero_step_test():
    from date_diffusion.core.config import DATEConfig

    assert not DATEConfig(rho=1e-320).moves and not DATEConfig(rho=0.0).acts(10)
    assert DATEConfig(rho=1e-3).acts(10)


@pytest.mark.parametrize("spec", ["ae:res=7", "date+ae:rho=1,res=7"])
def test_an_attention_resolution_the_model_lacks_is_refused_before_run_json(tmp_path, capsys, spec):
    """M4: checked once the model is loaded, before run.json is written."""
    out = tmp_path / "run"
    err = refused(capsys, [*BENCH[:-1], f"fixed {spec}", "--out", str(out)], spec, "2, 4, 8")
    assert "res=7" in err and not (out / "run.json").exists()
