"""LAION aesthetic predictor v2 (an MLP on normalised CLIP ViT-L/14 image features) as a reward."""

from __future__ import annotations

import torch.nn.functional as F

from date_diffusion.rewards.base import Reward
from date_diffusion.rewards.common import ImageNormalizer, PreferenceMLP, clip_features


class AestheticReward(Reward):
    """Predicted aesthetic score (about 1-10); ignores the prompt."""

    name = "aesthetic"

    def __init__(self, clip_model, mlp: PreferenceMLP, antialias: bool = True):
        super().__init__()
        self.clip, self.mlp = clip_model, mlp
        self.preprocess = ImageNormalizer(
            clip_model.config.vision_config.image_size, mode="bicubic", antialias=antialias
        )
        self.freeze()

    @classmethod
    def from_pretrained(cls, mlp=None, clip=None, device=None) -> AestheticReward:
        """`mlp`: folder/hub repo holding sac+logos+ava1-l14-linearMSE.pth, or the file (.pth or .safetensors);
        `clip`: the CLIP ViT-L/14 it was trained on (default openai/clip-vit-large-patch14)."""
        from transformers import CLIPModel

        from date_diffusion.hub import (
            AESTHETIC_FILE,
            AESTHETIC_REPO,
            PAPER_CLIP,
            fetch_file,
            load_component,
            load_state_dict,
        )

        file = fetch_file(mlp or AESTHETIC_REPO, AESTHETIC_FILE)  # the small file first, checked before CLIP loads
        state = load_state_dict(file)
        if not isinstance(state, dict) or set(state) != set(PreferenceMLP(1).state_dict()):
            first = next(iter(state), None) if isinstance(state, dict) else None
            raise ValueError(f"{str(file)!r} holds no aesthetic predictor head (its tensors are not layers.0 ... "
                             f"layers.7; the first is {first!r}): give {AESTHETIC_FILE}")  # fmt: skip
        model = load_component(CLIPModel, clip or PAPER_CLIP)
        head = PreferenceMLP(model.config.projection_dim)
        head.load_state_dict(state, strict=True)
        reward = cls(model.float(), head)
        return reward.to(device) if device is not None else reward

    def forward(self, images, prompts):
        feats = F.normalize(clip_features(self.clip.get_image_features(pixel_values=self.preprocess(images))), dim=-1)
        return self.mlp(feats)
