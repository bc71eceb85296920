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


# The tiny sizes of `tiny_imagereward()`, for the checkpoint and the reference below (written out, not read from
# our configs): ViT width 32, 2 blocks, 2 heads, MLP 64, 16 px patches of 32 px images; BERT width 24, 2 layers,
# 2 heads, feed-forward 48, 64 words, 64 positions.
VIT_WIDTH, VIT_DEPTH, VIT_MLP, PATCH, IMAGE = 32, 2, 64, 16, 32
TEXT_WIDTH, TEXT_DEPTH, TEXT_FF, VOCAB, POSITIONS, HEADS = 24, 2, 48, 64, 64, 2


def released_checkpoint(seed: int = 0) -> dict:
    """A random ImageReward.pt state dict at the tiny sizes, every shape written out from the released modules
    (BLIP's timm-style ViT, BLIP's med.py BERT with cross-attention, ImageReward's MLP), none taken from our model."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    def linear(name, out_features, in_features):
        return {f"{name}.weight": rand(out_features, in_features, scale=in_features**-0.5),
                f"{name}.bias": rand(out_features, scale=0.1)}  # fmt: skip

    def norm(name, width):
        return {f"{name}.weight": 1 + rand(width, scale=0.1), f"{name}.bias": rand(width, scale=0.1)}

    vit, text, d, h = "blip.visual_encoder.", "blip.text_encoder.", VIT_WIDTH, TEXT_WIDTH
    state = {
        vit + "cls_token": rand(1, 1, d, scale=0.5),
        vit + "pos_embed": rand(1, (IMAGE // PATCH) ** 2 + 1, d, scale=0.5),
        vit + "patch_embed.proj.weight": rand(d, 3, PATCH, PATCH, scale=(3 * PATCH * PATCH) ** -0.5),
        vit + "patch_embed.proj.bias": rand(d, scale=0.1),
        **norm(vit + "norm", d),
    }
    for i in range(VIT_DEPTH):
        b = f"{vit}blocks.{i}."
        state |= norm(b + "norm1", d) | linear(b + "attn.qkv", 3 * d, d) | linear(b + "attn.proj", d, d)
        state |= norm(b + "norm2", d) | linear(b + "mlp.fc1", VIT_MLP, d) | linear(b + "mlp.fc2", d, VIT_MLP)
    state[text + "embeddings.position_ids"] = torch.arange(POSITIONS).expand(1, -1)
    state[text + "embeddings.word_embeddings.weight"] = rand(VOCAB, h, scale=0.5)
    state[text + "embeddings.position_embeddings.weight"] = rand(POSITIONS, h, scale=0.5)
    state |= norm(text + "embeddings.LayerNorm", h)
    for i in range(TEXT_DEPTH):
        b = f"{text}encoder.layer.{i}."
        for att, kv_width in (("attention", h), ("crossattention", d)):  # cross-attention: keys from the image
            a = b + att + "."
            state |= linear(a + "self.query", h, h) | linear(a + "self.key", h, kv_width)
            state |= linear(a + "self.value", h, kv_width) | linear(a + "output.dense", h, h)
            state |= norm(a + "output.LayerNorm", h)
        state |= linear(b + "intermediate.dense", TEXT_FF, h) | linear(b + "output.dense", h, TEXT_FF)
        state |= norm(b + "output.LayerNorm", h)
    state |= linear("blip.vision_proj", 256, d) | linear("blip.text_proj", 256, h)  # unused by scoring
    for i, (n_out, n_in) in zip((0, 2, 4, 6, 7), ((1024, h), (128, 1024), (64, 128), (16, 64), (1, 16))):
        state |= linear(f"mlp.layers.{i}", n_out, n_in)
    return state


def reference_score(state: dict, pixels, input_ids, attention_mask):
    """ImageReward.score written out in float64 with plain torch ops on the checkpoint's own keys: BLIP's ViT
    (pre-norm blocks, fused qkv, LayerNorm eps 1e-6, exact GELU, final norm over every token), then BLIP's BERT in
    multimodal mode (post-norm layers, self-attention with the padding mask as -10000, cross-attention to every image
    token, LayerNorm eps 1e-12), the MLP on the [CLS] feature without activations, and ImageReward's mean/std."""
    s = {k: v.double() for k, v in state.items() if v.is_floating_point()}

    def lin(x, name):
        return F.linear(x, s[name + ".weight"], s[name + ".bias"])

    def norm(x, name, eps):
        return F.layer_norm(x, x.shape[-1:], s[name + ".weight"], s[name + ".bias"], eps)

    def attend(q, k, v, bias=None):
        def heads(t):
            return t.reshape(t.shape[0], t.shape[1], HEADS, -1).transpose(1, 2)

        q, k, v = heads(q), heads(k), heads(v)
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        scores = scores if bias is None else scores + bias
        return (scores.softmax(-1) @ v).transpose(1, 2).flatten(2)

    vit = "blip.visual_encoder."
    x = F.conv2d(pixels.double(), s[vit + "patch_embed.proj.weight"], s[vit + "patch_embed.proj.bias"], stride=PATCH)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([s[vit + "cls_token"].expand(len(x), -1, -1), x], dim=1) + s[vit + "pos_embed"]
    for i in range(VIT_DEPTH):
        b = f"{vit}blocks.{i}."
        q, k, v = lin(norm(x, b + "norm1", 1e-6), b + "attn.qkv").chunk(3, dim=-1)  # qkv rows: q, k, v, head-major
        x = x + lin(attend(q, k, v), b + "attn.proj")
        x = x + lin(F.gelu(lin(norm(x, b + "norm2", 1e-6), b + "mlp.fc1")), b + "mlp.fc2")
    image = norm(x, vit + "norm", 1e-6)

    text = "blip.text_encoder."
    n = input_ids.shape[1]
    y = s[text + "embeddings.word_embeddings.weight"][input_ids] + s[text + "embeddings.position_embeddings.weight"][:n]
    y = norm(y, text + "embeddings.LayerNorm", 1e-12)
    padding = (1.0 - attention_mask[:, None, None, :].double()) * -10000.0
    for i in range(TEXT_DEPTH):
        b = f"{text}encoder.layer.{i}."
        a = b + "attention."
        context = attend(lin(y, a + "self.query"), lin(y, a + "self.key"), lin(y, a + "self.value"), padding)
        y = norm(lin(context, a + "output.dense") + y, a + "output.LayerNorm", 1e-12)
        c = b + "crossattention."
        context = attend(lin(y, c + "self.query"), lin(image, c + "self.key"), lin(image, c + "self.value"))
        y = norm(lin(context, c + "output.dense") + y, c + "output.LayerNorm", 1e-12)
        ff = lin(F.gelu(lin(y, b + "intermediate.dense")), b + "output.dense")
        y = norm(ff + y, b + "output.LayerNorm", 1e-12)
    feature = y[:, 0]
    for i in (0, 2, 4, 6, 7):  # Linear, Dropout, Linear, Dropout, Linear, Dropout, Linear, Linear
        feature = lin(feature, f"mlp.layers.{i}")
    return (feature.squeeze(-1) - 0.16717362830052426) / 1.0333394966054072  # ImageReward's self.mean, self.std


