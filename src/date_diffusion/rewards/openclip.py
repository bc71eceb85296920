"""OpenCLIP checkpoints (the original CLIP state-dict layout) as transformers `CLIPModel`s, without `open_clip`.

OpenCLIP (and OpenAI's CLIP) store a ViT CLIP as `visual.conv1.weight`, `visual.class_embedding`,
`visual.positional_embedding`, `visual.ln_pre`, `visual.transformer.resblocks.N.{ln_1, attn.in_proj_*,
attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}`, `visual.ln_post`, `visual.proj`, and the text tower as
`token_embedding.weight`, `positional_embedding`, `transformer.resblocks.N...`, `ln_final`, `text_projection`, plus
`logit_scale`. `convert_state_dict` maps these key by key onto `CLIPModel`'s names, as transformers' own
`convert_clip_original_pytorch_to_hf.py` does (the fused `in_proj` split into q, k, v; the projections
transposed). The architecture is read from the tensor shapes (`arch_from_state_dict`), except two things shapes
cannot tell:

- attention heads. Rule: `width / 64` (OpenCLIP's default `head_width`), except the vision towers of ViT-H
  (width 1280), ViT-g (1408) and ViT-bigG (1664), which have 16 heads (head widths 80, 88 and 104 in OpenCLIP's
  `ViT-H-14.json`, `ViT-g-14.json`, `ViT-bigG-14.json`); text towers have `width / 64` heads in every OpenCLIP
  config (512 -> 8, 768 -> 12, 1024 -> 16, 1280 -> 20). `vision_heads` / `text_heads` override it.
- the activation. OpenCLIP's `nn.GELU` (exact erf GELU, transformers' `"gelu"`) for LAION-trained models (the
  default); OpenAI-trained weights and OpenCLIP's `*-quickgelu` models use QuickGELU (`quick_gelu=True`).

Only ViT towers with OpenCLIP's standard blocks are accepted; any other key (ResNet `attnpool`, timm or HF text
towers, layer scale, SigLIP's `logit_bias`) is refused by name rather than silently dropped.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from date_diffusion.rewards.clip import CLIPScoreReward
from date_diffusion.rewards.common import CLIP_MEAN, CLIP_STD, ImageNormalizer

# OpenCLIP's LAION models use OpenAI's mean and std (open_clip/constants.py OPENAI_DATASET_MEAN/STD).
OPENCLIP_MEAN, OPENCLIP_STD = CLIP_MEAN, CLIP_STD
# Vision widths whose OpenCLIP configs set a head width other than 64: width -> heads.
_VISION_HEADS = {1280: 16, 1408: 16, 1664: 16}
# Keys some checkpoints carry that are not weights (OpenAI's JIT metadata, an attention-mask buffer).
_IGNORED = re.compile(r"^(input_resolution|context_length|vocab_size)$|(^|\.)attn_mask$")
# Prefixes of wrapped checkpoints (DDP's `module.`, a training wrapper's `model.`), removed before converting.
_PREFIXES = ("module.", "model.", "_orig_mod.")


class OpenCLIPFormatError(ValueError):
    """A state dict that is not an OpenCLIP ViT CLIP in the original layout."""


@dataclass(frozen=True)
class OpenCLIPArch:
    """The sizes of an OpenCLIP ViT CLIP."""

    embed_dim: int
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    vision_mlp: int
    context_length: int
    vocab_size: int
    text_width: int
    text_layers: int
    text_heads: int
    text_mlp: int
    hidden_act: str = "gelu"


def default_heads(width: int, vision: bool) -> int:
    """The attention heads of an OpenCLIP tower of `width` (see the module docstring)."""
    if vision and width in _VISION_HEADS:
        return _VISION_HEADS[width]
    if width % 64:
        raise OpenCLIPFormatError(f"width {width} is not a multiple of 64: pass the number of attention heads")
    return width // 64


def _arch(embed, image, patch, vw, vl, vmlp, tw, tl, act="gelu") -> OpenCLIPArch:
    return OpenCLIPArch(
        embed, image, patch, vw, vl, default_heads(vw, vision=True), vmlp, 77, 49408, tw, tl, tw // 64, 4 * tw, act
    )


# The published architectures (open_clip/model_configs/*.json; MLP width = int(width * mlp_ratio), ratio 4
# except ViT-g-14's 4.3637).
ARCHS = {
    "ViT-B-32": _arch(512, 224, 32, 768, 12, 3072, 512, 12),
    "ViT-L-14": _arch(768, 224, 14, 1024, 24, 4096, 768, 12),
    "ViT-H-14": _arch(1024, 224, 14, 1280, 32, 5120, 1024, 24),
    "ViT-g-14": _arch(1024, 224, 14, 1408, 40, 6144, 1024, 24),
}


def strip_prefix(state: dict) -> dict:
    """`state` without a wrapper prefix shared by all its keys (`module.`, `model.`, `_orig_mod.`, repeatedly)."""
    while state:
        prefix = next((p for p in _PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _layers(state: dict, tower: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(rf"^{tower}transformer\.resblocks\.(\d+)\.", k))}
    if not found or found != set(range(len(found))):
        raise OpenCLIPFormatError(f"no consecutive {tower or 'text '}transformer.resblocks.N in the checkpoint")
    return len(found)


def arch_from_state_dict(
    state: dict, quick_gelu: bool = False, vision_heads: int | None = None, text_heads: int | None = None
) -> OpenCLIPArch:
    """The architecture of an OpenCLIP ViT state dict, from its tensor shapes (heads and activation: see above)."""
    state = strip_prefix(state)
    needed = ("visual.conv1.weight", "visual.positional_embedding", "visual.proj", "token_embedding.weight")
    missing = [k for k in needed if k not in state]
    if missing:
        raise OpenCLIPFormatError(f"not an OpenCLIP ViT checkpoint in the original CLIP layout: no {missing}")
    vision_width, _, patch, _ = state["visual.conv1.weight"].shape
    grid = math.isqrt(state["visual.positional_embedding"].shape[0] - 1)
    context_length, text_width = state["positional_embedding"].shape
    return OpenCLIPArch(
        embed_dim=state["visual.proj"].shape[1],
        image_size=grid * patch,
        patch_size=patch,
        vision_width=vision_width,
        vision_layers=_layers(state, "visual."),
        vision_heads=vision_heads or default_heads(vision_width, vision=True),
        vision_mlp=state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        context_length=context_length,
        vocab_size=state["token_embedding.weight"].shape[0],
        text_width=text_width,
        text_layers=_layers(state, ""),
        text_heads=text_heads or default_heads(text_width, vision=False),
        text_mlp=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        hidden_act="quick_gelu" if quick_gelu else "gelu",
    )


def clip_config(arch: OpenCLIPArch, bos_token_id: int = 49406, eos_token_id: int = 49407, pad_token_id: int = 0):
    """transformers' `CLIPConfig` for `arch`; the token ids are the tokenizer's (the text tower pools at the first
    `eos_token_id`, which for CLIP's vocabulary is OpenCLIP's `argmax` of the token ids: `<|endoftext|>` is the
    largest id)."""
    from transformers import CLIPConfig

    text = dict(
        vocab_size=arch.vocab_size,
        hidden_size=arch.text_width,
        intermediate_size=arch.text_mlp,
        num_hidden_layers=arch.text_layers,
        num_attention_heads=arch.text_heads,
        max_position_embeddings=arch.context_length,
        hidden_act=arch.hidden_act,
        layer_norm_eps=1e-5,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        projection_dim=arch.embed_dim,
    )
    vision = dict(
        hidden_size=arch.vision_width,
        intermediate_size=arch.vision_mlp,
        num_hidden_layers=arch.vision_layers,
        num_attention_heads=arch.vision_heads,
        image_size=arch.image_size,
        patch_size=arch.patch_size,
        hidden_act=arch.hidden_act,
        layer_norm_eps=1e-5,
        projection_dim=arch.embed_dim,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=arch.embed_dim)


_BLOCK = {  # OpenCLIP residual block -> CLIPEncoderLayer (transformers' copy_layer)
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
    "attn.out_proj": "self_attn.out_proj",
}
_TOP = {  # (transformers' copy_encoder, copy_text_model_and_projection, copy_vison_model_and_projection)
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "logit_scale": "logit_scale",
}
_TRANSPOSED = {"text_projection": "text_projection.weight", "visual.proj": "visual_projection.weight"}


def convert_state_dict(state: dict) -> dict:
    """An OpenCLIP ViT state dict in `CLIPModel`'s names and layouts (every key used; unknown keys refused)."""
    out = {}
    for key, value in strip_prefix(state).items():
        if _IGNORED.search(key):
            continue
        if key in _TOP:
            out[_TOP[key]] = value
        elif key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = value.T.contiguous()
        elif m := re.fullmatch(r"(visual\.)?transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)", key):
            tower = "vision_model" if m.group(1) else "text_model"
            base = f"{tower}.encoder.layers.{m.group(2)}."
            part, kind = m.group(3), m.group(4)
            if part in _BLOCK:
                out[base + _BLOCK[part] + "." + kind] = value
            else:
                raise OpenCLIPFormatError(f"unexpected OpenCLIP key {key!r} (not a standard ViT block)")
        elif m := re.fullmatch(r"(visual\.)?transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)", key):
            tower = "vision_model" if m.group(1) else "text_model"
            base = f"{tower}.encoder.layers.{m.group(2)}.self_attn."
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{base}{name}.{m.group(3)}"] = chunk.contiguous()
        else:
            raise OpenCLIPFormatError(
                f"unexpected OpenCLIP key {key!r}: only ViT CLIPs in the original layout are supported"
            )
    return out


