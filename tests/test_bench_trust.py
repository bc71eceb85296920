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


def test_an_image_of_another_format_under_its_png_name_is_named(run, capsys):
    """The same pixels saved as a lossless WebP under the PNG's name: the fingerprint of the pixels matches, but the
    file is no PNG (an export would hand a WebP on as .png): named by bench, report and the export alike."""
    from PIL import Image

    png = record_path(run).with_suffix(".png")
    with Image.open(png) as image:
        image.load()
        image.save(png, format="WEBP", lossless=True)
    for argv in (["report", str(run)], [*BENCH, "--out", str(run)]):
        err = refused(capsys, argv, png)
        assert "is not a PNG file" in err
    refused(capsys, ["report", str(run), "--export", "t2i-compbench", str(run.parent / "exp")], png)


def _resaved(png, texts=None, **save):
    """The PNG saved again by Pillow with its pixels and text chunks (`texts`: each text changed), `save` added."""
    from PIL import Image, PngImagePlugin

    with Image.open(png) as image:
        image.load()
        info = PngImagePlugin.PngInfo()
        for key, value in (texts or image.text).items():
            info.add_text(key, value)
        image.save(png, pnginfo=info, **save)


def _animated(png):  # its own image as the APNG's hidden default image, a blue frame as what browsers show
    from PIL import Image

    with Image.open(png) as image:
        size, texts = image.size, dict(image.text)
    _resaved(png, texts, save_all=True, append_images=[Image.new("RGB", size, "blue")], default_image=True, loop=0)


def _with_parameters(png):  # another prompt and seed in the `parameters` text other tools read
    from PIL import Image

    with Image.open(png) as image:
        texts = dict(image.text)
    texts["parameters"] = texts["parameters"].replace("Seed: 1000", "Seed: 77")
    _resaved(png, texts)


def _with_text(png):
    from PIL import Image

    with Image.open(png) as image:
        _resaved(png, {**image.text, "Software": "an editor"})


@pytest.mark.parametrize(
    "change, said",
    [
        (_animated, "it holds a chunk 'acTL' (an animation), which date-diffusion never writes"),
        (lambda png: png.write_bytes(png.read_bytes() + b"PK\x03\x04"), "4 bytes follow its end (IEND)"),
        (_with_text, "it holds a text 'Software', which date-diffusion never writes"),
        (lambda png: png.write_bytes(png.read_bytes()[:8] + _gamma() + png.read_bytes()[8:]), "a chunk 'gAMA'"),
        (_with_parameters, "the `parameters` text inside its PNG is not what its record says"),
    ],
)  # fmt: skip
def test_a_png_holding_what_bench_never_writes_is_named(run, capsys, change, said):
    """Round twenty-seven: an animated PNG over a run's image (the verified pixels as its hidden default image,
    another picture in the frames browsers show), bytes after its end, a gamma chunk or another program's text, and
    a `parameters` text rewritten to another prompt and seed were trusted, reported and exported; the page showed
    them under a verified caption. A run's PNG is laid out exactly as bench writes it, its `parameters` its record's;
    `info` says the same of such a file."""
    png = record_path(run).with_suffix(".png")
    change(png)
    for argv in (["report", str(run)], [*BENCH, "--out", str(run)]):
        err = refused(capsys, argv, png)
        assert said in err, err
    refused(capsys, ["report", str(run), "--export", "t2i-compbench", str(run.parent / "exp")], png)
    assert not (run.parent / "exp").exists()
    if "parameters" not in said:
        assert main(["info", str(png)]) == 0
        assert said in capsys.readouterr().err


def _gamma() -> bytes:
    import struct
    import zlib

    body = b"gAMA" + struct.pack(">I", 5000)
    return struct.pack(">I", 4) + body + struct.pack(">I", zlib.crc32(body))


def test_report_refuses_a_record_edited_by_hand(run, capsys):
    """`report` and `report --export` verify the fingerprints a resume checks."""
    edit(record_path(run), exact=7.0)
    err = refused(capsys, ["report", str(run)], record_path(run))
    assert "changed after it was written" in err
    refused(capsys, ["report", str(run), "--export", "t2i-compbench", str(run.parent / "exp")], record_path(run))
    assert not (run.parent / "exp").exists()


def test_report_refuses_a_resealed_record_of_another_category(run, capsys):
    """A record sealed again after an edit still differs from the run's record of its prompt."""
    edit(record_path(run), resealed=True, category="single\u202e")
    refused(capsys, ["report", str(run)], record_path(run).with_suffix(".png"), "category is not this image's")
    assert "\u202e" not in (run / "results.md").read_text()


