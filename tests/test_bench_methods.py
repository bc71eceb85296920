"""The benchmark's methods as objects: specs, run.json records (this version's and earlier ones), what each method
runs, where it applies, where it lies on the report's plots; the run's caches and defaults."""

import json
import shutil
from pathlib import Path

import pytest

from date_diffusion.bench import runner
from date_diffusion.bench.runner import BenchRun, Cache, RunSettings, check_settings, read_run, run_methods
from date_diffusion.core.settings import SettingError
from date_diffusion.evaluation.methods import (
    AttendExcite,
    BestOf,
    Date,
    DateAttendExcite,
    Fixed,
    Method,
    Recommended,
    UniversalGuidance,
    parse_method,
    parse_methods,
    upgrade_reward,
)
from date_diffusion.resolver import resolve_settings

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
SPECS = {  # the specs the docs use, and one of each key kind
    "fixed": Fixed,
    "fixed@70": Fixed,
    "date": Date,
    "date:rho=2": Date,
    "date:rel=0.005,every=10,reward=aug8(toy-ensemble)": Date,
    "date:steps=0;10;20,grad=2,anchor=original,prior=0.1,track=no": Date,
    "date:intervals=0:5;20:25,direction=random,target=next": Date,
    "date:normalize=0,rho=2": Date,
    "date:rho=0.5,decoder=tiny": Date,
    "date:rho=2,lowres=224": Date,
    "best-of-3": BestOf,
    "ug:scale=20": UniversalGuidance,
    "ug:scale=2,every=10": UniversalGuidance,
    "ae": AttendExcite,
    "ae:res=8,iters=10,scale=5": AttendExcite,
    "date+ae:rho=1": DateAttendExcite,
    "date+ae:res=8,every=5,reward=subjects(toy-clip)": DateAttendExcite,
    "recommended": Recommended,
}


class FakeRun:
    """What a method asks of its run: rewards and decoders by spec (here: their names)."""

    def reward(self, spec=None):
        return f"reward {spec or 'of the run'}"

    def decoder(self, spec):
        return f"decoder {spec}"


@pytest.mark.parametrize("spec", SPECS)
def test_each_spec_round_trips_through_its_run_json_record(spec):
    method = parse_method(spec)
    assert type(method) is SPECS[spec] and method.label == spec
    record = json.loads(json.dumps(method.record()))  # as run.json stores it
    assert Method.from_record(spec, record) == method
    assert Method.from_record(spec, record).record() == record


def test_date_booleans_are_the_settings_vocabulary():
    for word, value in [("no", False), ("false", False), ("0", False), ("yes", True), ("1", True), ("True", True)]:
        date = parse_method(f"date:normalize={word}").pipeline_kwargs(FakeRun())["date"]
        assert date.normalize is value, word
    assert parse_method("date:track=no").date.track_reward_after is False
    with pytest.raises(SettingError, match=r"normalize in 'date:normalize=maybe' must be one of"):
        parse_method("date:normalize=maybe")
    with pytest.raises(SettingError, match="track in"):
        parse_method("date:track=2")


def test_bad_specs_name_what_is_wrong():
    with pytest.raises(SettingError, match="bad setting 'speed=2'.*rho, rel.*decoder, reward, lowres"):
        parse_method("date:speed=2")
    with pytest.raises(SettingError, match="needs scale="):
        parse_method("ug:every=2")
    with pytest.raises(SettingError, match="lowres in"):
        parse_method("date:lowres=0")
    with pytest.raises(SettingError, match="bad setting 'rho=1' in 'ae:rho=1'"):
        parse_method("ae:rho=1")
    with pytest.raises(SettingError, match="give only one of rho"):
        parse_method("date:rho=2,rel=0.01")
    with pytest.raises(ValueError, match="toy-ensemble"):
        parse_method("date:reward=aug8(ensemble)")  # the old name, refused with the new one
    with pytest.raises(ValueError, match="unknown method"):
        parse_method("date-ae:rho=1")


