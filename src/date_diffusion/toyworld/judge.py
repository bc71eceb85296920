"""The toy world's learned judges (`toy-judge`, `toy-judge-na`; toy ImageRewards): a small transformer head over a
frozen toy CLIP, trained on the toy UNet's own generations labelled by the exact evaluator, aspect by aspect.

As ImageReward is a head over BLIP, a judge is a head over one of the toy world's CLIPs (`base_clip`: `toy-clip`, or
`toy-clip-na` for the noise-aware judge): the head reads [CLS] + the CLIP's caption token states + its image patch
states and gives one logit per aspect in `ASPECTS` (`pass`: every aspect holds), plus a learned multiple of the CLIP
score. As a reward a judge returns the `pass` logit. A judge folder is a diffusers model folder (`config.json` +
`diffusion_pytorch_model.safetensors`: the head only); the CLIP it reads is the shipped one its config names.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from date_diffusion.rewards.common import ImageNormalizer
from date_diffusion.schemas import read_tensors

ASPECTS = ("pass", "objects", "colors", "count", "position", "size")
MAX_TOKENS = 24  # the toy CLIPs' text length


class ToyJudge(ModelMixin, ConfigMixin):
    """The head: logits [B, len(aspects)] from a CLIP's image and caption token states and its score."""

    @register_to_config
    def __init__(self, base_clip: str = "toy-clip", width: int = 128, layers: int = 2, heads: int = 4,
                 aspects: tuple[str, ...] = ASPECTS, base_clip_files: str | None = None):  # fmt: skip
        """`base_clip_files`: the fingerprint of the CLIP's files the head was trained over
        (`model_folder.fingerprint`), so that a config naming another CLIP is told apart."""
        super().__init__()
        self.kinds = nn.Parameter(torch.randn(3, width) * 0.02)  # [CLS], caption, image
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, len(aspects))
        self.score_weight = nn.Parameter(torch.zeros(len(aspects)))

    def forward(self, image_states, text_states, text_mask, score):
        cls = self.kinds[0].expand(len(image_states), 1, -1)
        x = torch.cat([cls, text_states + self.kinds[1], image_states + self.kinds[2]], 1)
        ones = torch.ones(x.shape[0], 1 + image_states.shape[1], dtype=torch.bool, device=x.device)
        keep = torch.cat([ones[:, :1], text_mask.bool(), ones[:, 1:]], 1)
        x = self.encoder(x, src_key_padding_mask=~keep)
        return self.head(self.norm(x[:, 0])) + score[:, None] * self.score_weight


WEIGHTS = "diffusion_pytorch_model.safetensors"
_FIX = "give a folder `toyworld train-judge` wrote, as it wrote it"


def check_config(path) -> dict:
    """A judge folder's `config.json`, checked before anything is built from it: `ToyJudge`'s parameters only, each of
    its kind (a base CLIP of the toy world, whole numbers in range, a width the heads divide, the aspects each once,
    `pass` first: the reward is its logit), and, where the config records it, the base CLIP's files the same as
    those the head was trained over. ValueError naming the file and the key."""
    import inspect
    import json

    from date_diffusion.core.text import json_spelling
    from date_diffusion.model_folder import fingerprint
    from date_diffusion.schemas import loads
    from date_diffusion.toyworld import world

    file = Path(path) / "config.json"
    if not file.is_file():
        raise ValueError(f"{path} holds no config.json: {_FIX}")
    try:
        config = loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{file} is not readable JSON ({err}); {_FIX}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{file} holds no object of settings; {_FIX}")
    config = {k: v for k, v in config.items() if not k.startswith("_")}  # diffusers' own (`_class_name`, ...)
    defaults = {k: p.default for k, p in inspect.signature(ToyJudge.__init__).parameters.items() if k != "self"}
    known = set(defaults)
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"{file}: unknown keys {unknown}: a judge's config holds {', '.join(sorted(known))}")

    def bad(key, why):
        return ValueError(f"{file}: its {key} {json_spelling(config.get(key))} {why}; {_FIX}")

    config.setdefault("base_clip", "toy-clip")
    if config["base_clip"] not in world.CLIPS:
        raise bad("base_clip", f"is none of the toy world's CLIPs ({', '.join(world.CLIPS)})")
    for key, high in (("width", 4096), ("layers", 64), ("heads", 64)):
        value = config.setdefault(key, defaults[key])
        if type(value) is not int or not 1 <= value <= high:
            raise bad(key, f"is no whole number from 1 to {high}")
    if config["width"] % config["heads"]:
        raise bad("heads", f"does not divide the width {config['width']} (each head reads an equal share)")
    aspects = config.setdefault("aspects", list(ASPECTS))
    if not isinstance(aspects, list) or not aspects or any(a not in ASPECTS for a in aspects):
        raise bad("aspects", f"is no list of the aspects {', '.join(ASPECTS)}")
    if len(set(aspects)) != len(aspects) or aspects[0] != "pass":
        raise bad("aspects", "must list each aspect once, 'pass' first (the reward is its logit)")
    trained_over = config.get("base_clip_files")
    if trained_over is not None and trained_over != fingerprint(world.CLIPS[config["base_clip"]]):
        raise bad("base_clip", "is not the CLIP the head was trained over (base_clip_files differ): a head scores "
                  "the features of its own CLIP only")  # fmt: skip
    return config


