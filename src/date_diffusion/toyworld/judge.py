"""The toy world's learned judges (`toy-judge`, `toy-judge-na`; toy ImageRewards): a small transformer head over a
frozen toy CLIP, trained on the toy UNet's own generations labelled by the exact evaluator, aspect by aspect.

As ImageReward is a head over BLIP, a judge is a head over one of the toy world's CLIPs (`base_clip`: `toy-clip`, or
`toy-clip-na` for the noise-aware judge): the head reads [CLS] + the CLIP's caption token states + its image patch
states and gives one logit per aspect in `ASPECTS` (`pass`: every aspect holds), plus a learned multiple of the CLIP
score. As a reward a judge returns the `pass` logit. A judge folder is a diffusers model folder (`config.json` +
`diffusion_pytorch_model.safetensors`: the head only); the CLIP it reads is the shipped one its config names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from date_diffusion.rewards.common import ImageNormalizer

ASPECTS = ("pass", "objects", "colors", "count", "position", "size")
MAX_TOKENS = 24  # the toy CLIPs' text length


class ToyJudge(ModelMixin, ConfigMixin):
    """The head: logits [B, len(aspects)] from a CLIP's image and caption token states and its score."""

    @register_to_config
    def __init__(self, base_clip: str = "toy-clip", width: int = 128, layers: int = 2, heads: int = 4,
                 aspects: tuple[str, ...] = ASPECTS):  # fmt: skip
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

        head = ToyJudge.from_pretrained(path, torch_dtype=torch.float32)
        base = world.CLIPS[head.config.base_clip]
        model = cls(head, CLIPModel.from_pretrained(base), CLIPTokenizer.from_pretrained(base))
        return model.to(device) if device is not None else model

    def text(self, prompts: list[str]):
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text]
        if missing:
            device = self.preprocess.mean.device
            tok = self.tokenizer(missing, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                                 return_tensors="pt").to(device)  # fmt: skip
            with torch.no_grad():
                out = self.clip.text_model(**tok)
                pooled = F.normalize(self.clip.text_projection(out.pooler_output), dim=-1)
            self._text.update((p, (out.last_hidden_state[i], tok.attention_mask[i], pooled[i])) for i, p in
                              enumerate(missing))  # fmt: skip
        states, mask, pooled = zip(*(self._text[p] for p in prompts))
        return torch.stack(states), torch.stack(mask), torch.stack(pooled)

    def logits(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        vision = self.clip.vision_model(pixel_values=self.preprocess(images))
        image = F.normalize(self.clip.visual_projection(vision.pooler_output), dim=-1)
        states, mask, text = self.text(prompts)
        return self.head(vision.last_hidden_state, states, mask, (image * text).sum(-1))