def test_plot_coordinates_only_for_the_papers_date_but_rho():
    assert parse_method("date:rho=2").plot_coordinates() == {"rho": 2.0}
    assert parse_method("date").plot_coordinates() == {"rho": 0.5}
    approximate = ["date:rho=2,lowres=224", "date:rho=2,decoder=tiny", "date:rho=2,reward=toy-clip"]
    other = ["date:rel=0.01", "date:rho=2,every=5", "date:rho=2,normalize=no", "date+ae:rho=2", "recommended", "fixed"]
    for spec in approximate + other:
        assert parse_method(spec).plot_coordinates() == {}, spec


def test_recommended_is_what_the_resolver_resolves_for_the_toy_world():
    method = parse_method("recommended")
    resolved = resolve_settings()
    assert (method.date, method.reward) == (resolved.date, resolved.reward)
    assert resolved.sources["reward"] == "model" and method.reward != resolve_settings(paper_defaults=True).reward
    kwargs = method.pipeline_kwargs(FakeRun())
    assert kwargs == {"date": resolved.date, "reward": f"reward {resolved.reward}"}


def test_recommended_needs_a_model_that_recommends(tmp_path):
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    with pytest.raises(ValueError, match="recommends a DATE setting"):
        parse_methods("fixed recommended", tmp_path)


def test_what_each_method_runs():
    run = FakeRun()
    assert parse_method("fixed").pipeline_kwargs(run) == {} and parse_method("fixed@7").steps_for(50) == 7
    assert parse_method("fixed").steps_for(50) == 50 and parse_method("fixed@7").image_method == "fixed"
    best = parse_method("best-of-3")
    assert best.candidates == 3 and best.pipeline_kwargs(run) == {}
    ug = parse_method("ug:scale=20,every=2").pipeline_kwargs(run)
    assert ug == {"reward": "reward of the run", "ug_scale": 20.0, "ug_every": 2}
    date = parse_method("date:rho=1,reward=toy-ensemble,decoder=tiny,lowres=32").pipeline_kwargs(run)
    assert date["reward"] == "reward toy-ensemble" and date["reward_decoder"] == "decoder tiny"
    assert date["reward_resolution"] == 32 and date["date"].rho == 1
    both = parse_method("date+ae:rho=1,res=8,iters=10").pipeline_kwargs(run)
    ae = both["attend_and_excite"]
    assert both["date"].rho == 1 and both["reward"] == "reward of the run"
    assert ae["attn_res"] == (8, 8) and ae["max_iter_to_alter"] == 10 and "scale_factor" not in ae
    assert "circle" in ae["subjects"] and "cat" in ae["subjects"]


def test_editing_suites_take_plain_fixed_and_date_only():
    generation_only = {"fixed@70", "date:rho=2,lowres=224", "best-of-3", "ug:scale=20", "ug:scale=2,every=10", "ae"}
    generation_only |= {"ae:res=8,iters=10,scale=5", "date+ae:rho=1", "date+ae:res=8,every=5,reward=subjects(toy-clip)"}
    for spec in SPECS:
        method = parse_method(spec)
        assert method.applies_to("edit-toy") == (spec not in generation_only) == method.applies_to("edit"), spec
        assert method.applies_to("toy") and method.applies_to("coco"), spec


def test_old_reward_names_are_upgraded():
    assert upgrade_reward("clip") == "toy-clip" and upgrade_reward("clip-eval") == "toy-clip-eval"
    assert upgrade_reward("aug8(ensemble)") == "aug8(toy-ensemble)"
    assert upgrade_reward("subjects(aug8(clip))") == "subjects(aug8(toy-clip))"
    assert upgrade_reward("0.5*clip+1*clip-s1") == "0.5*toy-clip+1*toy-clip-s1"
    assert upgrade_reward("mean(clip;clip-m2)") == "mean(toy-clip;toy-clip-m2)"
    for same in ("clip-l", "clip:/models/clip-eval", "toy-clip", "aug8(toy-ensemble)", "pickscore", None):
        assert upgrade_reward(same) == same


