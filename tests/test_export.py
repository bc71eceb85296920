"""`bench/export.py` against the layouts the evaluators' READMEs state (not against a reader of ours).

GenEval's README: `<IMAGE_FOLDER>/00000/metadata.jsonl` (the N-th line of `evaluation_metadata.jsonl`),
`<IMAGE_FOLDER>/00000/samples/0000.png ... 0003.png`. T2I-CompBench's Readme: `examples/samples/a green bench and a
blue bowl_000000.png`; its BLIP-VQA script lists `samples/`, sorts by `int(name.split("_")[-1].split(".")[0])` and
takes the prompt as `name.split("_")[0]`: that parsing is replayed on our files below.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from date_diffusion.bench.export import (
    ExportError,
    export_geneval,
    export_run,
    export_t2i_compbench,
    missing_images,
    write_prompt_records,
)

GENEVAL_LINES = [
    {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
    {"tag": "two_object", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}],
     "prompt": "a photo of a cat and a dog"},
    {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a photo of a red car"},
]  # fmt: skip


def fake_run(tmp_path, prompts, seeds=(7, 3, 11), unfinished=None, slug="date", old_layout=False, skip=()):
    """A method folder as bench/runner.py writes it: <index:05d>/prompt.json, samples/<seed:05d>.png + .json (an
    earlier version's layout: the run's record as metadata.jsonl), and the run's run.json (its seeds; `prompts`
    also as the run's prompts file). `unfinished`: an (index, seed) whose record is missing; `skip`: prompt
    indices this method has not begun."""
    run = tmp_path / "run"
    method = run / "images" / slug
    for i, prompt in enumerate(prompts):
        if i in skip:
            continue
        d = method / f"{i:05d}"
        (d / "samples").mkdir(parents=True)
        record = json.dumps({"prompt": prompt, "tag": "x", "spec": None}) + "\n"
        (d / ("metadata.jsonl" if old_layout else "prompt.json")).write_text(record)
        for s in seeds:
            Image.fromarray(np.full((8, 8, 3), i * 10 + s, np.uint8)).save(d / "samples" / f"{s:05d}.png")
            if (i, s) != unfinished:
                (d / "samples" / f"{s:05d}.json").write_text("{}")
    (tmp_path / "prompts.txt").write_text("".join(p + "\n" for p in prompts))
    settings = {"suite": "prompts", "captions": str(tmp_path / "prompts.txt"), "limit": None, "categories": None}
    (run / "run.json").write_text(json.dumps({**settings, "seeds": sorted(seeds)}))
    return method


def pixel(path) -> int:
    return int(np.asarray(Image.open(path))[0, 0, 0])


def test_geneval_layout(tmp_path):
    meta = tmp_path / "evaluation_metadata.jsonl"
    meta.write_text("".join(json.dumps(line) + "\n" for line in GENEVAL_LINES))
    method = fake_run(tmp_path, [line["prompt"] for line in GENEVAL_LINES], unfinished=(1, 11))
    out = tmp_path / "geneval"
    assert export_geneval(method, out, meta) == 8
    assert sorted(p.name for p in out.iterdir()) == ["00000", "00001", "00002"]
    for n, line in enumerate(GENEVAL_LINES):
        folder = out / f"{n:05d}"
        assert json.loads((folder / "metadata.jsonl").read_text()) == line  # the N-th line, as it is
        assert len((folder / "metadata.jsonl").read_text().splitlines()) == 1
        names = sorted(p.name for p in (folder / "samples").iterdir())
        assert names == (["0000.png", "0001.png"] if n == 1 else ["0000.png", "0001.png", "0002.png"])
        assert [pixel(folder / "samples" / name) for name in names] == [n * 10 + s for s in (3, 7, 11)][: len(names)]


def test_geneval_refuses_prompts_that_are_not_the_metadata_lines(tmp_path):
    meta = tmp_path / "evaluation_metadata.jsonl"
    meta.write_text("".join(json.dumps(line) + "\n" for line in GENEVAL_LINES))
    method = fake_run(tmp_path, ["a photo of a bench", "a photo of a horse"])
    with pytest.raises(ExportError, match="a photo of a horse"):
        export_geneval(method, tmp_path / "geneval", meta)


def test_t2i_compbench_layout_as_its_evaluator_parses_it(tmp_path):
    prompts = ["a green bench and a blue bowl", "a red car", "a round clock and a square table"]
    method = fake_run(tmp_path, prompts)
    out = tmp_path / "t2i"
    assert export_t2i_compbench(method, out) == 9
    assert [p.name for p in out.iterdir()] == ["samples"]
    names = [p.name for p in (out / "samples").iterdir()]
    assert "a green bench and a blue bowl_000000.png" in names
    names.sort(key=lambda x: int(x.split("_")[-1].split(".")[0]))  # BLIP_vqa.py's order and parsing
    assert [n.split("_")[0] for n in names] == [p for p in prompts for _ in range(3)]
    assert [int(n.split("_")[-1].split(".")[0]) for n in names] == list(range(9))


def test_t2i_compbench_refuses_prompts_its_file_names_cannot_hold(tmp_path):
    with pytest.raises(ExportError, match="snake_case"):
        export_t2i_compbench(fake_run(tmp_path, ["a snake_case dog"]), tmp_path / "t2i")


def test_export_needs_a_new_folder(tmp_path):
    method = fake_run(tmp_path, ["a red car"])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    with pytest.raises(ExportError, match="not empty"):
        export_t2i_compbench(method, tmp_path / "busy")


# ---------------------------------------------------------------- the command line, end to end on the toy world

TOY_GENEVAL = [
    {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a red circle"},
    {"tag": "colors", "include": [{"class": "square", "count": 1, "color": "blue"}], "prompt": "a blue square"},
    {"tag": "two_object", "include": [{"class": "circle", "count": 1}, {"class": "cross", "count": 1}],
     "prompt": "a green circle and a yellow cross"},
]  # fmt: skip
TINY = ["--steps", "2", "--limit", "2", "--seeds", "2", "--methods", "fixed", "--threads", "1"]


@pytest.fixture(scope="module")
def geneval_run(tmp_path_factory):
    """A GenEval-style jsonl of toy prompts (with a byte order mark) run as `--suite prompts`, exported at once."""
    from date_diffusion.cli.main import main

    root = tmp_path_factory.mktemp("geneval-run")
    meta = root / "evaluation_metadata.jsonl"
    meta.write_text("\ufeff" + "".join(json.dumps(line) + "\n" for line in TOY_GENEVAL), encoding="utf-8")
    argv = ["bench", "--suite", "prompts", "--prompts-file", str(meta), *TINY, "--out", str(root / "run")]
    assert main([*argv, "--export", "geneval", str(root / "geneval")]) == 0
    return root, meta


def test_bench_exports_geneval_layout_from_its_jsonl_suite(geneval_run):
    root, meta = geneval_run
    out = root / "geneval"
    assert [p.name for p in out.iterdir()] == ["fixed"]  # DIR/<method slug>/
    method = out / "fixed"
    assert sorted(p.name for p in method.iterdir()) == ["00000", "00001"]  # --limit 2
    raw = meta.read_text(encoding="utf-8-sig").splitlines()
    for n in range(2):
        folder = method / f"{n:05d}"
        assert (folder / "metadata.jsonl").read_text() == raw[n] + "\n"  # line N as it is, without the BOM
        assert json.loads((folder / "metadata.jsonl").read_text()) == TOY_GENEVAL[n]
        assert sorted(p.name for p in (folder / "samples").iterdir()) == ["0000.png", "0001.png"]  # --seeds 2
        # sample K is the run's K-th seed's image, byte for byte
        made = sorted((root / "run" / "images" / "fixed" / f"{n:05d}" / "samples").glob("*.png"))
        assert len(made) == 2
        for k, png in enumerate(made):
            assert (folder / "samples" / f"{k:04d}.png").read_bytes() == png.read_bytes()
    run = json.loads((root / "run" / "run.json").read_text())
    assert run["captions"] == str(meta)  # where `report --export geneval` finds the metadata again
    made = sorted((root / "run" / "images" / "fixed").glob("*/metadata.jsonl"))
    assert [json.loads(p.read_text())["tag"] for p in made] == ["single_object", "colors"]  # the lines' tags


def test_report_exports_a_finished_run_in_both_layouts(geneval_run, capsys):
    from date_diffusion.cli.main import main

    root, _ = geneval_run
    capsys.readouterr()
    assert main(["report", str(root / "run"), "--export", "geneval", str(root / "again")]) == 0
    assert "exported 4 images of fixed" in capsys.readouterr().err
    first, again = (
        sorted(p.relative_to(d) for d in (root / name,) for p in d.rglob("*")) for name in ("geneval", "again")
    )
    assert first == again and len(first) > 0
    assert main(["report", str(root / "run"), "--export", "t2i-compbench", str(root / "t2i")]) == 0
    names = [p.name for p in (root / "t2i" / "fixed" / "samples").iterdir()]
    names.sort(key=lambda x: int(x.split("_")[-1].split(".")[0]))  # T2I-CompBench's parsing, as above
    assert names == [
        "a red circle_000000.png",
        "a red circle_000001.png",
        "a blue square_000002.png",
        "a blue square_000003.png",
    ]


def test_bench_exports_t2i_compbench_layout_from_a_txt_list(tmp_path):
    from date_diffusion.cli.main import main

    prompts = tmp_path / "color_val.txt"  # T2I-CompBench's lists: one prompt a line
    prompts.write_text("\ufeffa red circle\n\na blue square\na green cross\n", encoding="utf-8")
    argv = ["bench", "--suite", "prompts", "--prompts-file", str(prompts), *TINY, "--out", str(tmp_path / "run")]
    assert main([*argv, "--export", "t2i-compbench", str(tmp_path / "t2i")]) == 0
    samples = tmp_path / "t2i" / "fixed" / "samples"
    assert [p.name for p in (tmp_path / "t2i" / "fixed").iterdir()] == ["samples"]
    names = sorted((p.name for p in samples.iterdir()), key=lambda x: int(x.split("_")[-1].split(".")[0]))
    assert [n.split("_")[0] for n in names] == ["a red circle"] * 2 + ["a blue square"] * 2  # BOM and blank skipped
    assert [int(n.split("_")[-1].split(".")[0]) for n in names] == [0, 1, 2, 3]


def test_jsonl_suite_keeps_each_line_and_its_tag(tmp_path):
    from date_diffusion.bench.suites import load_suite

    meta = tmp_path / "evaluation_metadata.jsonl"
    meta.write_text("\ufeff" + "\n".join(json.dumps(line) for line in TOY_GENEVAL) + "\n\n", encoding="utf-8")
    items = load_suite("prompts", meta)
    assert [it.prompt for it in items] == [line["prompt"] for line in TOY_GENEVAL]
    assert [it.meta for it in items] == TOY_GENEVAL and [it.category for it in items] == [
        "single_object",
        "colors",
        "two_object",
    ]
    assert [it.index for it in load_suite("prompts", meta, categories=["two_object"])] == [2]  # the line's index
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a red circle"}\n{"tag": "colors"}\n')
    with pytest.raises(ValueError, match="line 2 has no text 'prompt'"):
        load_suite("prompts", bad)
    bad.write_text("a red circle\n")
    with pytest.raises(ValueError, match="line 1 is not readable JSON"):
        load_suite("prompts", bad)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--export", "geneval", "{out}"], "--export geneval needs GenEval's evaluation_metadata.jsonl"),
        (["--export", "coco", "{out}"], "--export KIND must be one of geneval, t2i-compbench"),
        (["--export", "t2i-compbench", "{busy}"], "is not empty"),
        (["--export", "t2i-compbench", "{out}", "--geneval-metadata", "{meta}"], "--geneval-metadata is for"),
        (["--geneval-metadata", "{meta}"], "--geneval-metadata is read only by --export geneval"),
        (["--export", "geneval", "{out}", "--geneval-metadata", "{other}"], "item 0 is 'a red circle' but line 1"),
        (["--export", "t2i-compbench", "{run}"], "holds the run's own folder"),
    ],
    ids=["geneval-without-metadata", "unknown-kind", "busy-folder", "metadata-for-t2i", "metadata-alone",
         "metadata-of-other-prompts", "export-into-run"],
)  # fmt: skip
def test_bad_export_combinations_are_refused_before_any_work(tmp_path, capsys, extra, message):
    from date_diffusion.cli.main import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    meta, other = tmp_path / "evaluation_metadata.jsonl", tmp_path / "other.jsonl"
    meta.write_text("".join(json.dumps(line) + "\n" for line in TOY_GENEVAL))
    other.write_text(json.dumps({"tag": "colors", "prompt": "a purple cross"}) + "\n")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "earlier.png").write_bytes(b"x")
    names = {
        "out": tmp_path / "export",
        "busy": tmp_path / "busy",
        "meta": meta,
        "other": other,
        "run": tmp_path / "run",
    }
    extra = [a.format(**{k: str(v) for k, v in names.items()}) for a in extra]
    argv = ["bench", "--suite", "prompts", "--prompts-file", str(prompts), *TINY, "--out", str(tmp_path / "run")]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists() and not (tmp_path / "export").exists()  # nothing made
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["earlier.png"]


def test_report_export_refusals(geneval_run, tmp_path, capsys):
    """A finished run: an existing export folder is never written into; a run from a text file needs the metadata."""
    from date_diffusion.cli.main import main

    root, meta = geneval_run
    before = sorted(p.relative_to(root / "geneval") for p in (root / "geneval").rglob("*"))
    assert main(["report", str(root / "run"), "--export", "geneval", str(root / "geneval")]) == 2
    assert "is not empty: export into a new folder" in capsys.readouterr().err
    assert sorted(p.relative_to(root / "geneval") for p in (root / "geneval").rglob("*")) == before
    # the same run's images, its run.json pointing at a prompts file that is not there: --geneval-metadata is named
    import shutil

    shutil.copytree(root / "run", tmp_path / "moved")
    run_json = tmp_path / "moved" / "run.json"
    run_json.write_text(run_json.read_text().replace(str(meta), str(tmp_path / "gone.jsonl")))
    assert main(["report", str(tmp_path / "moved"), "--export", "geneval", str(tmp_path / "g")]) == 2
    assert "give --geneval-metadata FILE" in capsys.readouterr().err and not (tmp_path / "g").exists()
    argv = ["report", str(tmp_path / "moved"), "--export", "geneval", str(tmp_path / "g"), "--geneval-metadata"]
    assert main([*argv, str(meta)]) == 0
    assert json.loads((tmp_path / "g" / "fixed" / "00001" / "metadata.jsonl").read_text()) == TOY_GENEVAL[1]


# ---------------------------------------------------------------- GenEval's walk over a run folder


def geneval_walk(imagedir):
    """GenEval's `evaluate_images.py` main loop, replayed (README "Evaluation"): every numbered sub-folder's
    `metadata.jsonl` read with `json.load`, then each `samples/` file matching `\\d+\\.png` evaluated against it.
    Returns (image path, the metadata it is evaluated against)."""
    seen = []
    for sub in os.listdir(imagedir):
        folder = os.path.join(imagedir, sub)
        if not os.path.isdir(folder) or not sub.isdigit():
            continue
        with open(os.path.join(folder, "metadata.jsonl")) as fp:
            metadata = json.load(fp)
        for name in os.listdir(os.path.join(folder, "samples")):
            path = os.path.join(folder, "samples", name)
            if os.path.isfile(path) and re.match(r"\d+\.png", name):
                seen.append((path, metadata))
    return seen


def test_geneval_reads_a_run_from_its_metadata_with_the_full_records(geneval_run):
    """A run whose prompts are GenEval's metadata lines: GenEval's walk pointed at a method folder of the run itself
    evaluates every image against that prompt's full line (its `include`), never a record without one."""
    root, _ = geneval_run
    seen = geneval_walk(root / "run" / "images" / "fixed")
    assert len(seen) == 4  # 2 prompts x 2 seeds, the .json records skipped
    for path, metadata in seen:
        index = int(os.path.basename(os.path.dirname(os.path.dirname(path))))
        assert metadata == TOY_GENEVAL[index] and metadata["include"]
    own = json.loads((root / "run" / "images" / "fixed" / "00001" / "prompt.json").read_text())
    assert own == {"prompt": "a blue square", "tag": "colors", "spec": None, "source": None}


