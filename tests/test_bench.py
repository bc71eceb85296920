import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from diffusers import StableDiffusionPipeline
from PIL import Image

from date_diffusion.bench.suites import ane_prompts, load_suite, read_captions
from date_diffusion.cli.main import main
from date_diffusion.evaluation.methods import parse_method, parse_methods
from date_diffusion.toyworld.world import ASSETS as TOY_ASSETS

SHARED_COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_val2014_subset5k.csv"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    from conftest import make_components

    path = tmp_path_factory.mktemp("tiny-sd-bench")
    StableDiffusionPipeline(**make_components(tokenizer)).save_pretrained(path)
    return path


def held_out(clip_dir):
    """A second CLIP folder for the held-out metric: bench refuses the reward's own CLIP as that metric."""
    import shutil

    other = clip_dir.parent / f"{clip_dir.name}-held-out"
    if not other.exists():
        shutil.copytree(clip_dir, other)
    return other


def bench_args(model_dir, clip_dir, out, methods="fixed date:rho=0.5,every=2 best-of-2 ug:scale=5,every=2", *extra):
    return [
        "bench",
        "--suite",
        "toy",
        "--limit",
        "3",
        "--seeds",
        "2",
        "--steps",
        "4",
        "--model",
        str(model_dir),
        "--reward",
        f"clip:{clip_dir}",
        "--eval-clip",
        f"clip:{held_out(clip_dir)}",
        "--methods",
        methods,
        "--out",
        str(out),
        *extra,
    ]


def test_methods_parse_and_reject():
    assert parse_method("fixed@70").steps == 70
    m = parse_method("date:rho=1,every=5,normalize=0,target=next")
    assert (m.date.rho, m.date.update_every, m.date.normalize, m.date.reward_target) == (1.0, 5, False, "next")
    assert parse_method("date:every=5,direction=random").date.direction == "random"
    assert parse_method("best-of-4").candidates == 4 and parse_method("ug:scale=3").scale == 3
    assert parse_method("ae:res=4").res == 4
    approx = parse_method("date:rho=1,decoder=tiny")
    assert approx.decoder == "tiny" and approx.date.rho == 1
    both = parse_method("date+ae:rho=2,res=8,iters=10")
    assert both.date.rho == 2 and (both.res, both.iters) == (8, 10)
    for bad in ["date:speed=2", "ug:every=2", "magic", "date:rho=-1", "date:reward=clip", "fixed@0"]:
        with pytest.raises(ValueError):
            parse_method(bad)
    with pytest.raises(ValueError, match="twice"):
        parse_methods("fixed fixed")
    listed = parse_methods("fixed+ae:res=8 date+ae:rho=2,res=8+date  best-of-2")
    assert [m.label for m in listed] == ["fixed", "ae:res=8", "date+ae:rho=2,res=8", "date", "best-of-2"]
    assert listed[2].date.rho == 2 and listed[2].res == 8 and "date" not in listed[1].record()
    # round twenty-five: a '+' after `date` is a separator unless it is `date+ae`'s own
    assert [m.label for m in parse_methods("date+fixed+best-of-2")] == ["date", "fixed", "best-of-2"]
    assert [m.label for m in parse_methods("date+date+ae+date:rho=1")] == ["date", "date+ae", "date:rho=1"]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("best-of-+2", "reads as 'best-of-', '2'"),  # the sign of a number splits the method
        ("date:rho=+1+fixed", "reads as 'date:rho=', '1', 'fixed'"),
        ("fixed++date", "a '+' with no method on one side"),  # an empty method between separators
        ("fixed +", "a '+' with no method on one side"),
    ],
)
def test_a_method_list_split_where_the_user_did_not_mean_it_says_how_it_was_read(text, named):
    """'+' separates methods: a list it splits into a piece that is no method says how it read the list, and an
    empty piece is refused, never dropped."""
    with pytest.raises(ValueError, match="no method on one side|reads as") as err:
        parse_methods(text)
    assert named in str(err.value)


