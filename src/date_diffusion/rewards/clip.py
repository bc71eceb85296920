"""CLIP score (the paper's main reward) and PickScore, which is a CLIP score scaled by the model's logit scale."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPTokenizer

from date_diffusion.hub import PICKSCORE_MODEL, PICKSCORE_PROCESSOR, load_component
from date_diffusion.rewards.base import Reward
from date_diffusion.rewards.common import ImageNormalizer, clip_features


class CLIPScoreReward(Reward):
    """CLIP score of `images` for `prompts` with any transformers `CLIPModel`.

    Images are resized straight to the model's input size (no crop, as the reference) with bilinear
    interpolation, then normalised with CLIP's mean and std. `antialias=False` reproduces the reference code
    exactly; the default antialiases when downsampling. Text features are cached per prompt; prompts longer
    than the text encoder's limit are truncated with a warning.
    """

    name = "clip"
    scale_by_logit_scale = False

    def __init__(self, model, tokenizer, antialias: bool = True):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.preprocess = ImageNormalizer(model.config.vision_config.image_size, antialias=antialias)
        self._text_cache: dict[str, torch.Tensor] = {}
        self.freeze()

    @classmethod
    def from_pretrained(cls, id_or_path, antialias: bool = True, device=None, tokenizer=None, **kwargs):
        """`tokenizer`: where the tokenizer lives when not beside the model (PickScore)."""
        model = load_component(CLIPModel, id_or_path, **kwargs)
        tok = load_component(CLIPTokenizer, tokenizer or id_or_path)
        reward = cls(model.float(), tok, antialias=antialias)
        reward.source = str(id_or_path)
        return reward.to(device) if device is not None else reward

    @property
    def antialias(self) -> bool:
        return self.preprocess.antialias

    @antialias.setter
    def antialias(self, value: bool):
        self.preprocess.antialias = value

    @property
    def device(self):
        return self.preprocess.mean.device

    @property
    def context_length(self) -> int:
        """The most tokens the text encoder reads, start and end of text included."""
        return self.tokenizer.model_max_length

    def token_count(self, prompt: str) -> int:
        """The tokens of `prompt`, start and end of text included."""
        return len(self.tokenizer(prompt, verbose=False).input_ids)

    def tokenize(self, prompts: list[str]) -> dict:
        """The text encoder's inputs for `prompts`, padded and cut to `context_length`."""
        return self.tokenizer(
            prompts, padding="max_length", max_length=self.context_length, truncation=True, return_tensors="pt"
        ).to(self.device)

    def text_features(self, prompts: list[str]) -> torch.Tensor:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            limit = self.context_length
            for p in missing:
                if self.token_count(p) > limit:
                    warnings.warn(
                        f"prompt longer than the reward's text encoder limit ({limit} tokens) is "
                        f"truncated: {p[:60]!r}...",
                        stacklevel=3,
                    )
            with torch.no_grad():  # each prompt alone: its features never depend on which prompts came with it
                # (encoded in a batch, their last digits would: a resumed run, whose cache fills in other batches
                # than an uninterrupted run's, would then score and update an image differently)
                feats = [F.normalize(clip_features(self.model.get_text_features(**self.tokenize([p]))), dim=-1)[0]
                         for p in missing]  # fmt: skip
            self._text_cache.update(zip(missing, feats))
        return torch.stack([self._text_cache[p] for p in prompts])

    def forward(self, images, prompts):
        if len(prompts) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts")
        # Scored in the reward model's own precision (float32 unless cast), whatever the diffusion model's dtype.
        pixels = self.preprocess(images)
        image = F.normalize(clip_features(self.model.get_image_features(pixel_values=pixels)), dim=-1)
        score = (image * self.text_features(prompts)).sum(-1)
        return self.model.logit_scale.exp() * score if self.scale_by_logit_scale else score


class PickScoreReward(CLIPScoreReward):
    """PickScore (Kirstain et al., 2023): a CLIP-H fine-tuned on human preferences; score = logit_scale * cosine."""

    name = "pickscore"
    scale_by_logit_scale = True

    @classmethod
    def from_pretrained(cls, id_or_path=None, antialias: bool = True, device=None, tokenizer=None, **kwargs):
        return super().from_pretrained(
            id_or_path or PICKSCORE_MODEL,
            antialias,
            device,
            tokenizer or (None if id_or_path else PICKSCORE_PROCESSOR),
            **kwargs,
        )