def test_an_old_layout_run_folder_loads_and_reports(tmp_path):
    from date_diffusion.cli.main import main

    shutil.copy(RESULTS / "toy-evidence" / "run.json", tmp_path / "run.json")
    old = json.loads((tmp_path / "run.json").read_text())
    assert old["methods"]["date"]["kind"] == "date" and old["reward"] == "clip"  # before methods were objects
    run = read_run(tmp_path)
    assert (run["reward"], run["eval_clip"]) == ("toy-clip", "toy-clip-eval")
    methods = {m.label: m for m in run_methods(run)}
    assert [type(m) for m in methods.values()] == [Fixed, Date, Recommended, BestOf, BestOf]
    assert methods["recommended"].reward == "aug8(toy-ensemble)"
    assert methods["recommended"].date.rho_relative == 0.005 and methods["best-of-3"].candidates == 3
    import numpy as np

    from date_diffusion.bench.suites import load_suite

    item = load_suite("toy")[0]
    pixels = np.zeros((8, 8, 3), np.uint8)
    record = {"index": 0, "seed": 1000, "category": item.category, "prompt": item.prompt, "spec": item.spec,
              "exact": 1.0, "clip_eval": 0.3, "reward": 0.2, "seconds": 1.0, "peak_memory_mb": 10.0,
              "trace": {"updates": []}, "pixels": runner.pixels_digest(pixels)}  # fmt: skip
    for m in ("fixed", "date"):  # records of this version (fingerprinted) in a run folder of an earlier one
        path = tmp_path / "images" / m / "00000" / "samples" / "01000.json"
        path.parent.mkdir(parents=True)
        made = runner.made_with(runner.run_settings(run), methods[m], item.prompt, 1000)
        mine = {**record, "method": m, "made_with": made}
        png = runner.png_bytes(pixels, runner._png_record(mine, methods[m], runner.run_settings(run)))
        path.with_suffix(".png").write_bytes(png)  # with the record inside it, as bench writes it
        path.write_text(json.dumps({**mine, "sealed": runner.sealed(mine)}))
    assert main(["report", str(tmp_path)]) == 0
    md = (tmp_path / "results.md").read_text()
    assert "| date | 1 |" in md and "| recommended | 0 |" in md and "reward `toy-clip`" in md
    path.write_text(json.dumps(record))  # an earlier version's record (no fingerprints): never reported from
    assert main(["report", str(tmp_path)]) == 2
    # a rerun with the same settings is accepted, and run.json is then in this version's layout
    check_settings(tmp_path, RunSettings(**{**run, "methods": {"date": methods["date"].record()}}))
    new = json.loads((tmp_path / "run.json").read_text())
    assert new["methods"]["recommended"]["method"] == "recommended" and "kind" not in new["methods"]["date"]
    assert read_run(tmp_path) == run


def test_old_layouts_of_every_method_kind_convert():
    multi = {m.label: m for m in run_methods(read_run(RESULTS / "toy-multi"))}
    assert isinstance(multi["ae:res=8"], AttendExcite) and multi["ae:res=8"].res == 8
    assert isinstance(multi["date+ae:res=8"], DateAttendExcite) and multi["date+ae:res=8"].res == 8
    toy = {m.label: m for m in run_methods(read_run(RESULTS / "toy"))}
    assert toy["fixed@75"].steps == 75 and toy["date:rho=0.5,decoder=tiny"].decoder == "tiny"
    assert (toy["ug:scale=2,every=10"].scale, toy["ug:scale=2,every=10"].every) == (2.0, 10)
    assert toy["date:normalize=0,rho=2"].date.normalize is False
    approx = {m.label: m for m in run_methods(read_run(RESULTS / "toy-validation-v2" / "val-approx"))}
    assert approx["date:rho=0.5,lowres=32"].lowres == 32