def test_a_bad_method_among_several_is_named_without_a_word_on_separators():
    """Round fourteen: `fixed date:grad_steps=1` (a mistyped key) was refused with a clause about how '+' splits
    methods, pointing the user the wrong way: where the list holds no '+', the refusal names the method, and its
    place, with what is wrong in it."""
    with pytest.raises(ValueError) as err:
        parse_methods("fixed date:grad_steps=1")
    said = str(err.value)
    assert said.startswith("method 2 of 2, 'date:grad_steps=1': bad setting 'grad_steps=1'") and "+" not in said


def test_suites(tmp_path):
    ane = ane_prompts()
    assert len(ane) == 276 == len({p for p, _ in ane})
    assert [sum(c == k for _, c in ane) for k in ("animal_animal", "animal_object", "object_object")] == [66, 144, 66]
    csv = tmp_path / "caps.csv"
    csv.write_text(",file_name,caption\n1,a.jpg,A cat on a mat.\n2,b.jpg,Two dogs \n")
    assert read_captions(csv) == ["A cat on a mat.", "Two dogs"]
    assert [i.prompt for i in load_suite("coco", csv, limit=1)] == ["A cat on a mat."]
    with pytest.raises(ValueError, match="--captions"):
        load_suite("coco")
    toy = load_suite("toy", limit=5)
    assert toy[0].spec is not None and toy[0].category == "single"
    pairs = load_suite("toy", categories=["two_object", "novel"])
    full = {it.index: it for it in load_suite("toy")}
    assert {it.category for it in pairs} == {"two_object", "novel"} and len(pairs) == 40 + 36
    assert all(full[it.index] == it for it in pairs)  # indices (image folders) are the full suite's
    with pytest.raises(ValueError, match="has color_binding"):
        load_suite("toy", categories=["pairs"])


def test_limit_spreads_its_prompts_over_the_categories_the_same_way_every_time(tmp_path):
    from collections import Counter

    full = load_suite("toy")
    order = list(dict.fromkeys(it.category for it in full))  # the categories in suite order
    sizes = Counter(it.category for it in full)
    for n in (1, 5, 6, 12, 100, len(full), len(full) + 7):
        sample = load_suite("toy", limit=n)
        assert sample == load_suite("toy", limit=n)  # deterministic
        assert len(sample) == min(n, len(full)) and len({it.index for it in sample}) == len(sample)
        assert [it.index for it in sample] == sorted(it.index for it in sample)  # in suite order
        assert all(full[it.index] == it for it in sample)  # the full suite's indices (image folders line up)
        counts = Counter(it.category for it in sample)
        # as even as the categories allow: a category short of the others has given all it holds
        assert max(counts.values()) - min(counts.get(c, 0) for c in order if counts.get(c, 0) < sizes[c]) <= 1 \
            if any(counts.get(c, 0) < sizes[c] for c in order) else counts == sizes  # fmt: skip
        for c in counts:  # each category gives its first prompts
            assert [it for it in sample if it.category == c] == [it for it in full if it.category == c][: counts[c]]
    assert [it.category for it in load_suite("toy", limit=6)] == order  # one of each
    assert Counter(it.category for it in load_suite("toy", limit=12)) == dict.fromkeys(order, 2)
    # within the categories kept; a file without categories: its first N
    kept = load_suite("toy", limit=4, categories=["counting", "novel"])
    assert Counter(it.category for it in kept) == {"counting": 2, "novel": 2}
    captions = tmp_path / "prompts.txt"
    captions.write_text("".join(f"prompt {k}\n" for k in range(10)))
    assert [it.prompt for it in load_suite("prompts", captions, limit=3)] == ["prompt 0", "prompt 1", "prompt 2"]


@pytest.mark.skipif(not SHARED_COCO.exists(), reason="needs ../shared/data (present in CI and sessions)")
def test_reads_the_papers_coco_subset():
    caps = read_captions(SHARED_COCO)
    assert len(caps) == 5000


