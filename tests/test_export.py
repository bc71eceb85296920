"""`bench/export.py` against the layouts the evaluators' READMEs state (not against a reader of ours).

GenEval's README: `<IMAGE_FOLDER>/00000/metadata.jsonl` (the N-th line of `evaluation_metadata.jsonl`),
`<IMAGE_FOLDER>/00000/samples/0000.png ... 0003.png`. T2I-CompBench's Readme: `examples/samples/a green bench and a
blue bowl_000000.png`; its BLIP-VQA script lists `samples/`, sorts by `int(name.split("_")[-1].split(".")[0])` and
takes the prompt as `name.split("_")[0]`: that parsing is replayed on our files below.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from date_diffusion.bench.export import ExportError, export_geneval, export_t2i_compbench

GENEVAL_LINES = [
    {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
    {"tag": "two_object", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}],
     "prompt": "a photo of a cat and a dog"},
    {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a photo of a red car"},
]  # fmt: skip


def fake_run(tmp_path, prompts, seeds=(7, 3, 11), unfinished=None):
    """A method folder as bench/runner.py writes it: <index:05d>/metadata.jsonl, samples/<seed:05d>.png + .json."""
    method = tmp_path / "run" / "images" / "date"
    for i, prompt in enumerate(prompts):
        d = method / f"{i:05d}"
        (d / "samples").mkdir(parents=True)
        (d / "metadata.jsonl").write_text(json.dumps({"prompt": prompt, "tag": "x", "spec": None}) + "\n")
        for s in seeds:
            Image.fromarray(np.full((8, 8, 3), i * 10 + s, np.uint8)).save(d / "samples" / f"{s:05d}.png")
            if (i, s) != unfinished:
                (d / "samples" / f"{s:05d}.json").write_text("{}")
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