class JudgeModel(nn.Module):
    """A judge with its frozen CLIP: `logits(images, prompts)` for images NCHW in [0, 1] (not clamped: DATE scores
    the raw estimate), any size (resized to the CLIP's input). Caption states are cached per prompt."""

    def __init__(self, head: ToyJudge, clip, tokenizer):
        super().__init__()
        self.head, self.clip, self.tokenizer = head, clip.requires_grad_(False).eval(), tokenizer
        self.preprocess = ImageNormalizer(clip.config.vision_config.image_size)
        self._text: dict[str, tuple] = {}

    @classmethod
    def from_pretrained(cls, path, device=None) -> JudgeModel:
        from transformers import CLIPModel, CLIPTokenizer

        from date_diffusion.toyworld import world

        config = check_config(path)
        head = ToyJudge(**config)
        weights = Path(path) / WEIGHTS
        try:
            loaded = head.load_state_dict(read_tensors(weights, _FIX), strict=False)
            parts = [f"{len(keys)} {what} (first: {keys[0]})" for keys, what in (
                (loaded.missing_keys, "tensors the config needs are missing"),
                (loaded.unexpected_keys, "tensors are more than it reads"),
            ) if keys]  # fmt: skip
            why = "; ".join(parts)
        except RuntimeError as err:  # tensors of other shapes than the config's
            why = " ".join(str(err).split())[:300]
        if why:
            raise ValueError(f"{weights}: its tensors do not fit {Path(path) / 'config.json'}: {why}; {_FIX}")
        base = world.CLIPS[config["base_clip"]]
        model = cls(head.float().eval(), CLIPModel.from_pretrained(base), CLIPTokenizer.from_pretrained(base))
        return model.to(device) if device is not None else model

    def text(self, prompts: list[str]):
        device = self.preprocess.mean.device
        for p in dict.fromkeys(prompts):  # each prompt alone, as `CLIPScoreReward.text_features` encodes it: its
            if p in self._text:  # states never depend on which prompts came with it (a resumed run's would)
                continue
            tok = self.tokenizer([p], padding="max_length", max_length=MAX_TOKENS, truncation=True,
                                 return_tensors="pt").to(device)  # fmt: skip
            with torch.no_grad():
                out = self.clip.text_model(**tok)
                pooled = F.normalize(self.clip.text_projection(out.pooler_output), dim=-1)
            self._text[p] = (out.last_hidden_state[0], tok.attention_mask[0], pooled[0])
        states, mask, pooled = zip(*(self._text[p] for p in prompts))
        return torch.stack(states), torch.stack(mask), torch.stack(pooled)

    def logits(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        vision = self.clip.vision_model(pixel_values=self.preprocess(images))
        image = F.normalize(self.clip.visual_projection(vision.pooler_output), dim=-1)
        states, mask, text = self.text(prompts)
        return self.head(vision.last_hidden_state, states, mask, (image * text).sum(-1))