def test_caches_build_once_per_spec_model_device_and_dtype():
    built = []
    cache = Cache(lambda *key: built.append(key) or object())
    a = cache.get("toy-clip", "model-a", "cpu", "float32")
    assert cache.get("toy-clip", "model-a", "cpu", "float32") is a and len(built) == 1
    import torch

    assert cache.get("toy-clip", "model-a", torch.device("cpu"), torch.float32) is a  # the same key, as torch names it
    others = [("toy-clip-s1", "model-a", "cpu", "float32"), ("toy-clip", "model-b", "cpu", "float32"),
              ("toy-clip", "model-a", "cuda", "float32"), ("toy-clip", "model-a", "cpu", "float16")]  # fmt: skip
    objects = [cache.get(*key) for key in others]
    assert len({id(o) for o in [a, *objects]}) == 5 and len(built) == 5


def test_each_run_owns_its_rewards():
    settings = RunSettings("toy", None, 1, [0], 4, 5.0, "toy-model", "toy-clip", "toy-clip-eval")
    run = BenchRun(settings, "unused", "cpu")
    reward = run.reward()
    assert run.reward("toy-clip") is reward and run.rewards.get("toy-clip", "toy-model", "cpu", "float32") is reward
    assert run.rewards.get("toy-clip", "other-model", "cpu", "float32") is not reward
    assert BenchRun(settings, "unused", "cpu").reward() is not reward  # no module-wide cache
    assert not hasattr(runner, "_REWARDS") and not hasattr(runner, "_DECODERS")


def _prepared(*argv):
    from date_diffusion.cli import bench
    from date_diffusion.cli.generate import resolve_model
    from date_diffusion.cli.main import build_parser

    args = build_parser().parse_args(["bench", *argv, "--out", "unused"])
    opts = bench.BenchOptions.from_args(args)
    return bench._prepare(opts, resolve_model(opts.model))[0]


def test_the_runs_defaults_come_from_the_resolver_and_the_toy_world(tmp_path):
    from date_diffusion.families import PAPER_EVAL_CLIP
    from date_diffusion.toyworld import world

    toy = _prepared("--suite", "toy")
    assert (toy.reward, toy.eval_clip, toy.guidance, toy.steps) == ("toy-clip", world.EVAL_CLIP, 5.0, 50)
    assert toy.seeds == list(range(world.SUITES["toy"].seed_base, world.SUITES["toy"].seed_base + 4))
    assert _prepared("--suite", "toy-validation", "--seeds", "2").seeds == [0, 1]
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    sd = _prepared("--suite", "ane", "--model", str(tmp_path), "--steps", "20")
    assert (sd.reward, sd.eval_clip, sd.guidance, sd.steps, sd.seeds) == ("clip-l", PAPER_EVAL_CLIP, 8.0, 20, [6])
    mine = _prepared("--suite", "toy", "--reward", "aug8(toy-clip)", "--guidance", "3", "--eval-clip", "toy-clip-s1")
    assert (mine.reward, mine.guidance, mine.eval_clip) == ("aug8(toy-clip)", 3.0, "toy-clip-s1")


def test_the_run_refuses_bad_values_naming_the_flag(capsys):
    from conftest import overridden

    from date_diffusion.cli.main import main

    bad = [
        (["--reward", "clip"], "--reward"),
        (["--steps", "0"], "--steps"),
        (["--eval-clip", "clip-eval"], "--eval-clip"),
    ]
    bad += [
        (["--methods", "date:normalize=maybe"], "normalize in"),
        (["--suite", "edit-toy", "--methods", "ae"], "apply"),
    ]
    for argv, flag in bad:
        assert main(overridden(["bench", "--suite", "toy"], [*argv, "--out", "unused-run"])) == 2
        assert flag in capsys.readouterr().err
    assert not Path("unused-run").exists()