def test_bench_run_outputs_resume_and_refusal(model_dir, clip_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(bench_args(model_dir, clip_dir, out)) == 0
    # the run ends with where it wrote its tables, plots and images
    printed = capsys.readouterr().out.rstrip("\n").splitlines()
    assert (
        printed[-4]
        == f"results: {out / 'results.md'} (the tables above), {out / 'results.csv'}, {out / 'results.json'}"
    )
    assert printed[-3] == f"plots: {out / 'accuracy_by_category.png'}, {out / 'reward_trajectory.png'}"
    assert printed[-2] == f"images with their records: {out / 'images'}/METHOD/PROMPT/samples/SEED.png"
    assert printed[-1] == f"in the browser: date-diffusion ui --run {out}"
    for name in (
        "run.json",
        "results.json",
        "results.csv",
        "results.md",
        "accuracy_by_category.png",
        "reward_trajectory.png",
    ):
        assert (out / name).exists(), name
    recs = sorted((out / "images").glob("*/*/samples/*.json"))
    assert len(recs) == 4 * 3 * 2
    meta = json.loads((out / "images" / "fixed" / "00000" / "prompt.json").read_text())
    assert meta["prompt"] == "a red circle" and meta["tag"] == "single"
    rec = json.loads((out / "images" / "best-of-2" / "00024" / "samples" / "01000.json").read_text())
    assert rec["best_of"]["n"] == 2 and {"reward", "clip_eval", "exact", "seconds"} <= set(rec)
    results = json.loads((out / "results.json").read_text())
    assert set(results["summary"]) == {"fixed", "date:rho=0.5,every=2", "best-of-2", "ug:scale=5,every=2"}
    assert "exact" in results["summary"]["date:rho=0.5,every=2"]["vs_baseline"]
    assert all(e["fid"]["fid_clip"] >= 0 for e in results["summary"].values())

    # a rerun makes nothing; a lost image (killed mid-batch) is the only one redone
    stamps = {p: p.stat().st_mtime_ns for p in recs}
    lost = recs[5]
    lost.unlink()
    assert main(bench_args(model_dir, clip_dir, out)) == 0
    assert lost.exists()
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p != lost)

    # other settings into the same folder are refused, a new method is added
    assert main(bench_args(model_dir, clip_dir, out, "fixed", "--guidance", "3")) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(bench_args(model_dir, clip_dir, out, "fixed@6")) == 0
    assert "fixed@6" in json.loads((out / "run.json").read_text())["methods"]
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out.rstrip("\n").splitlines()[-1] == f"in the browser: date-diffusion ui --run {out}"

    # a folder of a prompt the run does not select is refused before any work, named with the true reason
    (out / "images" / "fixed" / "00001" / "samples").mkdir(parents=True)
    (out / "images" / "fixed" / "00001" / "samples" / "01000.json").write_text("{}")
    assert main(bench_args(model_dir, clip_dir, out)) == 2
    err = capsys.readouterr().err
    assert f"{out / 'images' / 'fixed' / '00001'}: not a prompt this run selects" in err and err.count("\n") == 1


