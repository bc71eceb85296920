"""OpenCLIP-format checkpoints converted to transformers' CLIPModel, and the HPSv2 / HPSv2.1 rewards.

Oracles, none of them the converter itself:
- the reference conversion: transformers' `convert_clip_original_pytorch_to_hf.py` (its copy functions assign the
  original model's modules onto a CLIPModel; the script imports OpenAI's `clip` package at the top, so it cannot be
  imported here, and newer transformers no longer ship it). `reference_conversion` below does the same module
  assignments on a module tree of real torch modules (`nn.MultiheadAttention` etc.) loaded from the state dict;
- the OpenCLIP forward, recomputed from the state dict tensors with torch's functional ops
  (`F.multi_head_attention_forward`, the op OpenCLIP's `nn.MultiheadAttention` runs), `openclip_encode_*`;
- the published architectures' tensor shapes, written out below from OpenCLIP's model configs;
- the official code's own outputs (open_clip_torch 3.3.0, hpsv2 1.2.0), recorded by `scripts/record_official.py` into
  `tests/official/` on random weights and inputs made from integers (`official/inputs.py`): token ids of hard
  prompts, preprocessed pixels of square and non-square images, and `hpsv2.img_score.score()` / open_clip cosines.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from date_diffusion.hub import ModelNotFoundError
from date_diffusion.rewards.hps import HPSReward
from date_diffusion.rewards.openclip import (
    ARCHS,
    OpenCLIPFormatError,
    OpenCLIPReward,
    ResizeCropNormalizer,
    ResizePadNormalizer,
    arch_from_state_dict,
    clip_config,
    clipmodel_from_openclip,
    convert_state_dict,
    openclip_clean,
    openclip_tokenize,
)
from date_diffusion.rewards.registry import RewardSpecError, check_spec, reward_from_spec

# A tiny OpenCLIP ViT: towers of different widths (2 and 3 heads by the width/64 rule), so that a swapped tower,
# a wrong head split or a transposed projection shows.
TINY = dict(image=32, patch=8, vision_width=128, vision_layers=2, text_width=192, text_layers=2, embed=48, context=16)
PROMPTS = ["a red circle", "a blue dog and a cat"]


class Block(nn.Module):
    """OpenCLIP's `ResidualAttentionBlock` names: ln_1, attn (nn.MultiheadAttention), ln_2, mlp.c_fc, mlp.c_proj."""

    def __init__(self, width, heads, mlp):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, mlp), gelu=nn.GELU(), c_proj=nn.Linear(mlp, width)))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads):
        super().__init__()
        self.resblocks = nn.ModuleList([Block(width, heads, 4 * width) for _ in range(layers)])


