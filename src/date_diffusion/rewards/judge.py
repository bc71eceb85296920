"""The toy world's learned judges as rewards (`toy-judge`, `toy-judge-na`): the logit of "every aspect of the caption
holds" from `toyworld.judge`, a toy ImageReward (a head over a frozen toy CLIP) trained on the exact evaluator's
verdicts of the toy UNet's own images. The toy world's plugin loads the judge model and registers the rewards."""

from __future__ import annotations

from date_diffusion.rewards.base import Reward


class JudgeReward(Reward):
    """`judge(images, prompts)`: the `pass` logit (or another aspect's) of a judge model (`toyworld.judge.JudgeModel`:
    `head.config.aspects` names its columns, `logits(images, prompts)` scores them)."""

    name = "toy-judge"

    def __init__(self, model, aspect: str = "pass"):
        super().__init__()
        self.model = model
        self.column = list(model.head.config.aspects).index(aspect)
        self.freeze()

    def forward(self, images, prompts):
        if len(prompts) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts")
        return self.model.logits(images, prompts)[:, self.column]