def test_resume_trusts_no_image_it_cannot_verify(model_dir, clip_dir, tmp_path, capsys):
    """Each record carries the fingerprints of the settings that made its image and of its pixels: a run.json edited
    to other settings, a replaced PNG, or a record without fingerprints is named and refused before any work,
    and nothing in the folder is touched."""
    from PIL import Image

    from date_diffusion.bench.runner import pixels_digest

    out = tmp_path / "run"
    argv = bench_args(model_dir, clip_dir, out, "fixed")
    assert main(argv) == 0
    recs = sorted((out / "images").glob("*/*/samples/*.json"))
    assert all({"made_with", "pixels"} <= set(json.loads(p.read_text())) for p in recs)

    # run.json edited to say 6 steps, resumed with --steps 6: the images were made with the old step count
    run_json = out / "run.json"
    original = run_json.read_text()
    run = json.loads(original)
    run_json.write_text(json.dumps({**run, "steps": run["steps"] + 2}))
    steps = argv.index("--steps") + 1  # the same command with another --steps (an option is given once)
    assert main([*argv[:steps], str(run["steps"] + 2), *argv[steps + 1 :]]) == 2
    err = capsys.readouterr().err
    assert "made with other settings" in err and str(len(recs)) in err
    run_json.write_text(original)

    # a PNG replaced by hand: named, never scored from its old record
    png = recs[1].with_suffix(".png")
    stamps = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*") if p.is_file()}
    Image.new("RGB", Image.open(png).size, (0, 0, 0)).save(png)
    stamps[png] = png.stat().st_mtime_ns
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "its PNG was changed after it was made" in err and str(png) in err
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # nothing touched

    # a record without fingerprints (an earlier version's): cannot be verified, so not counted as made
    png.unlink()
    record = json.loads(recs[1].read_text())
    recs[1].unlink()  # that image is made again
    legacy = json.loads(recs[2].read_text())
    recs[2].write_text(json.dumps({k: v for k, v in legacy.items() if k not in ("made_with", "pixels")}))
    assert main(argv) == 2
    assert "has no fingerprint" in capsys.readouterr().err
    recs[2].write_text(json.dumps(legacy))

    # a record edited by hand (a score, an index): never reported from
    edited = json.loads(recs[3].read_text())
    recs[3].write_text(json.dumps({**edited, "exact": 100.0}))
    assert main(argv) == 2
    assert "field 'exact' must be in [0, 1], got 100.0 (changed after it was written)" in capsys.readouterr().err
    recs[3].write_text(json.dumps({**edited, "exact": 1.0 - edited["exact"]}))
    assert main(argv) == 2
    assert "its record was changed after it was written" in capsys.readouterr().err
    recs[3].write_text(json.dumps(edited))

    # a prompt folder's own record replaced (by `{}`, or another prompt's): named, never read as this prompt's
    prompt_json = recs[0].parent.parent / "prompt.json"
    kept = prompt_json.read_text()
    for replaced in ("{}\n", json.dumps({**json.loads(kept), "prompt": "a green star"}) + "\n"):
        prompt_json.write_text(replaced)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{prompt_json}: not this run's record of prompt" in err, err
    prompt_json.write_text(kept)
    assert main(argv) == 0  # the lost image is made again, with this run's settings, its fingerprints true
    remade = json.loads(recs[1].read_text())
    assert remade["made_with"] == record["made_with"]
    assert remade["pixels"] == pixels_digest(np.asarray(Image.open(png).convert("RGB")))


