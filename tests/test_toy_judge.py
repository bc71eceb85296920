"""The toy world's learned judges: their training captions, labels, the reward's gradient, the shipped models,
early selection by a judge, and the training recipe end to end (smoke)."""

import json

import numpy as np
import pytest
import torch

from date_diffusion.toyworld import scene, world
from date_diffusion.toyworld.judge import ASPECTS, ToyJudge
from date_diffusion.toyworld.training import judge_data
from date_diffusion.toyworld.training.judge import verdict_vector


def test_training_captions_never_equal_a_suite_or_validation_prompt():
    from date_diffusion.toyworld.suite import prompt_suite, validation_prompts

    excluded = judge_data.excluded_captions()
    assert len(excluded) == len(prompt_suite()) + len(validation_prompts())  # both sets, no overlap between them
    drawn = {s.caption for i in range(40) for s in judge_data.shard_specs(i, judge_data.SHARD, excluded)[0]}
    assert len(drawn) > 1000 and not drawn & excluded
    # without the exclusion the same draws would have hit the suite: the check is not vacuous
    rng = np.random.default_rng([20261202, 0])
    unfiltered = {
        scene.sample_spec(rng, "novel" if rng.random() < 0.1 else None, allow_held_out=True).caption
        for _ in range(40 * judge_data.SHARD)
    }
    assert unfiltered & excluded


def test_verdict_vector_masks_aspects_the_caption_does_not_ask_about():
    labels, mask = verdict_vector({"pass": False, "aspects": {"objects": True, "colors": False, "count": False}})
    assert dict(zip(ASPECTS, mask)) == {"pass": 1, "objects": 1, "colors": 1, "count": 1, "position": 0, "size": 0}
    assert labels[:4] == [0.0, 1.0, 0.0, 0.0]


def _reward(seed: int):
    """A judge with a random head (its score weights too, so that both paths count) over the toy CLIP."""
    from date_diffusion.rewards.judge import JudgeReward
    from date_diffusion.toyworld.training.judge import new_judge

    torch.manual_seed(seed)
    model = new_judge(noise_aware=False)
    torch.nn.init.normal_(model.head.score_weight)
    return JudgeReward(model)


def test_judge_reward_gradient_matches_finite_differences():
    reward = _reward(0).double()
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64, requires_grad=True)
    prompts = ["a red circle", "two blue squares"]
    reward(x, prompts).sum().backward()
    d = torch.randn_like(x)
    eps = 1e-5
    with torch.no_grad():
        fd = (reward(x + eps * d, prompts).sum() - reward(x - eps * d, prompts).sum()) / (2 * eps)
    assert torch.allclose((x.grad * d).sum(), fd, rtol=1e-5, atol=1e-8)