def test_a_stray_image_is_named_by_bench_and_report(run, capsys):
    """Only the run's own (method, prompt, seed) records are read; anything else under images/ is named."""
    samples = record_path(run, "fixed").parent
    for suffix in (".png", ".json"):
        shutil.copy(samples / f"01000{suffix}", samples / f"01007{suffix}")
    for argv in (["report", str(run)], [*BENCH, "--out", str(run)]):
        err = refused(capsys, argv, samples / "01007.json", samples / "01007.png")
        assert "not an image of this run" in err and "move them out" in err


@pytest.mark.parametrize(
    "copied, said",
    [
        ("samples/01000 -> samples/1000", "1000.png: not a name a run writes (a run names it 01000.png)"),
        ("00000 -> 0", "0: not a name a run writes (a run names it 00000)"),
        ("00000 -> 00000x", "00000x: not a name a run writes"),
    ],
)  # fmt: skip
def test_a_run_number_spelled_otherwise_is_named_as_a_name_no_run_writes(run, capsys, copied, said):
    """Round twenty-three: a copy named `1000.png` (seed 1000 of the run, spelled without its zeros) was refused as
    "not an image of this run (its seeds are 1000-1000)", and a prompt folder `0` as "not a prompt this run
    selects": the reason named is the spelling, with the name a run writes."""
    prompt = run / "images" / "fixed" / "00000"
    source, target = copied.split(" -> ")
    if source.startswith("samples/"):
        for suffix in (".png", ".json"):
            shutil.copy(prompt / f"{source}{suffix}", prompt / f"{target}{suffix}")
    else:
        shutil.copytree(prompt, prompt.parent / target)
    err = refused(capsys, ["report", str(run)])
    assert said in err and "its seeds are" not in err and "selects" not in err, err


def test_a_stray_name_holding_a_line_break_or_a_byte_not_utf8_is_named_as_it_is(run, capsys):
    """Round twenty-five: a stray `01000<LF>.png` was named `01000 .png` (a file that is not there: the one-line
    printer joins line breaks) and a byte 0xFF as `\\udcff`: names found on disk are shown with their escapes
    (`core.text.name_of`)."""
    samples = record_path(run).parent
    (samples / "01000\n.png").touch()
    (samples / os.fsdecode(b"\xff.png")).touch()
    err = refused(capsys, ["report", str(run)])
    assert "01000\\n.png: not a name a run writes" in err and "\\xff.png: not a name a run writes" in err, err
    assert "udcff" not in err


def test_a_copied_prompt_folder_is_named_with_the_true_reason(run, capsys):
    shutil.copytree(run / "images" / "fixed" / "00000", run / "images" / "fixed" / "00099")
    for argv in (["report", str(run)], [*BENCH, "--out", str(run)]):
        err = refused(capsys, argv, run / "images" / "fixed" / "00099")
        assert "not a prompt this run selects" in err and "earlier version" not in err


def test_a_fifo_or_a_device_in_the_run_folder_is_named_not_read(run, capsys):
    """Every read of a run folder file checks it is a regular file of bounded size first."""
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
        ({"index": True}, "field 'index' must be a whole number"),  # L1
        ({"reward": float("nan")}, "field 'reward' must be a finite number or null"),
    ],
)
def test_a_record_out_of_its_bounds_is_a_usage_error(run, capsys, fields, why):
    edit(record_path(run), **fields)
    assert why in refused(capsys, ["report", str(run)], record_path(run))


def test_an_empty_record_is_a_usage_error_for_report(run, capsys):
    """A damaged record read by report: exit 2, one line (bench makes it again)."""
    record_path(run).write_text("{}")
    assert "field 'index' is missing" in refused(capsys, ["report", str(run)], record_path(run))


@pytest.mark.parametrize(
    "text, why",
    [
        ('"dtype": "float32 "', "field 'dtype' must be one of float32, float16, bfloat16, got \"float32 \""),
        ('"suite": "toy\\u200b"', "field 'suite' must be one of toy, toy-validation"),
        ('"scheduler": "eulerr"', "field 'scheduler' must be one of ddim"),
        ('"reward": "2*"', "field 'reward' is no reward spec (unknown reward ''"),
        ('"eval_clip": "toy-clip+"', "field 'eval_clip' is no reward spec"),
        ('"guidance": NaN', "field 'guidance' must be a finite number, got NaN"),
        ('"guidance": -Infinity', "got -Infinity"),
    ],
)
def test_run_json_holding_a_value_no_bench_writes_is_named_not_its_images(run, capsys, text, why):
    """Round eighteen: a run.json whose dtype was `"float32 "`, whose reward was no spec or whose suite had an
    invisible character passed its schema, and report blamed every image ("made with other settings") and told the
    user to move them out; a NaN was quoted `nan`. The file is named, with the field, in the file's spelling."""
    path = run / "run.json"
    name = text.split('"')[1]
    settings = {k: v for k, v in json.loads(path.read_text()).items() if k != name}
    path.write_text(json.dumps(settings)[:-1] + ", " + text + "}")
    assert why in refused(capsys, ["report", str(run)], path)