def test_geneval_never_scores_a_run_from_other_prompts(tmp_path):
    """A run from a text file has no GenEval record: GenEval's walk stops at its first prompt folder instead of
    passing every image (its evaluate() passes an image whose record has no `include`)."""
    from date_diffusion.cli.main import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    argv = ["bench", "--suite", "prompts", "--prompts-file", str(prompts), *TINY, "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    method = tmp_path / "run" / "images" / "fixed"
    assert sorted(p.name for p in (method / "00000").iterdir()) == ["prompt.json", "samples"]
    with pytest.raises(FileNotFoundError, match="metadata.jsonl"):
        geneval_walk(method)


def test_an_earlier_versions_record_is_moved_out_of_genevals_way(tmp_path):
    """Runs of earlier versions kept their own record as metadata.jsonl (GenEval's name, no `include`): it is read
    as the prompt's record, and renamed to prompt.json once the run writes to that folder again."""
    method = fake_run(tmp_path, ["a red car", "a blue bus"], old_layout=True)
    out = tmp_path / "t2i"
    assert export_t2i_compbench(method, out) == 6  # read through the old name
    folder = method / "00000"
    write_prompt_records(folder, {"prompt": "a red car", "tag": "x", "spec": None, "source": None})
    assert sorted(p.name for p in folder.iterdir()) == ["prompt.json", "samples"]
    assert json.loads((folder / "prompt.json").read_text()) == {"prompt": "a red car", "tag": "x", "spec": None}
    # a GenEval line, though, is written under GenEval's name beside the run's record
    line = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a red car"}
    write_prompt_records(folder, {"prompt": "a red car"}, line)
    assert json.loads((folder / "metadata.jsonl").read_text()) == line
    assert json.loads((folder / "prompt.json").read_text())["tag"] == "x"  # each written once, never replaced
    other = method / "00001"  # a line without `include` is not GenEval's record: never under GenEval's name
    write_prompt_records(other, {"prompt": "a blue bus"}, {"prompt": "a blue bus", "tag": "colors"})
    assert sorted(p.name for p in other.iterdir()) == ["prompt.json", "samples"]


# ---------------------------------------------------------------- only whole runs are exported


def test_an_interrupted_run_is_refused_naming_the_missing_image(tmp_path):
    method = fake_run(tmp_path, ["a red car", "a blue bus"], unfinished=(1, 11))
    run = method.parent.parent
    assert missing_images(run, ["date"]) == {"date": [(1, 11)]}
    with pytest.raises(ExportError, match=r"'date' lacks prompt 1 \('a blue bus'\) seed 11.*--export-partial"):
        export_run(run, ["date"], "t2i-compbench", tmp_path / "t2i")
    assert not (tmp_path / "t2i").exists()  # refused before any work
    said = []
    assert export_run(run, ["date"], "t2i-compbench", tmp_path / "t2i", partial=True, say=said.append) == {"date": 5}
    assert said == ["exporting a partial run: 'date' lacks prompt 1 ('a blue bus') seed 11"]
    with pytest.warns(UserWarning, match="lacks prompt 1"):  # without `say`, a warning: never silent
        export_run(run, ["date"], "t2i-compbench", tmp_path / "again", partial=True)


def test_unequal_methods_and_prompts_no_method_began_are_refused(tmp_path):
    prompts = ["a red car", "a blue bus", "a green van"]
    fake_run(tmp_path, prompts, seeds=(6, 7))
    fake_run(tmp_path, prompts, seeds=(6, 7), slug="fixed", skip=(1,))  # interrupted before prompt 1
    run = tmp_path / "run"
    assert missing_images(run, ["date", "fixed"]) == {"date": [], "fixed": [(1, 6), (1, 7)]}
    with pytest.raises(ExportError, match=r"'fixed' lacks prompt 1 \('a blue bus'\) seed 6 and 1 more"):
        export_run(run, ["date", "fixed"], "t2i-compbench", tmp_path / "t2i")
    # the run's own prompts file says which prompts it was asked for: one that no method began is missing too
    (tmp_path / "prompts.txt").write_text("a red car\na blue bus\na green van\na yellow cab\n")
    assert missing_images(run, ["date"]) == {"date": [(3, 6), (3, 7)]}
    # a moved run (its prompts file gone): the prompts any method began
    (tmp_path / "prompts.txt").unlink()
    assert missing_images(run, ["date", "fixed"]) == {"date": [], "fixed": [(1, 6), (1, 7)]}


def test_report_refuses_to_export_an_interrupted_run(geneval_run, tmp_path, capsys):
    """The command line: a finished run's copy with one image's record gone (a run killed mid-batch) is refused in
    one line naming the prompt and seed; nothing is exported."""
    import shutil

    from date_diffusion.cli.main import main

    root, _ = geneval_run
    shutil.copytree(root / "run", tmp_path / "cut")
    (tmp_path / "cut" / "images" / "fixed" / "00001" / "samples" / "00007.json").unlink()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "cut"), "--export", "t2i-compbench", str(tmp_path / "t2i")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "'fixed' lacks prompt 1 ('a blue square') seed 7" in err[-1], err
    assert not (tmp_path / "t2i").exists()
