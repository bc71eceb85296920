"""CLIP score: cosine similarity of CLIP image and text features (the paper's main reward)."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from date_diffusion.hub import load_component
from date_diffusion.rewards.base import Reward

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _features(output) -> torch.Tensor:
    # transformers < 5 returns the projected features; 5.x returns an output whose pooler_output holds them.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class CLIPScoreReward(Reward):
    """CLIP score of `images` for `prompts` with any transformers `CLIPModel`.

    Images are resized straight to the model's input size (no crop, as the reference) with bilinear
    interpolation, then normalised with CLIP's mean and std. `antialias=False` reproduces the reference code
    exactly; the default antialiases when downsampling. Text features are cached per prompt; prompts longer
    than the text encoder's limit are truncated with a warning.
    """

    name = "clip"

    def __init__(self, model, tokenizer, antialias: bool = True, mean=CLIP_MEAN, std=CLIP_STD):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.antialias = antialias
        self.image_size = model.config.vision_config.image_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self._text_cache: dict[str, torch.Tensor] = {}
        self.freeze()

    @classmethod
    def from_pretrained(cls, id_or_path: str, antialias: bool = True, device=None, **kwargs) -> CLIPScoreReward:
        from transformers import CLIPModel, CLIPTokenizer

        model = load_component(CLIPModel, id_or_path, **kwargs)
        tokenizer = load_component(CLIPTokenizer, id_or_path)
        reward = cls(model.float(), tokenizer, antialias=antialias)
        reward.source = str(id_or_path)
        return reward.to(device) if device is not None else reward

    @property
    def device(self):
        return self.mean.device

    def text_features(self, prompts: list[str]) -> torch.Tensor:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            limit = self.tokenizer.model_max_length
            for p in missing:
                if len(self.tokenizer(p).input_ids) > limit:
                    warnings.warn(f"prompt longer than the reward's text encoder limit ({limit} tokens) is "
                                  f"truncated: {p[:60]!r}...", stacklevel=3)  # fmt: skip
            tokens = self.tokenizer(missing, padding="max_length", max_length=limit, truncation=True,
                                    return_tensors="pt").to(self.device)  # fmt: skip
            with torch.no_grad():
                feats = F.normalize(_features(self.model.get_text_features(**tokens)), dim=-1)
            self._text_cache.update(zip(missing, feats))
        return torch.stack([self._text_cache[p] for p in prompts])

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        size = (self.image_size, self.image_size)
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False,
                                   antialias=self.antialias)  # fmt: skip
        return (images - self.mean) / self.std

    def forward(self, images, prompts):
        if len(prompts) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts")
        # Scored in the reward model's own precision (float32 unless cast), whatever the diffusion model's dtype.
        pixels = self.preprocess(images.to(self.device, self.mean.dtype))
        image = F.normalize(_features(self.model.get_image_features(pixel_values=pixels)), dim=-1)
        return (image * self.text_features(prompts)).sum(-1)