def test_checkpoint_loads_strictly_and_scores_like_the_reference_formula(tmp_path):
    from transformers import BertTokenizer

    # our model round-trips through the released key layout
    source = tiny_imagereward()
    loaded = tiny_imagereward()
    for p in loaded.parameters():
        torch.nn.init.normal_(p)
    loaded.load_checkpoint_state(fake_checkpoint(source))
    for (k, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k

    # a checkpoint built without our code: its keys are the released layout's, and it loads strictly
    state = released_checkpoint()
    assert set(state) == set(released_layout(VIT_DEPTH, TEXT_DEPTH))
    with pytest.raises(RuntimeError):
        tiny_imagereward().load_checkpoint_state({k: v for k, v in state.items() if "mlp.layers.7" not in k})

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "circle", "cat", "dog"]
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.save(state, tmp_path / "ImageReward.pt")  # the released checkpoint is a torch file
    v = vision_config(tiny=True)
    reward = ImageRewardReward.from_pretrained(
        tmp_path, tmp_path / "tok", vision_cfg=v, text_cfg=text_config(v.hidden_size, tiny=True, vocab_size=64)
    )
    images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(3), requires_grad=True)
    prompts = ["a red circle", "a cat"]
    scores = reward(images, prompts)
    tok = BertTokenizer(str(tmp_path / "tok" / "vocab.txt"))
    ids = tok(prompts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    assert ids.attention_mask.sum(1).tolist() == [5, 4]  # [CLS] words [SEP], then padding the mask must hide
    # the released transform's resize (square images: no crop), then its Normalize constants, written out
    pixels = F.interpolate(images.double(), size=(32, 32), mode="bicubic", antialias=True, align_corners=False)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711], dtype=torch.float64).view(1, 3, 1, 1)
    expected = reference_score(state, (pixels - mean) / std, ids.input_ids, ids.attention_mask)
    assert (expected[0] - expected[1]).abs() > 0.1  # scores far apart compared with the tolerance below
    torch.testing.assert_close(scores.double(), expected, rtol=1e-5, atol=1e-5)
    (grad,) = torch.autograd.grad(scores.sum(), images)
    assert grad.abs().sum() > 0
    (expected_grad,) = torch.autograd.grad(expected.sum(), images)  # the reference's, computed in float64
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)


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
