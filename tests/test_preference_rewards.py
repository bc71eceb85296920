"""ImageReward, PickScore and the aesthetic predictor on tiny random configurations."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from date_diffusion.rewards.aesthetic import AestheticReward
from date_diffusion.rewards.clip import CLIPScoreReward, PickScoreReward
from date_diffusion.rewards.common import PreferenceMLP
from date_diffusion.rewards.imagereward import (
    ImageRewardModel,
    ImageRewardReward,
    checkpoint_key_to_ours,
    text_config,
    vision_config,
)


def released_layout(vision_depth: int, text_depth: int) -> list[str]:
    """Key names of THUDM/ImageReward's ImageReward.pt (BLIP_Pretrain + MLP), written out from its layout."""
    keys = [
        "blip.visual_encoder.cls_token",
        "blip.visual_encoder.pos_embed",
        "blip.visual_encoder.patch_embed.proj.weight",
        "blip.visual_encoder.patch_embed.proj.bias",
        "blip.visual_encoder.norm.weight",
        "blip.visual_encoder.norm.bias",
    ]
    for i in range(vision_depth):
        for part in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            keys += [f"blip.visual_encoder.blocks.{i}.{part}.weight", f"blip.visual_encoder.blocks.{i}.{part}.bias"]
    keys += [
        "blip.text_encoder.embeddings.position_ids",
        "blip.text_encoder.embeddings.word_embeddings.weight",
        "blip.text_encoder.embeddings.position_embeddings.weight",
        "blip.text_encoder.embeddings.LayerNorm.weight",
        "blip.text_encoder.embeddings.LayerNorm.bias",
    ]
    for i in range(text_depth):
        for att in ("attention", "crossattention"):
            for part in ("self.query", "self.key", "self.value", "output.dense", "output.LayerNorm"):
                keys += [f"blip.text_encoder.encoder.layer.{i}.{att}.{part}.{w}" for w in ("weight", "bias")]
        for part in ("intermediate.dense", "output.dense", "output.LayerNorm"):
            keys += [f"blip.text_encoder.encoder.layer.{i}.{part}.{w}" for w in ("weight", "bias")]
    keys += [f"blip.{p}.{w}" for p in ("vision_proj", "text_proj") for w in ("weight", "bias")]
    keys += [f"mlp.layers.{i}.{w}" for i in (0, 2, 4, 6, 7) for w in ("weight", "bias")]
    return keys


def tiny_imagereward():
    torch.manual_seed(0)
    v = vision_config(tiny=True)
    return ImageRewardModel(v, text_config(v.hidden_size, tiny=True, vocab_size=64)).eval()


def fake_checkpoint(model):
    ours = model.state_dict()
    state = {}
    for key in released_layout(2, 2):
        target = checkpoint_key_to_ours(key)
        state[key] = ours[target].clone() if target is not None else torch.zeros(3)
    return state


def test_every_released_key_maps_and_every_parameter_is_covered():
    model = tiny_imagereward()
    layout = released_layout(2, 2)
    mapped = {checkpoint_key_to_ours(k) for k in layout} - {None}
    assert mapped == set(model.state_dict()), set(model.state_dict()) ^ mapped
    with pytest.raises(KeyError):
        checkpoint_key_to_ours("blip.text_decoder.cls.weight")


def test_checkpoint_loads_strictly_and_scores_like_the_reference_formula(tmp_path):
    from transformers import BertTokenizer

    source = tiny_imagereward()
    state = fake_checkpoint(source)
    loaded = tiny_imagereward()
    for p in loaded.parameters():
        torch.nn.init.normal_(p)
    loaded.load_checkpoint_state(state)
    for (k, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(RuntimeError):
        loaded.load_checkpoint_state({k: v for k, v in state.items() if "mlp.layers.7" not in k})

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "circle", "cat", "dog"]
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.save(state, tmp_path / "ImageReward.pt")  # the released checkpoint is a torch file
    v = vision_config(tiny=True)
    reward = ImageRewardReward.from_pretrained(
        tmp_path, tmp_path / "tok", vision_cfg=v, text_cfg=text_config(v.hidden_size, tiny=True, vocab_size=64)
    )
    images = torch.rand(2, 3, 48, 48, requires_grad=True)
    scores = reward(images, ["a red circle", "a cat"])
    tok = BertTokenizer(str(tmp_path / "tok" / "vocab.txt"))
    ids = tok(["a red circle", "a cat"], padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    pixels = F.interpolate(images, size=(32, 32), mode="bicubic", antialias=True, align_corners=False)
    pixels = (pixels - reward.preprocess.mean) / reward.preprocess.std
    image = source.visual_encoder(pixel_values=pixels).last_hidden_state
    text = source.text_encoder(
        input_ids=ids.input_ids,
        attention_mask=ids.attention_mask,
        encoder_hidden_states=image,
        encoder_attention_mask=torch.ones(image.shape[:-1], dtype=torch.long),
    ).last_hidden_state
    expected = (source.mlp.layers(text[:, 0]).squeeze(-1) - 0.16717362830052426) / 1.0333394966054072
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)
    (grad,) = torch.autograd.grad(scores.sum(), images)
    assert grad.abs().sum() > 0


def test_pickscore_is_logit_scaled_clip_score(clip_dir):
    clip = CLIPScoreReward.from_pretrained(clip_dir)
    pick = PickScoreReward.from_pretrained(clip_dir)
    images = torch.rand(2, 3, 32, 32)
    prompts = ["a cat", "a dog"]
    torch.testing.assert_close(pick(images, prompts), clip.model.logit_scale.exp() * clip(images, prompts))


def test_aesthetic_reads_the_mlp_and_ignores_the_prompt(clip_dir, tmp_path):
    torch.manual_seed(1)
    head = PreferenceMLP(16)
    save_file(head.state_dict(), tmp_path / "aesthetic.safetensors")
    reward = AestheticReward.from_pretrained(tmp_path / "aesthetic.safetensors", clip=clip_dir)
    images = torch.rand(2, 3, 32, 32)
    a = reward(images, ["a cat", "a dog"])
    b = reward(images, ["x", "y"])
    assert a.shape == (2,) and torch.equal(a, b)
    feats = F.normalize(reward.clip.get_image_features(pixel_values=reward.preprocess(images)).pooler_output, dim=-1)
    torch.testing.assert_close(a, head.eval()(feats))


def test_cli_reward_specs(clip_dir, tmp_path):
    from date_diffusion.cli.common import CLIError, load_reward
    from date_diffusion.rewards.base import WeightedReward

    r = load_reward(f"0.5*clip:{clip_dir}+2*pickscore:{clip_dir}", "cpu")
    assert isinstance(r, WeightedReward) and r.weights == [0.5, 2.0]
    with pytest.raises(CLIError, match="unknown reward"):
        load_reward("beauty", "cpu")