def test_run_json_listing_a_seed_twice_is_refused(run, capsys):
    settings = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**settings, "seeds": [1000, 1000]}))
    assert "field 'seeds' lists 1000 twice" in refused(capsys, ["report", str(run)], run / "run.json")


def test_the_untrusted_images_refusal_is_one_line(run, capsys):
    """The count, the first two named, the fix: one line."""
    records = sorted((run / "images").glob("*/*/samples/*.json"))
    for path in records:
        edit(path, exact=1.0 - json.loads(path.read_text())["exact"])
    first = record_path(run, "fixed").with_suffix(".png")  # the first method's first prompt
    err = refused(capsys, [*BENCH, "--out", str(run)], first, "and 2 more")
    assert f"holds {len(records)} file(s)" in err and "use another --out" in err


def test_a_prompt_record_replaced_by_a_folder_is_called_a_folder(run, capsys):
    prompt = record_path(run, "fixed").parent.parent / "prompt.json"
    prompt.unlink()
    prompt.mkdir()
    for argv in (["report", str(run)], [*BENCH, "--out", str(run)]):
        err = refused(capsys, argv, prompt)
        assert "is a folder, not a file" in err and "changed after" not in err


@pytest.mark.parametrize("spec", ["date:rho=0", "date:rho=-0", "date:rho=1e-320", "date:rel=0", "date+ae:rho=0,res=4"])
def test_a_date_method_that_cannot_act_is_refused_before_any_work(tmp_path, capsys, spec):
    """The test generate uses (`DATEConfig.acts`): never a DATE label on the fixed sampler's images."""
    out = tmp_path / "run"
    err = refused(capsys, [*BENCH[:-1], f"fixed {spec}", "--out", str(out)], spec)
    assert "DATE cannot act" in err and not out.exists()


def test_generate_and_bench_share_the_zero_step_test():
    from date_diffusion.core.config import DATEConfig

    assert not DATEConfig(rho=1e-320).moves and not DATEConfig(rho=0.0).acts(10)
    assert DATEConfig(rho=1e-3).acts(10)


@pytest.mark.parametrize("spec", ["ae:res=7", "date+ae:rho=1,res=7"])
def test_an_attention_resolution_the_model_lacks_is_refused_before_run_json(tmp_path, capsys, spec):
    """Checked once the model is loaded, before run.json is written."""
    out = tmp_path / "run"
    err = refused(capsys, [*BENCH[:-1], f"fixed {spec}", "--out", str(out)], spec, "2, 4, 8")
    assert "res=7" in err and not (out / "run.json").exists()


# ---------------------------------------------------------------- methods checked up front, the run's files


FAST = ["bench", "--suite", "toy", "--limit", "1", "--seeds", "1", "--steps", "3"]


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("select:n=2", "past the run's 3 steps"),
        ("select:n=2,at=99", "past the run's 3 steps"),
        ("select:n=2,at=2", "before the selection"),
        ("best-of-1", "cannot act"),
        ("ug:scale=1e-320", "cannot act"),
        ("ebca:tau=0", "cannot act"),
        ("ebca:attn=0,norm=0", "cannot act"),
        ("ae:iters=0", "cannot act"),
        ("ae:scale=0", "cannot act"),
        ("date+ae:rho=1,iters=0", "cannot act"),
        ("date:rel=1e-45", "DATE cannot act"),
    ],
)
def test_each_method_is_checked_against_the_run_before_any_work(tmp_path, capsys, spec, why):
    """`Method.check`, before run.json or any image is written."""
    out = tmp_path / "run"
    err = refused(capsys, [*FAST, "--methods", f"fixed {spec}", "--out", str(out)], spec)
    assert why in err and not out.exists()


def test_relative_step_below_float32_resolution_cannot_act():
    from date_diffusion.core.config import MIN_RELATIVE, DATEConfig

    assert not DATEConfig(rho_relative=1e-45).moves and not DATEConfig(rho_relative=MIN_RELATIVE / 2).moves
    assert DATEConfig(rho_relative=MIN_RELATIVE).moves and DATEConfig(rho_relative=0.002).acts(10)


def test_a_long_method_label_gets_a_bounded_folder_name():
    """A 300-character spec names a folder a file system takes; two labels never share one."""
    from date_diffusion.evaluation.methods import MAX_SLUG, parse_method

    views = [f"aug{k}(toy-clip-s1)" for k in range(1, 15)]  # 14 different rewards: a spec of about 300 characters
    spec = "date:reward=mean(" + ";".join(views) + ")"
    other = "date:reward=mean(" + ";".join([*views[:-1], "toy-clip"]) + ")"
    a, b = parse_method(spec).slug, parse_method(other).slug
    assert len(a) <= MAX_SLUG and len(b) <= MAX_SLUG and a != b
    assert parse_method("date:rho=1").slug == "date_rho=1"  # short labels keep their folder