class Visual(nn.Module):
    def __init__(self, c):
        super().__init__()
        w = c["vision_width"]
        self.conv1 = nn.Conv2d(3, w, c["patch"], c["patch"], bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(w))
        self.positional_embedding = nn.Parameter(torch.zeros((c["image"] // c["patch"]) ** 2 + 1, w))
        self.ln_pre, self.ln_post = nn.LayerNorm(w), nn.LayerNorm(w)
        self.transformer = Transformer(w, c["vision_layers"], w // 64)
        self.proj = nn.Parameter(torch.zeros(w, c["embed"]))


class OpenCLIPTree(nn.Module):
    """OpenCLIP's `CLIP` module names (the original CLIP layout), made of real torch modules."""

    def __init__(self, c, vocab):
        super().__init__()
        w = c["text_width"]
        self.visual = Visual(c)
        self.token_embedding = nn.Embedding(vocab, w)
        self.positional_embedding = nn.Parameter(torch.zeros(c["context"], w))
        self.transformer = Transformer(w, c["text_layers"], w // 64)
        self.ln_final = nn.LayerNorm(w)
        self.text_projection = nn.Parameter(torch.zeros(w, c["embed"]))
        self.logit_scale = nn.Parameter(torch.tensor(2.6592))


def tiny_state(vocab: int, seed: int = 0, c=TINY) -> dict:
    """Random weights (layer norms included, so none is the identity) in OpenCLIP's names, from the module tree."""
    tree = OpenCLIPTree(c, vocab)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in tree.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.3 if p.ndim > 1 else 0.1))
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
                p.add_(1.0)
    return {k: v.clone() for k, v in tree.state_dict().items()}


def tiny_hf_config(c, vocab, tokenizer, act):
    from transformers import CLIPConfig

    text = dict(
        vocab_size=vocab,
        hidden_size=c["text_width"],
        intermediate_size=4 * c["text_width"],
        num_hidden_layers=c["text_layers"],
        num_attention_heads=c["text_width"] // 64,
        max_position_embeddings=c["context"],
        hidden_act=act,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        hidden_size=c["vision_width"],
        intermediate_size=4 * c["vision_width"],
        num_hidden_layers=c["vision_layers"],
        num_attention_heads=c["vision_width"] // 64,
        image_size=c["image"],
        patch_size=c["patch"],
        hidden_act=act,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=c["embed"])


# --- the reference conversion: transformers' convert_clip_original_pytorch_to_hf.py, its module assignments ----


def _ref_linear(hf, pt):
    hf.weight, hf.bias = pt.weight, pt.bias


def _ref_layers(hf_layers, pt_blocks):
    for hf, pt in zip(hf_layers, pt_blocks, strict=True):
        _ref_linear(hf.layer_norm1, pt.ln_1)
        _ref_linear(hf.layer_norm2, pt.ln_2)
        _ref_linear(hf.mlp.fc1, pt.mlp.c_fc)
        _ref_linear(hf.mlp.fc2, pt.mlp.c_proj)
        q, k, v = pt.attn.in_proj_weight.chunk(3, dim=0)
        qb, kb, vb = pt.attn.in_proj_bias.chunk(3, dim=0)
        hf.self_attn.q_proj.weight.data, hf.self_attn.q_proj.bias.data = q, qb
        hf.self_attn.k_proj.weight.data, hf.self_attn.k_proj.bias.data = k, kb
        hf.self_attn.v_proj.weight.data, hf.self_attn.v_proj.bias.data = v, vb
        hf.self_attn.out_proj.weight, hf.self_attn.out_proj.bias = pt.attn.out_proj.weight, pt.attn.out_proj.bias


@torch.no_grad()
def reference_conversion(state, config, c, vocab) -> dict:
    from transformers import CLIPModel

    pt = OpenCLIPTree(c, vocab)
    pt.load_state_dict(state, strict=True)  # the state dict has exactly the original layout's names and shapes
    hf = CLIPModel(config).eval()
    # copy_text_model_and_projection / copy_encoder
    hf.text_projection.weight.data = pt.text_projection.data.T
    hf.text_model.embeddings.token_embedding.weight = pt.token_embedding.weight
    hf.text_model.embeddings.position_embedding.weight.data = pt.positional_embedding
    _ref_linear(hf.text_model.final_layer_norm, pt.ln_final)
    _ref_layers(hf.text_model.encoder.layers, pt.transformer.resblocks)
    # copy_vison_model_and_projection
    hf.visual_projection.weight.data = pt.visual.proj.data.T
    _ref_linear(hf.vision_model.pre_layrnorm, pt.visual.ln_pre)
    _ref_linear(hf.vision_model.post_layernorm, pt.visual.ln_post)
    hf.vision_model.embeddings.patch_embedding.weight.data = pt.visual.conv1.weight.data
    hf.vision_model.embeddings.class_embedding = pt.visual.class_embedding
    hf.vision_model.embeddings.position_embedding.weight.data = pt.visual.positional_embedding.data
    _ref_layers(hf.vision_model.encoder.layers, pt.visual.transformer.resblocks)
    hf.logit_scale = pt.logit_scale
    return hf.state_dict()


# --- the OpenCLIP forward, from the state dict tensors --------------------------------------------------------


def _quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def _resblocks(state, prefix, x, heads, mask, act):
    """OpenCLIP's Transformer on x [L, N, D] (its seq-first layout): x += attn(ln_1 x); x += mlp(ln_2 x)."""
    i = 0
    while f"{prefix}{i}.ln_1.weight" in state:
        p = lambda name: state[f"{prefix}{i}.{name}"]  # noqa: E731
        h = F.layer_norm(x, x.shape[-1:], p("ln_1.weight"), p("ln_1.bias"))
        attn, _ = F.multi_head_attention_forward(
            h, h, h, x.shape[-1], heads, p("attn.in_proj_weight"), p("attn.in_proj_bias"), None, None, False, 0.0,
            p("attn.out_proj.weight"), p("attn.out_proj.bias"), training=False, need_weights=False, attn_mask=mask,
        )  # fmt: skip
        x = x + attn
        h = F.layer_norm(x, x.shape[-1:], p("ln_2.weight"), p("ln_2.bias"))
        x = x + F.linear(act(F.linear(h, p("mlp.c_fc.weight"), p("mlp.c_fc.bias"))), *_lin(p, "mlp.c_proj"))
        i += 1
    return x


def _lin(p, name):
    return p(f"{name}.weight"), p(f"{name}.bias")


def openclip_encode_image(state, pixels, heads, act=F.gelu):
    """`CLIP.encode_image` of OpenCLIP's VisionTransformer (class-token pooling, ln_post, @ proj)."""
    s = state
    x = F.conv2d(pixels, s["visual.conv1.weight"], stride=s["visual.conv1.weight"].shape[-1])
    x = x.flatten(2).transpose(1, 2)  # [N, grid^2, D]
    cls = s["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + s["visual.positional_embedding"]
    x = F.layer_norm(x, x.shape[-1:], s["visual.ln_pre.weight"], s["visual.ln_pre.bias"])
    x = _resblocks(s, "visual.transformer.resblocks.", x.transpose(0, 1), heads, None, act).transpose(0, 1)
    x = F.layer_norm(x, x.shape[-1:], s["visual.ln_post.weight"], s["visual.ln_post.bias"])
    return x[:, 0] @ s["visual.proj"]


def openclip_encode_text(state, ids, eot, heads, act=F.gelu):
    """`CLIP.encode_text`: causal transformer, ln_final, the end-of-text token's feature @ text_projection.
    (OpenCLIP pools at `ids.argmax(-1)`: CLIP's `<|endoftext|>` is its largest id; the tiny vocabulary's is not,
    so the first end-of-text position is taken, which is the same token.)"""
    s = state
    n = ids.shape[1]
    x = s["token_embedding.weight"][ids] + s["positional_embedding"][:n]
    mask = torch.full((n, n), float("-inf"), dtype=x.dtype).triu(1)  # OpenCLIP's build_causal_mask
    x = _resblocks(s, "transformer.resblocks.", x.transpose(0, 1), heads, mask, act).transpose(0, 1)
    x = F.layer_norm(x, x.shape[-1:], s["ln_final.weight"], s["ln_final.bias"])
    return x[torch.arange(x.shape[0]), (ids == eot).int().argmax(-1)] @ s["text_projection"]


def normalized_pixels(images):
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073], dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711], dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def oracle_cosine(state, tokenizer, images, prompts, act=F.gelu, c=TINY):
    """Cosine of OpenCLIP's normalised image and text features, at the model's input size (no resize)."""
    ids = tokenizer(prompts, padding="max_length", max_length=c["context"], truncation=True, return_tensors="pt")
    img = F.normalize(openclip_encode_image(state, normalized_pixels(images), c["vision_width"] // 64, act), dim=-1)
    txt = openclip_encode_text(state, ids.input_ids, tokenizer.eos_token_id, c["text_width"] // 64, act)
    return (img * F.normalize(txt, dim=-1)).sum(-1)


# --- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def state(tokenizer):
    return tiny_state(len(tokenizer))


@pytest.fixture
def images():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def save_checkpoint(folder, state, kind, tokenizer):
    """`state` saved as OpenCLIP checkpoints are published: safetensors, a torch state dict, or HPS's
    `{'state_dict': {'module.' + key: ...}}` (DDP-wrapped training); the tokenizer beside it."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    if kind == "safetensors":
        save_file(state, folder / "open_clip_model.safetensors")
        return folder / "open_clip_model.safetensors"
    if kind == "pt":
        torch.save(state, folder / "open_clip_pytorch_model.bin")
        return folder / "open_clip_pytorch_model.bin"
    wrapped = {"state_dict": {"module." + k: v.half() for k, v in state.items()}, "epoch": 3, "name": "hps"}
    torch.save(wrapped, folder / "HPS_v2_compressed.pt")
    return folder / "HPS_v2_compressed.pt"


# --- conversion -----------------------------------------------------------------------------------------------


def test_converted_weights_equal_the_reference_conversion_key_by_key(state, tokenizer):
    config = tiny_hf_config(TINY, len(tokenizer), tokenizer, "gelu")
    expected = reference_conversion(state, config, TINY, len(tokenizer))
    ours = convert_state_dict(state)
    assert sorted(ours) == sorted(expected)
    for key in expected:
        assert ours[key].shape == expected[key].shape, key
        assert torch.equal(ours[key], expected[key]), key
    model = clipmodel_from_openclip(state, tokenizer=tokenizer)
    assert sorted(model.state_dict()) == sorted(expected)
    assert all(torch.equal(model.state_dict()[k], expected[k]) for k in expected)


def test_architecture_read_from_shapes(state, tokenizer):
    arch = arch_from_state_dict(state)
    assert (arch.image_size, arch.patch_size, arch.vision_width, arch.vision_layers, arch.vision_heads) == (
        32, 8, 128, 2, 2
    )  # fmt: skip
    assert (arch.text_width, arch.text_layers, arch.text_heads, arch.context_length) == (192, 2, 3, 16)
    assert (arch.embed_dim, arch.vocab_size, arch.vision_mlp, arch.text_mlp) == (48, len(tokenizer), 512, 768)
    assert arch.hidden_act == "gelu" and arch_from_state_dict(state, quick_gelu=True).hidden_act == "quick_gelu"


@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
def test_forward_matches_the_openclip_forward_from_the_state_dict(state, tokenizer, act):
    model = clipmodel_from_openclip(state, quick_gelu=act == "quick_gelu", tokenizer=tokenizer).double()
    s64 = {k: v.double() for k, v in state.items()}
    fn = _quick_gelu if act == "quick_gelu" else F.gelu
    pixels = normalized_pixels(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)).double())
    ids = tokenizer(PROMPTS, padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels)
        text = model.get_text_features(**ids)
    image = image if isinstance(image, torch.Tensor) else image.pooler_output
    text = text if isinstance(text, torch.Tensor) else text.pooler_output
    torch.testing.assert_close(image, openclip_encode_image(s64, pixels, 2, fn), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(text, openclip_encode_text(s64, ids.input_ids, 1, 3, fn), rtol=1e-9, atol=1e-9)
    # the oracle tells the activations and the head split apart (so the matches above are not vacuous)
    other = _quick_gelu if act == "gelu" else F.gelu
    assert (image - openclip_encode_image(s64, pixels, 2, other)).abs().max() > 1e-4
    assert (image - openclip_encode_image(s64, pixels, 1, fn)).abs().max() > 1e-4
    assert (text - openclip_encode_text(s64, ids.input_ids, 1, 1, fn)).abs().max() > 1e-4


def test_laion_models_default_to_exact_gelu(state, tokenizer, images):
    """LAION's OpenCLIP models use nn.GELU: `openclip:` converts to transformers' exact "gelu", and the score is
    the oracle's with GELU, not with QuickGELU."""
    reward = OpenCLIPReward.from_state_dict(state, tokenizer)
    assert reward.model.config.text_config.hidden_act == reward.model.config.vision_config.hidden_act == "gelu"
    score = reward(images, PROMPTS)
    torch.testing.assert_close(score, oracle_cosine(state, tokenizer, images, PROMPTS), rtol=1e-5, atol=1e-5)
    assert (score - oracle_cosine(state, tokenizer, images, PROMPTS, act=_quick_gelu)).abs().max() > 1e-4


def test_unknown_layouts_are_refused_by_name(state, tokenizer):
    resnet = {**state, "visual.attnpool.c_proj.weight": torch.zeros(4, 4)}
    with pytest.raises(OpenCLIPFormatError, match="visual.attnpool.c_proj.weight"):
        clipmodel_from_openclip(resnet, tokenizer=tokenizer)
    with pytest.raises(OpenCLIPFormatError, match="original CLIP layout"):
        arch_from_state_dict({k: v for k, v in state.items() if not k.startswith("visual.")})
    # OpenAI's metadata entries are not weights and are skipped
    meta = {**state, "input_resolution": torch.tensor(32), "context_length": torch.tensor(16)}
    assert sorted(convert_state_dict(meta)) == sorted(convert_state_dict(state))


# --- checkpoint formats, through the real loading code ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["safetensors", "pt", "hps"])
def test_each_checkpoint_format_loads_through_the_spec(state, tokenizer, images, tmp_path, kind):
    file = save_checkpoint(tmp_path / kind, state, kind, tokenizer)
    # HPS's compressed files hold float16 weights: the oracle runs on the same rounded weights
    weights = {k: v.half().float() for k, v in state.items()} if kind == "hps" else state
    expected = oracle_cosine(weights, tokenizer, images, PROMPTS)
    specs = [f"openclip:{file}"] + ([] if kind == "hps" else [f"openclip:{file.parent}"])  # folders: OpenCLIP's names
    for spec in specs:
        reward = reward_from_spec(spec)
        assert isinstance(reward, OpenCLIPReward) and not isinstance(reward, HPSReward)
        torch.testing.assert_close(reward(images, PROMPTS), expected, rtol=1e-5, atol=1e-5)
    if kind == "hps":
        for spec in (f"hpsv2:{file}", f"hpsv2:{file.parent}"):  # the folder holds the version's file name
            reward = reward_from_spec(spec)
            assert isinstance(reward, HPSReward)
            torch.testing.assert_close(reward(images, PROMPTS), 100 * expected, rtol=1e-4, atol=1e-4)


def test_hps_score_is_100_times_the_cosine_of_normalised_features(state, tokenizer, images, tmp_path):
    """The official scorer: logits_per_image = image_features @ text_features.T of normalised features, its
    diagonal; HPS numbers are quoted as 100 x that."""
    file = save_checkpoint(tmp_path / "hps", {k: v.half().float() for k, v in state.items()}, "hps", tokenizer)
    exact = {k: v.half().float() for k, v in state.items()}
    hps = HPSReward.from_pretrained(file)
    assert hps.name == "hpsv2" and HPSReward.from_pretrained(file, version="hpsv2.1").name == "hpsv2.1"
    ids = tokenizer(PROMPTS, padding="max_length", max_length=16, return_tensors="pt")
    img = F.normalize(openclip_encode_image(exact, normalized_pixels(images), 2), dim=-1)
    txt = F.normalize(openclip_encode_text(exact, ids.input_ids, 1, 3), dim=-1)
    official = torch.diagonal(img @ txt.T)
    score = hps(images, PROMPTS)
    torch.testing.assert_close(score, 100 * official, rtol=1e-4, atol=1e-4)
    assert score.abs().max() > 1.0  # the 100 x scale, not the raw cosine
    cosine = OpenCLIPReward.from_checkpoint(file)(images, PROMPTS)
    torch.testing.assert_close(score, 100 * cosine, rtol=1e-5, atol=1e-5)


# --- transformers format and OpenCLIP format of one model ---------------------------------------------------------


def openclip_state_of(hf_model) -> dict:
    """The inverse of the reference conversion: a CLIPModel's weights in the original CLIP layout."""
    sd = hf_model.state_dict()
    out = {
        "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        "ln_final.bias": sd["text_model.final_layer_norm.bias"],
        "text_projection": sd["text_projection.weight"].T,
        "visual.proj": sd["visual_projection.weight"].T,
        "visual.conv1.weight": sd["vision_model.embeddings.patch_embedding.weight"],
        "visual.class_embedding": sd["vision_model.embeddings.class_embedding"],
        "visual.positional_embedding": sd["vision_model.embeddings.position_embedding.weight"],
        "logit_scale": sd["logit_scale"],
    }
    for ln in ("pre", "post"):
        name = "pre_layrnorm" if ln == "pre" else "post_layernorm"
        for p in ("weight", "bias"):
            out[f"visual.ln_{ln}.{p}"] = sd[f"vision_model.{name}.{p}"]
    for tower, prefix in (("text_model", ""), ("vision_model", "visual.")):
        for i in range(len(getattr(hf_model, tower).encoder.layers)):
            hf, oc = f"{tower}.encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
            for p in ("weight", "bias"):
                out[f"{oc}attn.in_proj_{p}"] = torch.cat([sd[f"{hf}self_attn.{n}_proj.{p}"] for n in "qkv"])
                out[f"{oc}attn.out_proj.{p}"] = sd[f"{hf}self_attn.out_proj.{p}"]
                out[f"{oc}ln_1.{p}"] = sd[f"{hf}layer_norm1.{p}"]
                out[f"{oc}ln_2.{p}"] = sd[f"{hf}layer_norm2.{p}"]
                out[f"{oc}mlp.c_fc.{p}"] = sd[f"{hf}mlp.fc1.{p}"]
                out[f"{oc}mlp.c_proj.{p}"] = sd[f"{hf}mlp.fc2.{p}"]
    return {k: v.contiguous().clone() for k, v in out.items()}


def test_transformers_folder_and_openclip_state_give_the_same_reward(tokenizer, images, tmp_path):
    from safetensors.torch import save_file
    from transformers import CLIPModel

    torch.manual_seed(5)
    hf = CLIPModel(tiny_hf_config(TINY, len(tokenizer), tokenizer, "gelu")).eval()
    hf.save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "hf")
    (tmp_path / "oc").mkdir()
    tokenizer.save_pretrained(tmp_path / "oc")
    save_file(openclip_state_of(hf), tmp_path / "oc" / "model.safetensors")

    transformers_format = reward_from_spec(f"clip:{tmp_path / 'hf'}")
    openclip_format = reward_from_spec(f"openclip:{tmp_path / 'oc' / 'model.safetensors'}")
    ours = openclip_format.model.state_dict()
    theirs = transformers_format.model.state_dict()
    assert sorted(ours) == sorted(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    a, b = transformers_format(images, PROMPTS), openclip_format(images, PROMPTS)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert a.abs().min() > 1e-3  # real scores, not zeros


def test_bench_eval_clip_builds_openclip_and_hps_specs(state, tokenizer, images, tmp_path):
    """The bench's held-out metric is any reward spec (`_load_reward` -> `reward_from_spec`)."""
    from date_diffusion.bench.runner import _load_reward

    file = save_checkpoint(tmp_path / "st", state, "safetensors", tokenizer)
    metric = _load_reward(f"openclip:{file}", "unused-model", "cpu", "float32")
    torch.testing.assert_close(
        metric(images, PROMPTS), oracle_cosine(state, tokenizer, images, PROMPTS), rtol=1e-5, atol=1e-5
    )
    hps = save_checkpoint(tmp_path / "hps", state, "hps", tokenizer)
    assert isinstance(_load_reward(f"hpsv2.1:{hps}", "unused-model", "cpu", "float32"), HPSReward)


# --- preprocessing and gradients ------------------------------------------------------------------------------


def test_preprocessing_is_shorter_side_resize_and_centre_crop():
    """torchvision's Resize(size) (shorter side to size, longer to int(size * long / short)) then CenterCrop(size)
    (offsets round((h - size) / 2)), bicubic, then OpenAI CLIP's mean/std."""
    pre = ResizeCropNormalizer(20)
    wide = torch.rand(1, 3, 30, 50, generator=torch.Generator().manual_seed(0))
    resized = F.interpolate(wide, size=(20, 33), mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(pre(wide), normalized_pixels(resized[..., :, 6:26]))
    tall = wide.transpose(-1, -2)
    resized = F.interpolate(tall, size=(33, 20), mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(pre(tall), normalized_pixels(resized[..., 6:26, :]))
    square = torch.rand(1, 3, 20, 20)
    torch.testing.assert_close(pre(square), normalized_pixels(square))


def test_hps_preprocessing_resizes_the_longer_side_and_pads_with_black():
    """hpsv2's ResizeMaxSize: longer side to size, other side round(side * size / longer) (Python's round), zero
    padding (black, before normalisation) split as pad // 2 before and the rest after."""
    pre = ResizePadNormalizer(20)
    black = normalized_pixels(torch.zeros(1, 3, 1, 1))
    wide = torch.rand(1, 3, 33, 50, generator=torch.Generator().manual_seed(0))  # 33 * 0.4 = 13.2 -> 13 rows
    resized = F.interpolate(wide, size=(13, 20), mode="bicubic", antialias=True, align_corners=False)
    out = pre(wide)
    torch.testing.assert_close(out[..., 3:16, :], normalized_pixels(resized))
    torch.testing.assert_close(out[..., :3, :], black.expand(1, 3, 3, 20))  # 7 rows of padding: 3 on top,
    torch.testing.assert_close(out[..., 16:, :], black.expand(1, 3, 4, 20))  # 4 at the bottom
    tall = wide.transpose(-1, -2)
    out = pre(tall)
    torch.testing.assert_close(out[..., :, 3:16], normalized_pixels(resized.transpose(-1, -2)))
    torch.testing.assert_close(out[..., :, :3], black.expand(1, 3, 20, 3))
    small = torch.rand(1, 3, 5, 8)  # upscaled: 8 -> 20, 5 -> round(12.5) = 12 (round half to even)
    torch.testing.assert_close(
        pre(small)[..., 4:16, :],
        normalized_pixels(F.interpolate(small, size=(12, 20), mode="bicubic", antialias=True, align_corners=False)),
    )
    edge = torch.rand(1, 3, 14, 20)  # the longer side already 20: only padded, to a square
    torch.testing.assert_close(pre(edge)[..., 3:17, :], normalized_pixels(edge))
    square = torch.rand(1, 3, 20, 20)
    torch.testing.assert_close(pre(square), normalized_pixels(square))


def test_gradients_match_finite_differences(state, tokenizer, tmp_path):
    file = save_checkpoint(tmp_path / "hps", state, "hps", tokenizer)
    reward = HPSReward.from_pretrained(file).double()
    assert all(not p.requires_grad for p in reward.parameters())
    images = torch.rand(1, 3, 12, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    images.requires_grad_(True)  # not square: through the resize and the padding
    assert torch.autograd.gradcheck(lambda x: reward(x, PROMPTS[:1]), (images,), eps=1e-6, atol=1e-6, rtol=1e-4)
    (grad,) = torch.autograd.grad(reward(images, PROMPTS[:1]).sum(), images)
    assert grad.abs().max() > 0


# --- the published architectures, full size, on the meta device ---------------------------------------------------

# Tensor shapes of the published OpenCLIP checkpoints (open_clip/model_configs/ViT-H-14.json, ViT-g-14.json:
# ViT-H-14: vision width 1280, 32 layers, head width 80, patch 14, image 224; ViT-g-14: width 1408, 40 layers,
# head width 88, MLP int(1408 * 4.3637) = 6144; both: text width 1024, 24 layers, 16 heads, context 77, vocabulary
# 49408, embed dim 1024).
PUBLISHED = {
    "ViT-H-14": {
        "visual.conv1.weight": (1280, 3, 14, 14),
        "visual.class_embedding": (1280,),
        "visual.positional_embedding": (257, 1280),
        "visual.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
        "visual.transformer.resblocks.31.mlp.c_fc.weight": (5120, 1280),
        "visual.proj": (1280, 1024),
        "token_embedding.weight": (49408, 1024),
        "positional_embedding": (77, 1024),
        "transformer.resblocks.23.attn.in_proj_weight": (3072, 1024),
        "transformer.resblocks.23.mlp.c_fc.weight": (4096, 1024),
        "text_projection": (1024, 1024),
        "logit_scale": (),
    },
    "ViT-g-14": {
        "visual.conv1.weight": (1408, 3, 14, 14),
        "visual.positional_embedding": (257, 1408),
        "visual.transformer.resblocks.39.attn.in_proj_weight": (4224, 1408),
        "visual.transformer.resblocks.39.mlp.c_fc.weight": (6144, 1408),
        "visual.transformer.resblocks.39.mlp.c_proj.weight": (1408, 6144),
        "visual.proj": (1408, 1024),
        "token_embedding.weight": (49408, 1024),
        "transformer.resblocks.23.mlp.c_fc.weight": (4096, 1024),
        "text_projection": (1024, 1024),
    },
}
LAYERS = {"ViT-H-14": (32, 24), "ViT-g-14": (40, 24)}
# Millions of parameters, image tower and text tower, from OpenCLIP's docs/model_profile.csv.
MPARAMS = {"ViT-H-14": (632.08, 354.03), "ViT-g-14": (1012.65, 354.03)}


@pytest.mark.parametrize("name", ["ViT-H-14", "ViT-g-14"])
def test_full_size_architectures_have_the_published_names_and_shapes(name):
    from transformers import CLIPModel

    arch = ARCHS[name]
    with torch.device("meta"):
        model = CLIPModel(clip_config(arch))
    assert model.config.vision_config.num_attention_heads == 16 == model.config.text_config.num_attention_heads
    assert model.config.vision_config.hidden_act == model.config.text_config.hidden_act == "gelu"
    assert (model.config.vision_config.image_size, model.config.vision_config.patch_size) == (224, 14)
    openclip = openclip_state_of(model)
    vision_layers, text_layers = LAYERS[name]
    assert {k for k in openclip if k.startswith("visual.transformer.resblocks.") and k.endswith(".ln_1.weight")} == {
        f"visual.transformer.resblocks.{i}.ln_1.weight" for i in range(vision_layers)
    }
    assert f"transformer.resblocks.{text_layers - 1}.ln_1.weight" in openclip
    assert f"transformer.resblocks.{text_layers}.ln_1.weight" not in openclip
    for key, shape in PUBLISHED[name].items():
        assert tuple(openclip[key].shape) == shape, key
    image = sum(v.numel() for k, v in openclip.items() if k.startswith("visual."))
    text = sum(v.numel() for k, v in openclip.items() if not k.startswith("visual.") and k != "logit_scale")
    assert (round(image / 1e6, 2), round(text / 1e6, 2)) == MPARAMS[name]
    # and back: the shapes alone give the architecture, and the converter fills every parameter of it
    assert arch_from_state_dict(openclip) == arch
    converted = clipmodel_from_openclip(openclip)
    assert {k: tuple(v.shape) for k, v in converted.state_dict().items()} == {
        k: tuple(v.shape) for k, v in model.state_dict().items()
    }


# --- specs and missing checkpoints ------------------------------------------------------------------------------


def test_a_tokenizer_of_another_vocabulary_is_refused(state, tokenizer):
    from transformers import CLIPTokenizer

    empty = CLIPTokenizer(vocab={"<|startoftext|>": 0, "<|endoftext|>": 1}, merges=[])  # as a missing hub id loads
    with pytest.raises(ModelNotFoundError, match=f"2 tokens but the checkpoint's text tower {len(tokenizer)}"):
        OpenCLIPReward.from_state_dict(state, empty)


def test_specs():
    check_spec("hpsv2+0.5*hpsv2.1:/x/HPS_v2.1_compressed.pt+openclip:/x/model.safetensors")
    check_spec("mean(openclip-quickgelu:/x/a.bin;clip-l)")
    with pytest.raises(RewardSpecError, match="needs a checkpoint"):
        check_spec("openclip")


@pytest.mark.parametrize(("spec", "file"), [("hpsv2", "HPS_v2_compressed.pt"), ("hpsv2.1", "HPS_v2.1_compressed.pt")])
def test_missing_checkpoint_offline_is_one_clear_line(spec, file, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotFoundError) as err:
        reward_from_spec(spec)
    message = str(err.value)
    assert "\n" not in message
    assert "xswu/HPSv2" in message and repr(file) in message
    assert f"hf download xswu/HPSv2 {file}" in message


def test_missing_local_checkpoint_names_it(tmp_path):
    missing = tmp_path / "nowhere" / "HPS_v2.pt"
    with pytest.raises(ModelNotFoundError, match="nowhere") as err:
        reward_from_spec(f"hpsv2:{missing}")
    assert "\n" not in str(err.value)
    with pytest.raises(ModelNotFoundError, match="open_clip_model.safetensors"):
        reward_from_spec(f"openclip:{tmp_path}")  # a folder without an OpenCLIP checkpoint


# --- against the official code's recorded outputs (tests/official/, scripts/record_official.py) -----------------


@pytest.fixture(scope="module")
def official():
    from official.ours import load_record

    return load_record(Path(__file__).parent / "official")


@pytest.fixture(scope="module")
def clip_bpe():
    """CLIP's real tokenizer, built from OpenCLIP's BPE file (no download)."""
    from official.ours import clip_tokenizer

    return clip_tokenizer()


def _content(ids: list[int]) -> list[int]:
    return [i for i in ids if i not in (0, 49406, 49407)]


def test_openclip_formats_tokenize_as_open_clip_and_hpsv2(official, clip_bpe):
    from official.inputs import HARD_PROMPTS

    record, _ = official
    assert record["prompts"] == HARD_PROMPTS
    ours = openclip_tokenize(clip_bpe, record["prompts"], 77).tolist()
    assert ours == record["tokens"]["open_clip"]  # every id, padding and the cut long prompt included
    assert ours == record["tokens"]["hpsv2"]
    # without OpenCLIP's cleaning the transformers tokenizer differs on the quotes, entities, ligatures, full-width
    # letters and mojibake (so the match above is not vacuous) ...
    plain = clip_bpe(record["prompts"], padding="max_length", max_length=77, truncation=True).input_ids
    differ = {p for p, a, b in zip(record["prompts"], plain, ours) if _content(a) != _content(b)}
    assert differ == set(HARD_PROMPTS[2:9])
    # ... and cleaning is what makes them equal
    assert openclip_clean("salt &amp;amp; pepper \u201cx\u201d \ufb01sh  \uff21") == 'salt & pepper "x" fish a'


@pytest.mark.parametrize("shape", [(512, 512), (480, 640), (640, 480), (333, 500), (832, 1216), (96, 128)])
def test_hps_preprocessing_is_hpsv2s(official, shape):
    """hpsv2's preprocess_val (light_augmentation=True) on square, landscape, portrait, SDXL-sized and upscaled
    images: the same pixels (to the float16 the record stores)."""
    from official.ours import images01

    record, pixels = official
    image = images01(record)[record["shapes"].index(list(shape))]
    expected = pixels[f"hps/{shape[0]}x{shape[1]}"]
    np.testing.assert_allclose(ResizePadNormalizer(224)(image)[0].numpy(), expected, atol=2e-3, rtol=0)
    if shape[0] != shape[1]:  # a centre crop is far from it
        assert np.abs(ResizeCropNormalizer(224)(image)[0].numpy() - expected).max() > 0.5


@pytest.mark.parametrize("shape", [(512, 512), (480, 640), (96, 128)])
def test_openclip_preprocessing_is_open_clips_up_to_8_bit_resampling(official, shape):
    """open_clip resizes the 8-bit PIL image (PIL's bicubic), this the float image (torch's antialiased bicubic):
    the same crop, the pixels close but not equal."""
    from official.ours import images01

    record, pixels = official
    image = images01(record)[record["shapes"].index(list(shape))]
    expected = pixels[f"openclip/{shape[0]}x{shape[1]}"]
    diff = np.abs(ResizeCropNormalizer(224)(image)[0].numpy() - expected)
    assert diff.mean() < 0.01 and diff.max() < 0.2
    if shape[0] != shape[1]:
        assert np.abs(ResizePadNormalizer(224)(image)[0].numpy() - expected).max() > 0.5


def test_scores_equal_the_official_code(official, clip_bpe, tmp_path):
    """HPSv2 / HPSv2.1 checkpoints (HPS files of float16 weights) equal `hpsv2.img_score.score()` on every image
    shape and prompt; `openclip:` (GELU and QuickGELU) equals open_clip's cosine up to its 8-bit resampling."""
    from official.ours import compare_models

    record, _ = official
    with pytest.warns(UserWarning, match="truncated"):  # the long prompt
        comparisons = {c.name: c for c in compare_models(record, clip_bpe)}
    assert sorted(comparisons) == ["hpsv2", "hpsv2.1", "openclip:tiny", "openclip:tiny-quickgelu"]
    for c in comparisons.values():
        assert c.official.shape == (len(record["prompts"]), len(record["shapes"])) and c.official.std() > 0.05
    assert comparisons["hpsv2"].diff.max() < 1e-5 and comparisons["hpsv2.1"].diff.max() < 1e-5
    assert comparisons["openclip:tiny"].diff.max() < 2e-3
    assert comparisons["openclip:tiny-quickgelu"].diff.max() < 2e-3


def test_the_official_comparison_sees_crops_and_uncleaned_text(official, clip_bpe, tmp_path):
    """The score comparison is not vacuous: HPS with the centre crop it had before, or without OpenCLIP's text
    cleaning, misses hpsv2's score by more than 1e-3 on non-square images and on cleaned prompts."""
    from official.ours import our_cosines, our_reward

    from date_diffusion.rewards.clip import CLIPScoreReward

    record, _ = official
    entry = next(m for m in record["models"] if m["name"] == "hpsv2")
    official_scores = np.asarray(entry["scores"])
    reward = our_reward(entry, clip_bpe, tmp_path)
    assert isinstance(reward, HPSReward) and isinstance(reward.preprocess, ResizePadNormalizer)
    assert reward.tokenize(record["prompts"])["input_ids"].tolist() == record["tokens"]["hpsv2"]
    with pytest.warns(UserWarning, match="truncated"):
        assert np.abs(our_cosines(reward, record) - official_scores).max() < 1e-5
        reward.preprocess = ResizeCropNormalizer(224)
        reward._text_cache.clear()
        cropped = np.abs(our_cosines(reward, record) - official_scores)
        reward.preprocess = ResizePadNormalizer(224)
        reward.tokenize = lambda prompts: CLIPScoreReward.tokenize(reward, prompts)
        reward._text_cache.clear()
        uncleaned = np.abs(our_cosines(reward, record) - official_scores)
    square = [i for i, (h, w) in enumerate(record["shapes"]) if h == w]
    non_square = [i for i, (h, w) in enumerate(record["shapes"]) if h != w]
    assert cropped[:, square].max() < 1e-5 and cropped[:, non_square].max(axis=0).min() > 1e-3
    assert uncleaned[:2].max() < 1e-5 and uncleaned[2:9].max(axis=1).min() > 1e-3


def test_transformers_clip_rewards_keep_the_reference_tokenization(clip_dir):
    """`clip:` (transformers format) follows the paper's reference code: the tokenizer as it is, no OpenCLIP
    cleaning."""
    reward = reward_from_spec(f"clip:{clip_dir}")
    prompts = ["a red cat &amp; a dog"]
    expected = reward.tokenizer(prompts, padding="max_length", max_length=reward.context_length, truncation=True)
    assert reward.tokenize(prompts)["input_ids"].tolist() == expected.input_ids
    cleaned = reward.tokenizer([openclip_clean(prompts[0])], padding="max_length", max_length=reward.context_length)
    assert cleaned.input_ids != expected.input_ids
