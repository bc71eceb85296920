"""The reward interface: differentiable scores of images for their prompts."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn


class Reward(nn.Module, ABC):
    """`reward(images, prompts) -> scores [B]`.

    images: float NCHW in [0, 1] (not clamped: DATE scores the raw decoded estimate, as the reference does);
    prompts: one string per image. Scores must be differentiable with respect to `images`.
    Rewards are frozen: their parameters never receive gradients.
    """

    name: str = "reward"

    @abstractmethod
    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor: ...

    def freeze(self):
        self.requires_grad_(False)
        return self.eval()


class WeightedReward(Reward):
    """`sum_k weight_k * reward_k`; e.g. the paper's CLIP + ImageReward combination."""

    def __init__(self, rewards: list[tuple[float, Reward]]):
        super().__init__()
        if not rewards:
            raise ValueError("WeightedReward needs at least one (weight, reward) pair")
        self.weights = [float(w) for w, _ in rewards]
        self.rewards = nn.ModuleList([r for _, r in rewards])
        self.name = "+".join(f"{w:g}*{r.name}" for w, r in zip(self.weights, self.rewards))

    def forward(self, images, prompts):
        return sum(w * r(images, prompts) for w, r in zip(self.weights, self.rewards))