def test_audit_skips_a_record_edited_by_hand(run, capsys):
    """`toyworld audit` reads what the report trusts, naming the rest as skipped."""
    edit(record_path(run), prompt="a hand-edited prompt")
    assert main(["toyworld", "audit", str(run)]) == 0
    out, err = capsys.readouterr()
    assert "skipped" in err and str(record_path(run).with_suffix(".png")) in err
    assert "hand-edited" not in out


def test_the_run_view_names_a_plot_it_cannot_read_and_never_reads_results_md(run, tmp_path):
    """A folder named like a plot is named, never read; results.md as a FIFO (which would hang a reader) is not
    read at all: the tab's table comes from the verified records."""
    from date_diffusion.ui.runview import load_run

    (run / "results.md").unlink()
    os.mkfifo(run / "results.md")
    assert "| date |" in load_run(run, tmp_path / "a")["markdown"]
    (run / "evil.png").mkdir()
    with pytest.raises(ValueError, match="evil.png"):
        load_run(run, tmp_path / "b")
    (run / "evil.png").rmdir()
    (run / "evil.png").symlink_to(run / "run.json")  # a link would serve a file from elsewhere
    with pytest.raises(ValueError, match="evil.png is a symbolic link, not a plot"):
        load_run(run, tmp_path / "c")
    (run / "evil.png").unlink()
    (run / "evil.png").write_text("not a picture")
    with pytest.raises(ValueError, match="evil.png is not a PNG file"):
        load_run(run, tmp_path / "d")


def test_the_run_tab_shows_the_verified_records_not_an_edited_or_stale_results_md(run, tmp_path):
    """results.md edited to say DATE passes everything, then an image removed after the report: the tab's table is
    computed from the records it verifies (the exact accuracy they hold, n without the removed image)."""
    from date_diffusion.ui.runview import load_run

    text = (run / "results.md").read_text()
    (run / "results.md").write_text(text.replace("| date | 2 |", "| date | 2 | 100.0 (edited)"))
    for suffix in (".png", ".json"):
        record_path(run).with_suffix(suffix).unlink()
    shown = load_run(run, tmp_path)["markdown"]
    assert "(edited)" not in shown and "| date | 1 |" in shown and "| fixed | 2 |" in shown, shown


@pytest.mark.parametrize("value", [123, "/nonexistent/weights.pth"])
def test_report_names_a_bad_inception_weights_field(run, capsys, value):
    """Run.json's schema types every field; the report checks the files it will read."""
    path = run / "run.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "inception_weights": value}))
    refused(capsys, ["report", str(run)], path, "inception_weights")


def test_run_schema_types_every_run_setting():
    from dataclasses import fields

    from date_diffusion.bench.runner import RunSettings
    from date_diffusion.schemas import RUN

    assert {f.name for f in fields(RunSettings)} <= set(RUN.required) | set(RUN.optional)


