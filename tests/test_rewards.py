import pytest
import torch
import torch.nn.functional as F

from date_diffusion import CLIPScoreReward, WeightedReward
from date_diffusion.hub import ModelNotFoundError


def manual_clip_score(model, tokenizer, images, prompts, antialias):
    pixels = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False, antialias=antialias)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        img = model.vision_model(pixel_values=(pixels - mean) / std).pooler_output
        img = F.normalize(model.visual_projection(img), dim=-1)
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt")
        txt = model.text_model(**ids).pooler_output
        txt = F.normalize(model.text_projection(txt), dim=-1)
    return (img * txt).sum(-1)


@pytest.mark.parametrize("antialias", [True, False])
def test_clip_score_is_cosine_of_clip_features(reward, tokenizer, antialias):
    reward.antialias = antialias
    images = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    prompts = ["a red circle", "a blue dog"]
    expected = manual_clip_score(reward.model, tokenizer, images, prompts, antialias)
    torch.testing.assert_close(reward(images, prompts), expected, rtol=1e-5, atol=1e-5)


def test_antialias_option_changes_downsampling(reward):
    images = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    reward.antialias = True
    a = reward(images, ["a cat"])
    reward.antialias = False  # the reference's resize
    b = reward(images, ["a cat"])
    assert not torch.allclose(a, b)


def test_differentiable_frozen_and_text_cached(reward):
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    score = reward(images, ["a cat", "a cat"]).sum()
    (grad,) = torch.autograd.grad(score, images)
    assert grad.abs().sum() > 0
    assert all(not p.requires_grad for p in reward.parameters())
    assert list(reward._text_cache) == ["a cat"]


@pytest.mark.parametrize("spec", ["toy-clip", "toy-judge"])
def test_a_prompts_text_features_never_depend_on_the_prompts_encoded_beside_it(spec):
    """Round twenty-three: text features were cached per prompt but encoded in a batch of the prompts not cached
    yet, and a batch's float sums depend on its members: a resumed bench run, whose cache fills in other batches,
    remade an image a pixel level off. Each prompt is encoded alone: the scores of a batch are the scores of its
    images scored one by one, through rewards that saw other prompts first or none."""
    from date_diffusion.bench.suites import load_suite
    from date_diffusion.rewards.registry import reward_from_spec

    prompts = [it.prompt for it in load_suite("toy", None, 6, None)]
    images = torch.rand(len(prompts), 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the same images in every call: only how the prompts were encoded differs
        together = reward_from_spec(spec, "cpu")(images, prompts)
        warm = reward_from_spec(spec, "cpu")
        warm(images[:2], prompts[3:5])  # two prompts first: the others are encoded in another batch
        after = warm(images, prompts)
        single = torch.stack([reward_from_spec(spec, "cpu")(images, [p] * len(prompts)) for p in prompts])
    assert torch.equal(after, together) and torch.equal(torch.diagonal(single), together)


def test_long_prompt_truncated_with_warning(reward):
    long = " ".join(["red"] * 40)
    with pytest.warns(UserWarning, match="truncated"):
        s = reward(torch.rand(1, 3, 32, 32), [long])
    assert torch.isfinite(s).all()


@pytest.fixture
def other_clip(tokenizer, tmp_path):
    """A second tiny CLIP (another seed, so other weights than `reward`'s) as a reward."""
    from conftest import make_clip

    make_clip(tokenizer, seed=1).save_pretrained(tmp_path / "clip-seed-1")
    tokenizer.save_pretrained(tmp_path / "clip-seed-1")
    return CLIPScoreReward.from_pretrained(tmp_path / "clip-seed-1")


def member_scores(members, tokenizer):
    """Images, prompts and each member's score, from `manual_clip_score` (not from the rewards' forward)."""
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    prompts = ["a cat", "a dog"]
    scores = [manual_clip_score(m.model, tokenizer, images, prompts, m.antialias) for m in members]
    assert (scores[0] - scores[1]).abs().min() > 1e-3  # two different members
    return images, prompts, scores


def test_weighted_sum(reward, other_clip, tokenizer):
    images, prompts, (a, b) = member_scores([reward, other_clip], tokenizer)
    both = WeightedReward([(0.5, reward), (2.0, other_clip)])
    torch.testing.assert_close(both(images, prompts), 0.5 * a + 2.0 * b, rtol=1e-5, atol=1e-5)


def test_ensemble_is_the_mean_of_its_members(reward, other_clip, tokenizer):
    from date_diffusion.rewards.ensemble import EnsembleReward

    images, prompts, (a, b) = member_scores([reward, other_clip], tokenizer)
    mean = EnsembleReward([reward, other_clip])(images, prompts)
    torch.testing.assert_close(mean, (a + b) / 2, rtol=1e-5, atol=1e-5)
    assert (mean - a).abs().min() > 1e-4 and (mean - b).abs().min() > 1e-4  # neither member alone


def test_missing_model_says_how_to_fix(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such file or folder"):
        CLIPScoreReward.from_pretrained(str(tmp_path / "nope"))
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE.*hf download"):
        CLIPScoreReward.from_pretrained("someone/not-a-cached-model")


def test_rejects_mismatched_prompts(reward):
    with pytest.raises(ValueError, match="prompts"):
        reward(torch.rand(2, 3, 32, 32), ["one"])


def test_a_tokenizer_missing_offline_is_refused_not_built_empty(tmp_path, monkeypatch):
    """transformers 5 returns a tokenizer of special tokens only when no file is found: that is a missing model."""
    from transformers import CLIPTokenizer

    from date_diffusion.hub import ModelNotFoundError, load_component

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="hf download openai/clip-vit-large-patch14"):
        load_component(CLIPTokenizer, "openai/clip-vit-large-patch14")
