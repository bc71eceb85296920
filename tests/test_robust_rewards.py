"""Reward wrappers that resist reward hacking: augmented views, ensembles, subject-aware scores; and their specs."""

import pytest
import torch

from date_diffusion import CLIPScoreReward, Reward
from date_diffusion.evaluation.methods import parse_method
from date_diffusion.rewards.augment import AugmentedReward
from date_diffusion.rewards.ensemble import EnsembleReward
from date_diffusion.rewards.registry import RewardSpecError, check_spec, reward_from_spec
from date_diffusion.rewards.subjects import SubjectReward, subject_prompts


class TableReward(Reward):
    """A hand-made reward: score = mean pixel value * number of words in the text (easy to compute by hand)."""

    name = "table"

    def forward(self, images, prompts):
        words = torch.tensor([len(p.split()) for p in prompts], dtype=images.dtype)
        return images.mean(dim=(1, 2, 3)) * words


def images(n=2, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_subject_prompts_split_at_conjunctions_and_relations():
    assert subject_prompts("a red circle to the left of a blue square") == ["a red circle", "a blue square"]
    assert subject_prompts("a cat with a crown and a dog") == ["a cat", "a crown", "a dog"]
    assert subject_prompts("two red crosses") == []
    # the evaluation metric's split (Attend-and-Excite) ignores relations and commas
    assert subject_prompts("a red circle above a blue square", relations=False) == []
    assert subject_prompts("a cat, a dog and a bird", relations=False) == ["a cat, a dog", "a bird"]


def test_subject_reward_equals_its_formula_on_hand_made_inputs():
    x = images(3)
    prompts = ["a red circle above a blue big square", "two red crosses", "a cat and a dog with a hat"]
    got = SubjectReward(TableReward(), weight=0.25)(x, prompts)
    m = x.mean(dim=(1, 2, 3))
    expected = torch.stack(
        [
            0.75 * 8 * m[0] + 0.25 * min(3 * m[0], 4 * m[0]),
            3 * m[1],  # one subject: the prompt's own score
            0.75 * 8 * m[2] + 0.25 * min(2 * m[2], 2 * m[2], 2 * m[2]),
        ]
    )
    torch.testing.assert_close(got, expected)


def test_ensemble_equals_the_mean_of_its_members(clip_dir, tokenizer):
    from conftest import make_clip

    members = [CLIPScoreReward.from_pretrained(clip_dir), CLIPScoreReward(make_clip(tokenizer, seed=7), tokenizer)]
    x, prompts = images(2).float(), ["a red circle", "a blue dog"]
    expected = (members[0](x, prompts) + members[1](x, prompts)) / 2
    assert not torch.allclose(members[0](x, prompts), members[1](x, prompts))
    torch.testing.assert_close(EnsembleReward(members)(x, prompts), expected)


def test_augmentation_is_deterministic_per_seed_and_batch_independent():
    x, prompts = images(3), ["a red circle", "a blue dog", "a red circle"]
    aug = AugmentedReward(TableReward(), views=4, seed=0)
    first = aug(x, prompts)
    torch.testing.assert_close(aug(x, prompts), first, rtol=0, atol=0)
    alone = torch.cat([aug(x[b : b + 1], prompts[b : b + 1]) for b in range(3)])
    torch.testing.assert_close(alone, first, rtol=1e-12, atol=1e-12)
    other_seed = AugmentedReward(TableReward(), views=4, seed=1)(x, prompts)
    assert (other_seed - first).abs().max() > 1e-4
    views = aug.augment(x[:1], prompts[:1])
    assert views.shape == (4, 3, 32, 32) and (views[0] - views[1]).abs().max() > 1e-3  # views differ


def test_augmentation_without_crop_shift_or_noise_is_the_wrapped_reward(reward):
    x, prompts = images(2).float(), ["a red circle", "a blue dog"]
    same = AugmentedReward(reward, views=3, min_scale=1.0, shift=0.0, noise=0.0)
    torch.testing.assert_close(same(x, prompts), reward(x, prompts), rtol=1e-5, atol=1e-6)


def test_augmented_reward_gradient_agrees_with_finite_differences():
    aug = AugmentedReward(TableReward(), views=3, seed=2)
    x = images(1, size=8).requires_grad_(True)
    (grad,) = torch.autograd.grad(aug(x, ["a red circle"]).sum(), x)
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    eps = 1e-6
    with torch.no_grad():
        fd = (aug(x + eps * direction, ["a red circle"]) - aug(x - eps * direction, ["a red circle"])) / (2 * eps)
    assert float((grad * direction).sum()) == pytest.approx(float(fd), rel=1e-6)


def test_specs_build_the_wrappers_and_bad_specs_fail_before_loading(clip_dir):
    r = reward_from_spec(f"aug4(subjects(clip:{clip_dir}))")
    assert isinstance(r, AugmentedReward) and r.views == 4 and isinstance(r.reward, SubjectReward)
    m = reward_from_spec(f"mean(clip:{clip_dir};subjects(clip:{clip_dir}))")  # one reward listed twice is refused
    assert isinstance(m, EnsembleReward) and m.weights == [0.5, 0.5]
    bad_specs = "aug0(toy-clip) mean(toy-clip toy-clip) mean(toy-clip;nope) clip-l:x foo(toy-clip) toy-clip+".split()
    for bad in bad_specs:
        with pytest.raises(RewardSpecError):
            check_spec(bad)


def test_bench_method_takes_relative_rho_and_its_own_reward():
    m = parse_method("date:rel=0.002,every=5,reward=aug8(toy-clip)")
    assert m.date.rho_relative == 0.002 and m.date.update_every == 5 and m.reward == "aug8(toy-clip)"
    assert parse_method("date:rho=0.5").reward is None
    with pytest.raises(RewardSpecError):
        parse_method("date:rho=0.5,reward=aug8(nope)")