def test_a_changed_prompts_file_is_named_and_a_proc_file_refused(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\na blue square\n")
    out = tmp_path / "run"
    argv = ["bench", "--suite", "prompts", "--prompts-file", str(prompts), "--limit", "1", "--seeds", "1",
            "--steps", "2", "--methods", "fixed", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    prompts.write_text("a green circle\na blue square\n")
    err = refused(capsys, ["report", str(out)], prompts, "changed since the run")
    assert "prompt.json" not in err
    argv[argv.index(str(prompts))] = "/proc/self/status"
    refused(capsys, [*argv[:-1], str(tmp_path / "proc")], "/proc/self/status", "not a regular file")
    assert not (tmp_path / "proc").exists()


def test_exports_into_images_and_a_linked_images_folder_are_refused(run, tmp_path, capsys):
    refused(
        capsys,
        ["report", str(run), "--export", "t2i-compbench", str(run / "images" / "x")],
        "lies inside the run's folder",
    )
    # round twelve: any folder inside the run (not only images/) is the run's, never an export's
    refused(
        capsys, ["report", str(run), "--export", "t2i-compbench", str(run / "images2")], "lies inside the run's folder"
    )
    assert not (run / "images2").exists()
    other = tmp_path / "other"
    shutil.copytree(run, other)
    shutil.rmtree(other / "images")
    (other / "images").symlink_to(run / "images")
    refused(capsys, ["report", str(other)], other / "images", "symbolic link")


def test_a_model_path_with_a_trailing_slash_resumes(run, capsys):
    """Path settings compared as the run spells them."""
    model = json.loads((run / "run.json").read_text())["model"]
    assert main([*BENCH, "--model", model + "/", "--out", str(run)]) == 0


def test_bench_perf_shows_no_ratio_without_a_fixed_variant():
    from date_diffusion.perf.bench_perf import summarize, table

    runs = [{"variant": "date", "total_s": 2.0, "per_image_s": 2.0, "rss_mb": 10.0, "steps": 3, "update_steps": [0]}]
    header = dict(model="toy", steps=3, update_every=10, n_updates=1, dtype="float32", device="cpu", threads=1,
                  repeats=1, machine="m")  # fmt: skip
    row = next(line for line in table(summarize(runs, ["date"], "rss_mb"), header, "rss_mb").splitlines()
               if line.startswith("| date"))  # fmt: skip
    assert "1.000" not in row and row.rstrip(" |").endswith("-")


@pytest.mark.parametrize("change", ["config", "middle of the weights"])
def test_a_resume_over_a_model_whose_files_changed_is_refused(tmp_path, capsys, change):
    """Round nine: the run's fingerprint held the model's path only, so a resume after a config edit (or retrained
    weights) kept the old model's images beside the new model's under one run. Round twenty-one: weights changed
    only in their middle (one layer fine-tuned: same size, same first and last MiB) passed the sampled
    `model_files`; `model_content` reads every file whole."""
    import shutil

    from date_diffusion import TOY_WORLD
    from date_diffusion.cli.main import main

    model = tmp_path / "model"
    shutil.copytree(TOY_WORLD, model)
    argv = ["bench", "--suite", "toy", "--limit", "1", "--seeds", "1", "--steps", "2", "--methods", "fixed",
            "--model", str(model), "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 0
    if change == "config":
        config = model / "scheduler" / "scheduler_config.json"
        config.write_text(config.read_text().replace('"beta_end": 0.012', '"beta_end": 0.02'))
    else:
        weights = model / "unet" / "diffusion_pytorch_model.safetensors"
        data = bytearray(weights.read_bytes())
        assert len(data) > 4 << 20  # its middle is more than a MiB from either end
        data[len(data) // 2] ^= 1  # one bit of one weight
        weights.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(argv) == 2
    assert "the model's configs or weights changed since the run" in capsys.readouterr().err


def test_a_run_json_of_an_earlier_version_without_model_content_is_resumed_and_checked_from_then_on(tmp_path, capsys):
    """`model_content` (every file whole) is new: a run.json without it resumes (its `model_files` still
    compared), records it, and a later change in the middle of the weights is then named."""
    import shutil

    from date_diffusion import TOY_WORLD
    from date_diffusion.cli.main import main

    model, run = tmp_path / "model", tmp_path / "run"
    shutil.copytree(TOY_WORLD, model)
    argv = ["bench", "--suite", "toy", "--limit", "1", "--seeds", "1", "--steps", "2", "--methods", "fixed",
            "--model", str(model), "--out", str(run)]  # fmt: skip
    assert main(argv) == 0
    settings = json.loads((run / "run.json").read_text())
    content = settings.pop("model_content")
    (run / "run.json").write_text(json.dumps(settings))
    assert main(argv) == 0 and "0 to make" in capsys.readouterr().err
    assert json.loads((run / "run.json").read_text())["model_content"] == content
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1
    weights.write_bytes(bytes(data))
    assert main(argv) == 2 and "weights changed since the run" in capsys.readouterr().err


def test_a_number_written_without_its_point_in_run_json_is_the_same_setting_for_bench_and_report(run, capsys):
    """Round fourteen: `"guidance": 5` (for 5.0) made `report` call every image "made with other settings" while
    `bench` trusted them and wrote the file back: a run's real settings are read as floats whatever their spelling
    (`bench.runner.run_settings`, `core.settings.Real`), so both readers agree, and bench leaves the file as it is."""
    path = run / "run.json"
    settings = json.loads(path.read_text())
    settings["guidance"] = int(settings["guidance"])
    settings["methods"]["date"]["date"]["prior_weight"] = 0
    text = json.dumps(settings, indent=1)
    path.write_text(text)
    assert main(["report", str(run)]) == 0
    assert main([*BENCH, "--out", str(run)]) == 0 and "0 to make" in capsys.readouterr().err
    assert path.read_text() == text


@pytest.mark.parametrize("lack", ["image", "seed"])
def test_report_of_an_incomplete_run_says_what_it_lacks(run, capsys, lack):
    """Round fourteen: with an image deleted, or a seed added to run.json, `report` showed means over other prompt
    sets per method without a word: it says which images are missing, on stderr and under results.md's title."""
    if lack == "image":
        for path in (record_path(run), record_path(run).with_suffix(".png")):
            path.unlink()
        said = "'date' lacks prompt 0"
    else:
        settings = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**settings, "seeds": [*settings["seeds"], 1001]}))
        said = "'fixed' lacks prompt 0"
    assert main(["report", str(run)]) == 0
    assert f"date-diffusion report: note: an incomplete run: {said}" in capsys.readouterr().err
    assert f"**Incomplete run:** {said}" in (run / "results.md").read_text()
    assert json.loads((run / "results.json").read_text())["incomplete"].startswith(said)
    from date_diffusion.ui.runview import load_run

    shown = load_run(run, run.parent / "shown")["markdown"]
    assert f"**Incomplete run:** {said}" in shown  # the page's run tab says it too


def test_a_removed_or_reindented_prompt_record_is_not_a_missing_image(run, capsys):
    """Round fifteen: with a prompt folder's prompt.json removed, `report` wrote a false "incomplete run" (the image
    is there and trusted) and the export said the run was not whole; re-indented with the same content, it was
    refused as changed. The report's missing images come from the walk that trusts the records (`read_trusted`),
    prompt.json is read whole, and the export names the record it lacks."""
    prompt = run / "images" / "fixed" / "00000" / "prompt.json"
    prompt.write_text(json.dumps(json.loads(prompt.read_text()), indent=4))
    assert main(["report", str(run)]) == 0 and "incomplete" not in capsys.readouterr().err
    prompt.unlink()
    assert main(["report", str(run)]) == 0 and "incomplete" not in capsys.readouterr().err
    assert main(["report", str(run), "--export", "t2i-compbench", str(run.parent / "export")]) == 2
    assert "00000 holds images but no prompt.json" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["generate", "edit-suite"])