def test_judge_scores_each_image_for_its_own_caption_only():
    """Batch independence: an image's score does not depend on the other images and captions of the batch."""
    reward = _reward(1)
    x = torch.rand(3, 3, 64, 64)
    prompts = ["a red circle", "two blue squares and a green cross", "a purple triangle above a red cross"]
    together = reward(x, prompts)
    alone = torch.cat([reward(x[i : i + 1], prompts[i : i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)
    assert not torch.allclose(together[:1], reward(x[:1], prompts[1:2]), atol=1e-4)  # the caption matters


def test_saved_judge_loads_in_float32_and_scores_as_saved(tmp_path):
    from date_diffusion.rewards.registry import reward_from_spec

    reward = _reward(2)
    reward.model.head.to(torch.float16).save_pretrained(tmp_path)
    loaded = reward_from_spec(f"toy-judge:{tmp_path}")
    assert loaded.model.head.head.weight.dtype == torch.float32
    assert not any(k.startswith("clip") for k in loaded.model.head.state_dict())  # the head only is stored
    x = torch.rand(2, 3, 64, 64)
    reward.model.head.float()  # what float16 storage kept, in float32
    assert torch.allclose(loaded(x, ["a red circle"] * 2), reward(x, ["a red circle"] * 2), atol=1e-5)


@pytest.mark.skipif(not world.JUDGES["toy-judge"].exists(), reason="the shipped judges are not in this checkout")
@pytest.mark.parametrize("name", list(world.JUDGES))
def test_shipped_judges_prefer_a_render_of_the_caption_to_a_render_of_a_hard_negative(name):
    from date_diffusion.rewards.registry import reward_from_spec

    reward = reward_from_spec(name)
    rng = np.random.default_rng(3)
    specs = [scene.sample_spec(rng) for _ in range(64)]
    images = torch.from_numpy(np.stack([scene.render(scene.place(s, rng)) for s in specs])).permute(0, 3, 1, 2) / 255
    with torch.no_grad():
        right = reward(images, [s.caption for s in specs])
        wrong = reward(images, [scene.hard_negative(s, rng).caption for s in specs])
    assert (right > wrong).float().mean() > 0.75


def test_recorded_x0_keeps_each_steps_estimate_and_restores_the_scheduler():
    from diffusers import DDIMScheduler

    from date_diffusion.sampling.record import recorded_x0

    scheduler = DDIMScheduler()
    scheduler.set_timesteps(4)
    x, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    expected = [scheduler.step(eps, t, x).pred_original_sample for t in scheduler.timesteps[:2]]
    with recorded_x0(scheduler) as seen:
        for t in scheduler.timesteps[:2]:
            scheduler.step(eps, t, x, return_dict=False)
    assert len(seen) == 2 and all(torch.equal(a, b) for a, b in zip(seen, expected))
    assert "step" not in vars(scheduler)


class _Brightness(torch.nn.Module):
    """A stand-in judge: the mean of an image's red channel."""

    def forward(self, images, prompts):
        return images[:, 0].mean((1, 2))


def test_early_selection_keeps_the_seed_whose_estimate_the_judge_scores_highest():
    from date_diffusion import DATEPipeline
    from date_diffusion.evaluation.selection import early_selection
    from date_diffusion.pipelines.reward_path import decode_for_reward
    from date_diffusion.sampling.record import recorded_x0

    pipe = DATEPipeline.from_pretrained(world.PIPELINE)
    pipe.set_progress_bar_config(disable=True)
    call = dict(num_inference_steps=6, guidance_scale=5.0)
    stride, at, seeds = 1000, 2, [0, 1, 2, 3]
    chosen = early_selection(pipe, ["a red circle"], [0], 4, at, _Brightness(), stride, **call)
    scores = []
    for j in range(4):  # each candidate's x0_hat at step `at`, from a full run
        with recorded_x0(pipe.scheduler) as seen:
            pipe("a red circle", generator=torch.Generator().manual_seed(j * stride), output_type="latent", **call)
        scores.append(float(_Brightness()(decode_for_reward(seen[at], pipe.vae), [""])))
    assert chosen == [seeds[int(np.argmax(scores))] * stride]
    assert len(set(np.round(scores, 6))) == 4  # the candidates differ, so the choice means something


def test_select_method_refuses_updates_before_the_selection_step():
    from date_diffusion.evaluation.methods import parse_method

    method = parse_method("select:n=2,at=10,steps=5;20")
    with pytest.raises(ValueError, match="before the selection"):
        method.select_seeds(None, None, ["a"], [0], {"num_inference_steps": 50})


def test_train_judge_smoke_runs_every_stage(tmp_path):
    from date_diffusion.cli.main import main

    assert main(["toyworld", "train-judge", "--out", str(tmp_path), "--smoke"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report) == {"judge", "judge-na"}
    assert {"final", "x0_step_0"} <= set(report["judge-na"])
    assert ToyJudge.from_pretrained(tmp_path / "judge-na").config.aspects == list(ASPECTS)


def test_an_unknown_word_is_named_whole_with_its_accents():
    """The evaluator names the word the user typed (`circlé`), never a piece of it cut at a letter beyond ASCII."""
    from date_diffusion.toyworld.evaluator import unknown_words

    assert unknown_words("a red circlé, two Würfel") == ["circlé", "würfel"]
    assert unknown_words("a red c1rcle, a circle3, circle_x, circle's") == ["c1rcle", "circle3", "circle_x", "circle's"]


def test_train_judge_resumes_only_the_recipe_it_started(tmp_path):
    """Round nine: a full train-judge over a --smoke folder took the smoke shards and 3-step judges as its own;
    the recipe is recorded at the start and another one refused, as is a folder of stages without it."""
    from date_diffusion.schemas import SchemaError
    from date_diffusion.toyworld.training.judge_recipe import JudgeRecipe, check_same_recipe

    check_same_recipe(JudgeRecipe.smoke(tmp_path))
    check_same_recipe(JudgeRecipe.smoke(tmp_path, device="cuda"))  # the device may change
    with pytest.raises(SchemaError, match=r"recipe.json: this folder was started with another recipe: shards 0 \(now"):
        check_same_recipe(JudgeRecipe(tmp_path))
    (tmp_path / "recipe.json").unlink()
    (tmp_path / "data").mkdir()
    with pytest.raises(SchemaError, match=r"recipe.json is missing, and .* holds what a recipe made \(data\)"):
        check_same_recipe(JudgeRecipe(tmp_path))


def test_a_damaged_data_shard_is_named(tmp_path):
    """Round nine: a shard JSON without its rows was `KeyError: 'rows'`, a truncated tensors file `SafetensorError`,
    both exit 1 without the file; each is named with the fix."""
    import numpy as np
    import torch

    from date_diffusion.outputs import save_tensors
    from date_diffusion.schemas import SchemaError
    from date_diffusion.toyworld.training.judge import load_shards

    meta = tmp_path / "shard-0000.json"
    tensors = {
        "images": torch.zeros(2, 4, 4, 3, dtype=torch.uint8),
        "x0": torch.zeros(2, 1, 4, 4, 3, dtype=torch.uint8),
    }
    from date_diffusion.toyworld.training.judge_data import SEED_BASE, SHARD

    rows = [{"prompt": "a", "seed": SEED_BASE}, {"prompt": "b", "seed": SEED_BASE + 1}]
    good = {"capture": [0], "steps": 10, "rows": rows}
    copied = [{**row, "seed": row["seed"] + 4 * SHARD} for row in rows]  # shard 4's rows under shard 0's name
    for shard, damage, message in (
        ({}, None, "field 'capture' is missing"),
        (good, b"\0" * 50, "is not a readable tensors file"),
        ({**good, "rows": rows[:1]}, None, "the 1 rows of shard-0000.json"),
        ({**good, "rows": copied}, None, "its rows are not those of shard 0000"),  # round ten
    ):
        meta.write_text(json.dumps(shard))
        save_tensors(tensors, tmp_path / "shard-0000.safetensors")
        if damage:
            (tmp_path / "shard-0000.safetensors").write_bytes(damage)
        with pytest.raises(SchemaError, match=message):
            load_shards(tmp_path)
    save_tensors(tensors, tmp_path / "shard-0000.safetensors")
    meta.write_text(json.dumps(good))
    assert np.asarray(load_shards(tmp_path)[0]).shape == (2, 4, 4, 3)  # an earlier version's shard: no seal
    # round thirteen: a shard is sealed when written; its rows or its tensors edited since are named
    from date_diffusion.toyworld.training.judge_data import shard_seal

    meta.write_text(json.dumps({**good, "sealed": shard_seal(good, meta)}))
    assert np.asarray(load_shards(tmp_path)[0]).shape == (2, 4, 4, 3)
    edited = [{**rows[0], "prompt": "a red circle"}, rows[1]]
    meta.write_text(json.dumps({**good, "rows": edited, "sealed": shard_seal(good, meta)}))
    with pytest.raises(SchemaError, match="the shard was changed since it was made"):
        load_shards(tmp_path)
    meta.write_text(json.dumps({**good, "sealed": shard_seal(good, meta)}))
    save_tensors({**tensors, "images": torch.ones(2, 4, 4, 3, dtype=torch.uint8)}, tmp_path / "shard-0000.safetensors")
    with pytest.raises(SchemaError, match="the shard was changed since it was made"):
        load_shards(tmp_path)


@pytest.mark.parametrize("stage, message", [("report", "needs the judge and judge_na stage(s) first"),
                                            ("judge_na", "needs the data stage(s) first")])  # fmt: skip
def test_a_judge_stage_before_its_inputs_is_a_usage_error_that_writes_nothing(tmp_path, capsys, stage, message):
    """Round ten: `--stage report` on a new folder failed (exit 1, OSError) after writing recipe.json, which then
    refused the user's fix (`--smoke`)."""
    from date_diffusion.cli.main import main

    assert main(["toyworld", "train-judge", "--out", str(tmp_path / "j"), "--stage", stage]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "j").exists()


@pytest.mark.skipif(not world.JUDGES["toy-judge"].exists(), reason="the shipped judges are not in this checkout")
@pytest.mark.parametrize(
    "change, message",
    [
        ({"base_clip": "clip-l"}, 'its base_clip "clip-l" is none of the toy world\'s CLIPs'),
        ({"base_clip": "toy-clip-s1"}, "is not the CLIP the head was trained over (base_clip_files differ)"),
        ({"heads": 3}, "its heads 3 does not divide the width 128"),
        ({"width": 128.0}, "its width 128.0 is no whole number from 1 to 4096"),
        ({"layers": 1}, "its tensors do not fit"),
        ({"aspects": ["pass", "pass", "colors", "count", "position", "size"]}, "must list each aspect once"),
        ({"aspects": []}, "its aspects [] is no list of the aspects"),
        ({"depth": 2}, "unknown keys ['depth']"),
    ],
)
def test_a_judge_config_is_checked_before_anything_is_built_from_it(tmp_path, change, message):
    """Round twelve: a hand-edited judge config gave KeyError, TypeError, AssertionError or diffusers' advice on
    mismatched sizes, or was taken (one layer of two, another CLIP under the head, an aspect listed twice)."""
    import shutil

    from date_diffusion.rewards.registry import RewardSpecError, reward_from_spec

    folder = shutil.copytree(world.JUDGES["toy-judge"], tmp_path / "judge")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(RewardSpecError) as err:
        reward_from_spec(f"toy-judge:{folder}")
    assert message in str(err.value) and "Error:" not in str(err.value), err.value
