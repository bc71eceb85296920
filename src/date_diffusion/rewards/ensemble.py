"""An ensemble of rewards: the mean of several models, so that no single model's blind spot can be climbed."""

from __future__ import annotations

from date_diffusion.rewards.base import Reward, WeightedReward


class EnsembleReward(WeightedReward):
    """`mean_k reward_k(images, prompts)`: a `WeightedReward` with equal weights `1 / K`."""

    def __init__(self, rewards: list[Reward]):
        if not rewards:
            raise ValueError("EnsembleReward needs at least one reward")
        super().__init__([(1.0 / len(rewards), r) for r in rewards])
        self.name = "mean(" + ";".join(r.name for r in rewards) + ")"