def test_every_command_refuses_a_proc_prompts_file(tmp_path, capsys, command):
    """Round eighteen: `generate --prompts-file /proc/self/status` made 59 images of its lines, where bench refused
    the file: the check lives in the one reader of prompts files (`bench.suites.read_captions_and_columns`, and the
    editing suite's `read_edit_rows`)."""
    if command == "generate":
        argv = ["generate", "--prompts-file", "/proc/self/status", "--steps", "1", "--out", str(tmp_path / "o")]
    else:
        argv = ["bench", "--suite", "edit", "--prompts-file", "/proc/self/status", "--steps", "2", "--seeds", "1",
                "--methods", "fixed", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "/proc/self/status" in err and "not a regular file" in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_a_prompts_file_too_large_is_named_as_too_large_not_as_irregular(tmp_path, capsys):
    """Round twenty-four: a 2 GB (sparse) prompts file was refused as "larger than such a file ever is ..., not a
    regular file; give a regular text ... file": it is one, and the fix was what was given."""
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate(2 << 30)
    assert main(["generate", "--prompts-file", str(big), "--steps", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "larger than such a file ever is" in err and "split it into smaller files" in err, err
    assert "not a regular file" not in err and not (tmp_path / "o").exists()


def test_report_states_the_value_that_ran_not_a_hand_edits_spelling(run, capsys):
    """Round nineteen: `"guidance": 50e-1` written by hand over run.json's 5.0 (the same value: the images stay
    trusted) made results.md's title read `guidance 50e-1`: the report states the value that ran."""
    path = run / "run.json"
    settings = json.loads(path.read_text())
    guidance = settings.pop("guidance")
    path.write_text(json.dumps(settings)[:-1] + f', "guidance": {guidance * 10:g}e-1}}')
    assert main(["report", str(run)]) == 0
    title = (run / "results.md").read_text().splitlines()[0]
    assert title.endswith(f"guidance {float(guidance)}") and "e-1" not in title, title


def test_report_export_of_an_incomplete_run_writes_nothing(run, capsys):
    """Round nineteen: `report RUN --export KIND DIR` of a run missing an image printed the tables and wrote
    results.md and the plots again, then refused the export (exit 2): the export is checked whole first
    (`bench.export.check_export`), so the usage error writes nothing."""
    png = record_path(run).with_suffix(".png")
    png.unlink()
    record_path(run).unlink()
    assert main(["report", str(run)]) == 0  # the incomplete run's own report: written once, then left alone
    capsys.readouterr()
    os.utime(run / "results.md", (0, 0))
    argv = ["report", str(run), "--export", "t2i-compbench", str(run.parent / "exp")]
    assert "the run is not whole" in refused(capsys, argv)
    assert os.path.getmtime(run / "results.md") == 0 and not (run.parent / "exp").exists()


def test_a_new_run_holds_its_lock_while_its_images_are_made(tmp_path, monkeypatch):
    """Round twenty-five (high): the lock was taken before the run's folder existed (it is made once the model has
    loaded), so a new run made its images without it and a `report` started meanwhile wrote a partial table over
    the finished run's. The lock is taken again once the folder is made: a reader is refused while images are made."""
    from date_diffusion.bench import runner

    made, held = runner.generate_methods, []

    def generate_methods(run, *args, **kwargs):
        with runner.run_lock(run.out, exclusive=True) as free:  # as a report or the page would take it
            held.append(not free)
        return made(run, *args, **kwargs)

    monkeypatch.setattr(runner, "generate_methods", generate_methods)
    argv = ["bench", "--suite", "toy", "--limit", "1", "--seeds", "1", "--steps", "2", "--methods", "fixed"]
    assert main([*argv, "--out", str(tmp_path / "new")]) == 0
    assert held == [True]
    with runner.run_lock(tmp_path / "new", exclusive=True) as free:  # and released at its end
        assert free


def test_report_is_refused_while_a_bench_process_makes_the_run(run, capsys):
    """Round twenty-one: `report` run while `bench` worked renamed its partial results over the finished run's
    (results.md said "Incomplete run" of a whole run). Every bench process holds the run's lock, shared; a report
    takes it exclusively, and is refused while a bench holds it (`bench.runner.run_lock`)."""
    from date_diffusion.bench.runner import run_lock

    os.utime(run / "results.md", (0, 0))
    with run_lock(run) as held:  # as a bench process making the run's images holds it
        assert held
        err = refused(capsys, ["report", str(run)])
        assert "another process holds the run" in err and "a bench making its images" in err
        assert os.path.getmtime(run / "results.md") == 0
    assert main(["report", str(run)]) == 0  # once the bench ends


def test_a_methods_date_setting_is_quoted_as_run_json_spells_it(run, capsys):
    """Round twenty-two: `"grad_steps": true` in a run.json method was refused with `got True`, Python's word, and
    named only as the field `methods`."""
    path = run / "run.json"
    settings = json.loads(path.read_text())
    label = next(label for label, rec in settings["methods"].items() if rec.get("date"))
    settings["methods"][label]["date"]["grad_steps"] = True
    path.write_text(json.dumps(settings))
    err = refused(capsys, ["report", str(run)], path)
    assert "grad_steps must be an integer from 1 to 100, got true" in err and "True" not in err, err
    # round twenty-two: named down to the entry's key, not only as `methods`
    assert f"field 'methods': method {label!r}, key 'date.grad_steps': grad_steps" in err, err
    path.write_text(path.read_text().replace('"grad_steps": true', '"grad_steps": -0'))  # round twenty-four
    assert "grad_steps must be an integer from 1 to 100, got -0;" in refused(capsys, ["report", str(run)], path)


@pytest.mark.parametrize(
    "fields, said",
    [
        ({"seeds": []}, "field 'seeds' lists nothing (at least one value)"),  # was an IndexError, exit 1
        ({"seeds": [1001, 1000]}, "field 'seeds' must be consecutive and ascending, as bench writes them, got [1001"),
        ({"seeds": [1000, 1002]}, "field 'seeds' must be consecutive and ascending"),
        ({"categories": []}, "field 'categories' lists nothing"),
        ({"categories": [5]}, "field 'categories' must be an array of texts, got [5]"),  # was a TypeError
        ({"categories": ["nope"]}, "field 'categories' names 'nope', which suite 'toy' lacks (it has color_binding"),
        ({"suite": "coco"}, "field 'captions' must name suite 'coco''s prompts file, got null"),
        ({"image_size": [1]}, "field 'image_size' is none of its fields"),  # no version wrote it: it was read alone
    ],
)  # fmt: skip
def test_a_run_json_value_no_bench_writes_is_named_whatever_command_reads_it(run, capsys, fields, said):
    """Round twenty-seven: run.json's `"seeds": []` failed report, its export and the toy world's audit with an
    IndexError (exit 1); categories of the suite's none, or an empty list, were reported from the prompt folders
    without a word; seeds no bench writes were taken. Each is the file's fault, named."""
    path = run / "run.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
    for argv in (["report", str(run)], ["toyworld", "audit", str(run)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(path) in err and said in err, err


@pytest.mark.parametrize(
    "entry, said",
    [
        ({"date": "x"}, "key 'date': DATE's settings must be an object of its fields, got text"),
        ({"reward": 5}, "key 'reward': reward must be a non-empty text, got 5"),
        ({"bogus": 1}, "key 'bogus': 'bogus' is no key of a 'date' entry"),
        ({"lowres": "64"}, "key 'lowres': lowres must be written without quotes"),
    ],
)  # fmt: skip
def test_every_key_of_a_run_json_method_is_checked_and_named(run, capsys, entry, said):
    """A method entry's own keys (not only its DATE settings) are read through their kinds: a value no bench writes
    names run.json, the method and the key, never the run's images as made with other settings."""
    path = run / "run.json"
    settings = json.loads(path.read_text())
    label = next(label for label, rec in settings["methods"].items() if rec.get("date"))
    settings["methods"][label].update(entry)
    path.write_text(json.dumps(settings))
    err = refused(capsys, ["report", str(run)], path)
    assert f"field 'methods': method {label!r}, {said}" in err and "other settings" not in err, err


@pytest.mark.parametrize("how", ["stripped", "another image's"])
def test_a_png_whose_own_record_was_stripped_or_swapped_is_not_trusted(run, capsys, how):
    """Round twenty-two: a bench PNG re-saved with the same pixels but without its record, or with another image's
    record, was trusted by report (and handed on by exports) while `info` refused it: the record inside the PNG is
    checked too, sealed over its pixels and this image's."""
    from PIL import Image, PngImagePlugin

    png = record_path(run).with_suffix(".png")
    pixels = Image.open(png).copy()
    info = PngImagePlugin.PngInfo()
    if how != "stripped":
        donor = Image.open(record_path(run, method="fixed").with_suffix(".png"))
        for key, value in donor.text.items():
            info.add_text(key, value)
    pixels.save(png, pnginfo=info)
    err = refused(capsys, ["report", str(run)], png)
    assert "the record inside its PNG is" in err, err


def test_a_sample_that_is_a_link_is_named_as_a_linked_folder_is(run, capsys, tmp_path):
    """Round twenty-two: a run image replaced by a symbolic link to the same file outside the run was counted as
    the run's (a linked method folder is refused): a link is no file a run writes."""
    png = record_path(run).with_suffix(".png")
    outside = tmp_path / "elsewhere.png"
    png.rename(outside)
    png.symlink_to(outside)
    err = refused(capsys, ["report", str(run)], png)
    assert "is a symbolic link, not a file a run writes" in err, err


def test_a_record_of_an_earlier_version_may_have_been_made_with_run_jsons_batch_size():
    """Records written before they stated their batch size or processes: a run resumed with others is no run.json
    edited by hand (the old images may have been made with run.json's values)."""
    from date_diffusion.bench.runner import made_in_problem

    claimed = {"batch_size": 4, "processes": 1}
    assert made_in_problem("r", claimed, [{"batch_size": 4}] * 3 + [{"batch_size": 4, "processes": 2}]) is None
    assert made_in_problem("r", claimed, [{}, {"batch_size": 2, "processes": 2}]) is None
    edited = made_in_problem("r", claimed, [{"batch_size": 2, "processes": 1}])
    assert "its batch_size 4 is not what any of the run's images was made with (2" in edited


@pytest.mark.parametrize("fields", [{"cfg_src": 9.0}, {"cfg_src": None}, {"edit_skip": 5}, {"captions": "x.txt"}])
def test_a_setting_the_suite_never_reads_is_read_as_bench_records_it(run, capsys, fields):
    """Round twenty-nine: `"cfg_src": 9.0` (or `edit_skip`) in a toy run's run.json, settings its suite never reads,
    called its intact images made with other settings, with advice that could not be followed. They decide none of
    its images: read as bench records them for the suite (`runner._unread_by_suite`), the report's the same."""
    before = (run / "results.md").read_text()
    path = run / "run.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
    assert main(["report", str(run)]) == 0
    assert (run / "results.md").read_text() == before
    assert main([*BENCH, "--out", str(run)]) == 0  # a resume: nothing to make, run.json as bench writes it again
    assert all(json.loads(path.read_text())[k] != v for k, v in fields.items() if v is not None)


@pytest.mark.parametrize("kind", ["folder", "dangling link"])
def test_a_lock_file_replaced_by_something_else_is_named_by_bench_and_report(run, capsys, kind):
    """Round twenty-nine: `.bench.lock` as a folder or a dangling link: bench failed in Python's words (exit 1) and
    report read the run without its lock."""
    lock = run / ".bench.lock"
    lock.unlink(missing_ok=True)
    lock.mkdir() if kind == "folder" else lock.symlink_to(run / "nowhere" / "lock")
    for argv in (["report", str(run)], [*BENCH, "--out", str(run)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{lock} is a" in err and "not the lock file bench keeps in a run folder: move it out" in err, err


def test_a_plot_the_report_no_longer_draws_is_not_left_beside_its_tables(run, capsys):
    """Round thirty-one: with the `date` records gone, `report` rewrote the tables (date n=0) and left the complete
    run's reward trajectory, which the page's run tab showed beside tables that count none of its images."""
    assert (run / "reward_trajectory.png").is_file()
    for rec in (run / "images" / "date").rglob("samples/*.json"):
        rec.unlink()
        rec.with_suffix(".png").unlink()
    assert main(["report", str(run)]) == 0
    assert not (run / "reward_trajectory.png").exists()
