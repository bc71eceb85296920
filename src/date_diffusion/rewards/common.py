"""Pieces shared by rewards: CLIP-style image preprocessing and the preference MLP head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ImageNormalizer(nn.Module):
    """Differentiable resize straight to `size` (square images: the same as resize + centre crop), then
    mean/std normalisation."""

    def __init__(self, size: int, mode: str = "bilinear", antialias: bool = True, mean=CLIP_MEAN, std=CLIP_STD):
        super().__init__()
        self.size, self.mode, self.antialias = size, mode, antialias
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        images = images01.to(self.mean.device, self.mean.dtype)
        if tuple(images.shape[-2:]) != (self.size, self.size):
            images = self.fit(images)
        return (images - self.mean) / self.std

    def fit(self, images: torch.Tensor) -> torch.Tensor:
        """Images of another size as `size` x `size` (here: resized straight to it; subclasses crop or pad)."""
        return self.resize(images, (self.size, self.size))

    def resize(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(images.shape[-2:]) == tuple(size):
            return images
        return F.interpolate(images, size=size, mode=self.mode, antialias=self.antialias, align_corners=False)


class PreferenceMLP(nn.Module):
    """The head of the LAION aesthetic predictor and of ImageReward (same layout: `layers.{0,2,4,6,7}`; no
    activations, as both released models)."""

    def __init__(self, input_size: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x):
        return self.layers(x).squeeze(-1)


def clip_features(output) -> torch.Tensor:
    # transformers < 5 returns the projected features; 5.x returns an output whose pooler_output holds them.
    return output if isinstance(output, torch.Tensor) else output.pooler_output