def test_bench_never_writes_into_a_folder_of_other_files(model_dir, clip_dir, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.md").write_text("my notes")
    assert main(bench_args(model_dir, clip_dir, out, "fixed")) == 2
    assert "holds files but no bench run" in capsys.readouterr().err
    assert (out / "results.md").read_text() == "my notes" and sorted(p.name for p in out.iterdir()) == ["results.md"]


def test_two_processes_give_the_same_images(tmp_path):
    """The shipped toy world, sharded over 2 CPU processes with accelerate, batch 1 vs 1 process, batch 32."""
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["bench", "--suite", "toy", "--categories", "single", "--limit", "3", "--seeds", "2", "--steps", "4"]
    args += ["--methods", "fixed date:rho=0.5,every=2"]  # prompts 0, 1, 2: two for the first process, one for the other
    assert main([*args, "--out", str(one)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    launch += ["--dynamo_backend", "no"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch, "-m", "date_diffusion", *args]
    cmd += ["--batch-size", "1", "--out", str(two)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "process 1/2: 4 images" in res.stderr and "process 2/2: 2 images" in res.stderr  # really sharded
    pngs = sorted(one.glob("images/*/*/samples/*.png"))
    assert len(pngs) == 2 * 3 * 2
    for p in pngs:
        a = np.asarray(Image.open(p)).astype(int)
        b = np.asarray(Image.open(two / p.relative_to(one))).astype(int)
        assert np.abs(a - b).max() <= 1, p
    recs = {p.name: json.loads(p.read_text()) for p in two.glob("images/*/*/samples/*.json")}
    assert all(r["exact"] in (0.0, 1.0) for r in recs.values())
    run = json.loads((one / "run.json").read_text())  # the toy world's defaults: its plain reward, held-out CLIP
    assert (run["reward"], run["eval_clip"], run["guidance"], run["seeds"]) == (
        "toy-clip",
        "toy-clip-eval",
        5.0,
        [1000, 1001],
    )
    assert run["methods"]["date:rho=0.5,every=2"]["method"] == "date"


def test_frechet_distance_with_clip_features(clip_dir):
    import torch
    from transformers import CLIPModel

    from date_diffusion.evaluation.fid import CLIPImageFeatures, frechet_distance

    feats = CLIPImageFeatures(CLIPModel.from_pretrained(clip_dir))
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (24, 3, 32, 32), generator=g, dtype=torch.uint8)
    b = (a.float() * 0.3).to(torch.uint8)
    same = frechet_distance([a], [a], feats)
    assert abs(same) < 1e-6
    assert frechet_distance([a], [b], feats) > 10 * max(same, 1e-9)
    with pytest.raises(ValueError, match="inception_weights"):
        frechet_distance([a], [a], None)


def test_edit_toy_suite_runs_plain_and_date_edits(model_dir, clip_dir, tmp_path):
    out = tmp_path / "edit"
    argv = [
        "bench",
        "--suite",
        "edit-toy",
        "--limit",
        "3",
        "--seeds",
        "1",
        "--steps",
        "6",
        "--model",
        str(model_dir),
        "--reward",
        f"clip:{clip_dir}",
        "--eval-clip",
        f"clip:{held_out(clip_dir)}",
        "--methods",
        "fixed date:every=2",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    rec = json.loads((out / "images" / "date_every=2" / "00000" / "samples" / "00006.json").read_text())
    assert {"changed", "preserved", "exact", "pixel_distance"} <= set(rec)
    assert [u["step"] for u in rec["trace"]["updates"]] == [0, 2]
    meta = json.loads((out / "images" / "fixed" / "00000" / "prompt.json").read_text())
    assert meta["source"]["prompt"] != meta["prompt"]
    report = (out / "results.md").read_text()
    assert "Editing:" in report and "| date:every=2 | " in report.split("Editing, paired against `fixed`")[1]
    assert main(argv[:-4] + ["--methods", "best-of-2", "--out", str(tmp_path / "bad")]) == 2


def test_min_object_similarity_uses_attend_and_excite_split():
    from date_diffusion.bench.runner import sub_prompts

    assert sub_prompts("a cat and a dog") == ["a cat", "a dog"]
    assert sub_prompts("a red bowl and a blue car") == ["a red bowl", "a blue car"]
    assert sub_prompts("a lion with a crown") == ["a lion", "a crown"]
    assert sub_prompts("a red circle") == []


def test_edit_csv_suite_and_ane_suite_run(model_dir, clip_dir, tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "red.png")
    (tmp_path / "edits.csv").write_text("image,source_prompt,target_prompt\nred.png,a red square,a blue square\n")
    common = [
        "--seeds",
        "1",
        "--steps",
        "4",
        "--model",
        str(model_dir),
        "--reward",
        f"clip:{clip_dir}",
        "--eval-clip",
        f"clip:{held_out(clip_dir)}",
    ]
    assert (
        main(
            [
                "bench",
                "--suite",
                "edit",
                "--prompts-file",
                str(tmp_path / "edits.csv"),
                "--methods",
                "fixed",
                "--out",
                str(tmp_path / "e"),
                *common,
            ]
        )
        == 0
    )
    rec = json.loads(next((tmp_path / "e" / "images").glob("*/*/samples/*.json")).read_text())
    assert 0 <= rec["pixel_distance"] <= 1 and "changed" not in rec
    assert (
        main(["bench", "--suite", "ane", "--limit", "2", "--methods", "fixed", "--out", str(tmp_path / "a"), *common])
        == 0
    )
    path = next((tmp_path / "a" / "images").glob("*/00000/samples/*.json"))
    rec = json.loads(path.read_text())
    assert rec["category"] == "animal_animal" and rec["prompt"] == "a cat and a dog"
    import torch

    from date_diffusion import CLIPScoreReward

    clip = CLIPScoreReward.from_pretrained(clip_dir)
    img = torch.from_numpy(np.asarray(Image.open(path.with_suffix(".png")))).permute(2, 0, 1)[None].float() / 255
    sims = clip(img.expand(2, -1, -1, -1), ["a cat", "a dog"])
    assert abs(rec["min_object_clip"] - float(sims.min())) < 5e-3  # the PNG is the record's image, quantised


def test_metric_vs_rho_uses_plain_date_runs_only():
    from date_diffusion.bench.report import rho_sweep

    labels = ["fixed", "date:rho=2", "date", "date:rho=0.1", "date:direction=random", "date:normalize=0,rho=2"]
    labels += ["date:rho=0.5,decoder=tiny", "date:rho=1,every=5", "date+ae:rho=1", "ug:scale=8", "recommended"]
    labels += ["date:rho=2,lowres=224", "date:rho=3,reward=aug8(toy-clip)"]
    summary = {k: {"metrics": {"clip_eval": [0.9, 0.8, 1.0]}} for k in labels}
    methods = parse_methods(" ".join(labels))
    assert [(r, k) for r, k, _ in rho_sweep(summary, methods)] == [
        (0.1, "date:rho=0.1"),
        (0.5, "date"),
        (2.0, "date:rho=2"),
    ]


def test_bench_without_its_extra_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    import importlib.util

    from date_diffusion.cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert main(["bench", "--suite", "toy", "--out", str(tmp_path / "run")]) == 2
    assert "pip install 'date-diffusion[bench]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_date_image_no_update_moved_is_the_fixed_samplers_in_its_png_and_the_report(tmp_path, monkeypatch):
    """Where every DATE update is skipped at run time (here: a reward with a zero gradient), the image is the fixed
    sampler's: its PNG's record says `fixed` (as `generate` records it) and results.md counts such images."""
    from date_diffusion.bench import runner
    from date_diffusion.outputs import read_png_metadata

    class Flat:  # the run's reward times zero: every gradient is zero, so every update is skipped
        def __init__(self, reward):
            self.reward = reward

        def __call__(self, images, prompts):
            return self.reward(images, prompts) * 0

        def __getattr__(self, name):
            return getattr(self.reward, name)

    real = runner.BenchRun.reward
    monkeypatch.setattr(runner.BenchRun, "reward", lambda self, spec=None: Flat(real(self, spec)))
    out = tmp_path / "run"
    argv = ["bench", "--suite", "toy", "--limit", "2", "--seeds", "1", "--steps", "2", "--methods", "fixed date"]
    assert main([*argv, "--out", str(out)]) == 0
    png = out / "images" / "date" / "00000" / "samples" / "01000.png"
    assert read_png_metadata(png)["record"]["method"] == "fixed"
    assert json.loads(png.with_suffix(".json").read_text())["method"] == "date"  # the run's column
    text = (out / "results.md").read_text()
    assert "`date`: in 2 of 2 images DATE did not move the embedding (a step that is zero in the embedding's " in text
    assert json.loads((out / "results.json").read_text())["summary"]["date"]["unmoved"] == 2


@pytest.mark.parametrize(
    "spec", ["date date:every=5", "date:steps=1;3 date:steps=3;1", "date:every=5 date:intervals=0:1",
             "date:steps=0 date:intervals=0:1", "date date:reward=1*toy-clip",
             "date:reward=mean(toy-clip;toy-clip-s1) date:reward=mean(toy-clip-s1;toy-clip)",
             "date:steps=2 date:steps=2,anchor=original", "date:steps=2 date:steps=2,prior=0.1",  # round thirteen
             f"date:reward=toy-clip date:reward=clip:{TOY_ASSETS / 'clip'}",  # round fifteen: one model, two names
             "date:reward=toy-ensemble date:reward=mean(toy-clip-m2;toy-clip;toy-clip-s1)",
             "recommended date:rel=0.005,every=10,reward=aug8(toy-ensemble)",
             "date date:track=false", "date date:reward=2*toy-clip",  # round sixteen: the trace only; one direction
             "date:direction=random date:direction=random,reward=toy-clip-s1"],
)  # fmt: skip
def test_date_schedules_that_update_at_the_same_steps_make_the_same_images(spec):
    """Round nine: at 4 steps `every=5`, `steps=0` and `intervals=0:1` all update at step 0 only, and `steps=3;1`
    is `steps=1;3`: each pair is refused as one method listed twice, not run twice under two labels."""
    from date_diffusion.evaluation.methods import parse_methods, same_images

    methods = parse_methods(spec, model=str(TOY_ASSETS / "pipeline"))
    assert same_images(methods, 4, "toy-clip") == tuple(m.label for m in methods)
    assert same_images(parse_methods("date:every=5 date:every=2"), 4, "toy-clip") is None  # [0] and [0, 2]
    assert same_images(parse_methods("date:every=2 date:every=2,anchor=original"), 4, "toy-clip") is None
    assert same_images(parse_methods("date:steps=2 date:steps=2,grad=2,prior=0.1"), 4, "toy-clip") is None
    # the weight of the reward matters beside a prior, or without normalising; a negative one turns the step
    for other in (
        "date:every=2,prior=0.1 date:every=2,prior=0.1,reward=2*toy-clip",
        "date:normalize=0,rho=0.5 date:normalize=0,rho=0.5,reward=2*toy-clip",
        "date date:reward=-1*toy-clip",
    ):
        assert same_images(parse_methods(other), 4, "toy-clip") is None, other


def test_bench_names_the_columns_of_a_prompts_file_it_does_not_read(tmp_path, capsys):
    """Round nine: `generate` named a CSV's unread columns, `bench` took the same file without a word."""
    from date_diffusion.cli.main import main

    (tmp_path / "p.csv").write_text("id,prompt\n1,a red circle\n")
    argv = ["bench", "--suite", "prompts", "--prompts-file", str(tmp_path / "p.csv"), "--seeds", "1", "--steps", "1",
            "--methods", "fixed", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 0
    assert "note: --prompts-file: the prompts are its 'prompt' column; its other columns ('id') are not read" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(("argv", "said"), [
    (["--reward", "toy-clip", "--eval-clip", "toy-clip"],
     "--eval-clip 'toy-clip' runs toy-clip, which the run's reward ('toy-clip') runs too"),
    (["--reward", "toy-clip", "--eval-clip", f"clip:{TOY_ASSETS / 'clip'}"],
     "which the run's reward ('toy-clip') runs too"),
    (["--reward", "toy-clip-eval"], "the default --eval-clip 'toy-clip-eval' runs toy-clip-eval"),
    (["--methods", "fixed date:reward=aug2(toy-clip-eval)"], "which the reward of 'date:reward=aug2(toy-clip-eval)'"),
])  # fmt: skip
def test_the_held_out_clip_is_never_a_model_the_rewards_run(tmp_path, capsys, argv, said):
    """Round fifteen: `--eval-clip toy-clip` beside the reward `toy-clip` was taken, and the reward's gain shown as a
    held-out one (`cli.bench._check_held_out`, through every spelling of a model: `registry.shared_model`)."""
    base = ["bench", "--suite", "toy", "--limit", "1", "--seeds", "1", "--steps", "2"]
    assert main([*base, *argv, "--out", str(tmp_path / "o")]) == 2
    assert said in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_one_model_under_two_names_in_a_sum_is_refused():
    """Round fifteen: `clip:ASSETS/clip+toy-clip` ran one CLIP twice (as `2*toy-clip`), where `toy-clip+toy-clip`
    was refused."""
    from date_diffusion.rewards.registry import RewardSpecError, check_spec

    with pytest.raises(RewardSpecError, match="one model, two names"):
        check_spec(f"clip:{TOY_ASSETS / 'clip'}+toy-clip")


def test_a_select_judge_is_never_the_held_out_clip(tmp_path, capsys):
    """Round sixteen: the held-out CLIP could be the model a `select` method's judge picks the images with."""
    argv = [
        "bench",
        "--suite",
        "toy",
        "--limit",
        "1",
        "--seeds",
        "1",
        "--steps",
        "4",
        "--methods",
        "fixed select:n=2,at=0,judge=toy-clip-s1",
        "--eval-clip",
        "toy-clip-s1",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    assert "which the judge of 'select:n=2,at=0,judge=toy-clip-s1' ('toy-clip-s1') runs too" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["report", "bench"])
def test_a_folder_where_the_report_writes_a_file_is_named_before_any_work(tmp_path, capsys, command):
    """Round sixteen: `results.md` as a folder ended `report` and `bench` with IsADirectoryError after part of the
    report was rewritten: each name a report writes (`bench.report.REPORT_FILES`) is checked first."""
    out = tmp_path / "run"
    argv = ["bench", "--suite", "toy", "--limit", "1", "--seeds", "1", "--steps", "2", "--methods", "fixed",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    (out / "results.md").unlink()
    (out / "results.md").mkdir()
    before = (out / "results.csv").stat().st_mtime_ns
    assert main(["report", str(out)] if command == "report" else argv) == 2
    assert f"{str(out / 'results.md')!r} is a folder, where the report writes its results.md" in capsys.readouterr().err
    assert (out / "results.csv").stat().st_mtime_ns == before