def _restore_position_ids(model) -> None:
    """Non-persistent buffers are not in any state dict: rebuild them after a meta-device construction."""
    for module in model.modules():
        ids = getattr(module, "position_ids", None)
        if isinstance(ids, torch.Tensor) and ids.is_meta:
            module.position_ids = torch.arange(ids.shape[-1]).expand((1, -1))


def clipmodel_from_openclip(
    state: dict,
    quick_gelu: bool = False,
    tokenizer=None,
    vision_heads: int | None = None,
    text_heads: int | None = None,
    dtype=torch.float32,
):
    """A transformers `CLIPModel` holding an OpenCLIP ViT state dict (loaded strictly: every weight, both ways).
    `tokenizer` supplies the special token ids (default CLIP's: bos 49406, eos 49407, pad 0)."""
    from transformers import CLIPModel

    state = strip_prefix(state)
    arch = arch_from_state_dict(state, quick_gelu, vision_heads, text_heads)
    ids = {}
    if tokenizer is not None:
        ids = dict(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    converted = {k: v.to(dtype) for k, v in convert_state_dict(state).items()}
    with torch.device("meta"):  # no random initialisation of a model that is overwritten whole
        model = CLIPModel(clip_config(arch, **ids))
    try:
        model.load_state_dict(converted, strict=True, assign=True)
    except RuntimeError as err:  # shapes or names that do not fit the architecture read from the shapes
        raise OpenCLIPFormatError(f"the OpenCLIP checkpoint does not fit {arch}: {err}") from err
    _restore_position_ids(model)
    model.openclip_arch = asdict(arch)
    return model.eval()


# File names OpenCLIP checkpoints have on the hub (laion/* repos, `open_clip` >= 2.x), in order of preference.
OPENCLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def load_openclip_state(source) -> dict:
    """The state dict of `source`: a .safetensors, .bin, .pt or .pth file (torch files read with
    weights_only=True: no code runs), a folder holding one of `OPENCLIP_FILES`, or a hub repo holding one."""
    from date_diffusion.hub import fetch_named_file, load_state_dict

    path = Path(str(source)).expanduser()
    if path.is_file():
        return _openclip_state(strip_prefix(load_state_dict(path)), path)
    from date_diffusion.hub import ModelNotFoundError

    errors = []
    for name in OPENCLIP_FILES:
        try:
            file = fetch_named_file(source, name)
        except ModelNotFoundError as err:
            errors.append(err)
            continue
        return _openclip_state(strip_prefix(load_state_dict(file)), file)
    raise ModelNotFoundError(f"{errors[0]} (nor {OPENCLIP_FILES[1]!r} there)") from errors[-1]


_OPENCLIP_KEYS = ("token_embedding.weight", "positional_embedding", "text_projection")


def _openclip_state(state: dict, file) -> dict:
    """`state` when it is an OpenCLIP model's (its text tower's embeddings and projection, and a vision tower), read
    before anything else loads (a tokenizer, a base model from the hub); ValueError naming `file` otherwise (a LoRA,
    an embeddings file, another model's weights)."""
    missing = [k for k in _OPENCLIP_KEYS if k not in state]
    if missing or not any(k.startswith("visual.") for k in state):
        first = next(iter(state), None)
        raise ValueError(f"{str(file)!r} holds no OpenCLIP checkpoint (no {', '.join(missing) or 'visual.*'}; its "
                         f"first tensor is {first!r}): give an OpenCLIP model's weights")  # fmt: skip
    return state


def tokenizer_for(checkpoint, default=None):
    """The CLIP tokenizer beside an OpenCLIP checkpoint file (its folder holds tokenizer.json, or vocab.json and
    merges.txt), else
    `default` (a folder or hub id; default `hub.OPENCLIP_TOKENIZER`: CLIP's BPE vocabulary, which OpenCLIP's
    tokenizer uses)."""
    from transformers import CLIPTokenizer

    from date_diffusion.hub import OPENCLIP_TOKENIZER, load_component

    path = Path(str(checkpoint)).expanduser()
    folder = path if path.is_dir() else path.parent
    files = [folder / "tokenizer.json"], [folder / "vocab.json", folder / "merges.txt"]
    if path.exists() and any(all(f.exists() for f in group) for group in files):
        return CLIPTokenizer.from_pretrained(str(folder))
    return load_component(CLIPTokenizer, default or OPENCLIP_TOKENIZER)


def check_tokenizer(tokenizer, vocab_size: int) -> None:
    """A tokenizer whose vocabulary is not the text tower's is refused (token ids past the embedding, or an empty
    tokenizer that a missing hub tokenizer can load as offline)."""
    from date_diffusion.hub import ModelNotFoundError

    if len(tokenizer) != vocab_size:
        name = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
        raise ModelNotFoundError(
            f"tokenizer {name!r} has {len(tokenizer)} tokens but the checkpoint's text tower {vocab_size}: put the "
            f"model's CLIP tokenizer beside the checkpoint (tokenizer.json, or vocab.json + merges.txt), or, offline, "
            f"fetch the default one first (`hf download {name}`)"
        )


def openclip_clean(text: str) -> str:
    """OpenCLIP's text cleaning before BPE (open_clip's `tokenizer.py`, `_clean_lower`; hpsv2's copy the same):
    `ftfy.fix_text` (curly quotes, ligatures, full-width letters, mojibake), HTML entities unescaped twice,
    whitespace runs to one space, stripped, lower case."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


def openclip_token_ids(tokenizer, text: str) -> list[int]:
    """The BPE ids of `text` as OpenCLIP's tokenizer makes them, without start and end of text: cleaned
    (`openclip_clean`), and the tokenizer's own special-token strings read as plain text, as OpenCLIP reads them."""
    return tokenizer(openclip_clean(text), add_special_tokens=False, split_special_tokens=True, verbose=False).input_ids


def openclip_tokenize(tokenizer, texts: list[str], context_length: int) -> torch.Tensor:
    """OpenCLIP's token tensor [len(texts), context_length]: start of text, the ids, end of text, cut to
    `context_length` with end of text kept last, padded with 0 (open_clip's `SimpleTokenizer.__call__`)."""
    rows = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [
            tokenizer.bos_token_id,
            *openclip_token_ids(tokenizer, text)[: context_length - 2],
            tokenizer.eos_token_id,
        ]
        rows[i, : len(ids)] = torch.tensor(ids)
    return rows


class OpenCLIPNormalizer(ImageNormalizer):
    """OpenCLIP's normalisation (its mean and std), bicubic antialiased resizing; subclasses fit other sizes."""

    def __init__(self, size: int, mode: str = "bicubic", antialias: bool = True, mean=OPENCLIP_MEAN, std=OPENCLIP_STD):
        super().__init__(size, mode=mode, antialias=antialias, mean=mean, std=std)


class ResizeCropNormalizer(OpenCLIPNormalizer):
    """OpenCLIP's evaluation transform, differentiable: resize the shorter side to `size` (bicubic), centre crop
    `size` x `size` (torchvision's `Resize(size)` + `CenterCrop(size)` sizes and offsets), normalise. OpenCLIP
    resizes the 8-bit PIL image (PIL's bicubic) where this resizes the float image (torch's antialiased bicubic)."""

    def fit(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(self.size * long / short)
        new = (self.size, new_long) if h <= w else (new_long, self.size)
        images = self.resize(images, new)
        top = int(round((new[0] - self.size) / 2.0))
        left = int(round((new[1] - self.size) / 2.0))
        return images[..., top : top + self.size, left : left + self.size]


class ResizePadNormalizer(OpenCLIPNormalizer):
    """hpsv2's evaluation transform (`image_transform(..., resize_longest_max=True)`, which its scorer and its
    benchmark use), differentiable: resize the LONGER side to `size` (bicubic, antialiased, on the float image as
    hpsv2 does: `ToTensor` comes first), the other to `round(side * size / longer)`, pad with black (0, before
    normalisation) to `size` x `size`, the extra pixel of an odd padding at the bottom / right (open_clip's
    `ResizeMaxSize`, fill 0), normalise. An image whose longer side already is `size` is only padded (hpsv2 leaves
    it unpadded, and its model then fails on the non-square input)."""

    def fit(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        scale = self.size / float(max(h, w))
        new = (round(h * scale), round(w * scale))  # Python's round, as hpsv2
        images = self.resize(images, new)
        pad_h, pad_w = self.size - new[0], self.size - new[1]
        return F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)


class OpenCLIPReward(CLIPScoreReward):
    """CLIP score (raw cosine of the normalised features) with an OpenCLIP-format checkpoint, converted to
    transformers' `CLIPModel`; OpenCLIP's preprocessing (bicubic resize of the shorter side, centre crop, mean/std)
    and OpenCLIP's tokenization (its text cleaning, `openclip_tokenize`)."""

    name = "openclip"
    preprocessing = ResizeCropNormalizer

    def __init__(self, model, tokenizer, antialias: bool = True):
        super().__init__(model, tokenizer, antialias=antialias)
        self.preprocess = self.preprocessing(model.config.vision_config.image_size, antialias=antialias)

    @property
    def context_length(self) -> int:
        """OpenCLIP tokenizes to the text tower's context length (77), whatever the tokenizer's own limit."""
        return self.model.config.text_config.max_position_embeddings

    def token_count(self, prompt: str) -> int:
        return len(openclip_token_ids(self.tokenizer, prompt)) + 2

    def tokenize(self, prompts: list[str]) -> dict:
        return {"input_ids": openclip_tokenize(self.tokenizer, prompts, self.context_length).to(self.device)}

    @classmethod
    def from_state_dict(cls, state: dict, tokenizer, quick_gelu: bool = False, device=None, **kwargs):
        model = clipmodel_from_openclip(state, quick_gelu=quick_gelu, tokenizer=tokenizer, **kwargs)
        check_tokenizer(tokenizer, model.config.text_config.vocab_size)
        reward = cls(model, tokenizer)
        return reward.to(device) if device is not None else reward

    @classmethod
    def from_checkpoint(cls, source, tokenizer=None, quick_gelu: bool = False, device=None, **kwargs):
        """`source`: an OpenCLIP checkpoint file, a folder or hub repo holding one (see `load_openclip_state`);
        `tokenizer`: a `CLIPTokenizer`, a folder or a hub id (default: beside the file, else CLIP's)."""
        state = load_openclip_state(source)
        if tokenizer is None or isinstance(tokenizer, (str, Path)):
            tokenizer = tokenizer_for(source, tokenizer)
        reward = cls.from_state_dict(state, tokenizer, quick_gelu=quick_gelu, device=device, **kwargs)
        reward.source = str(source)
        return reward
