"""The toy world's learned judges as rewards (`toy-judge`, `toy-judge-na`): the logit of "every aspect of the caption
holds" from `toyworld.judge.ToyJudge`, a toy ImageReward trained on the exact evaluator's verdicts."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from date_diffusion.rewards.base import Reward


class JudgeReward(Reward):
    """`judge(images, prompts)`: the `pass` logit of a `ToyJudge` (images NCHW in [0, 1], resized to its input size;
    not clamped, as DATE scores the raw estimate). `aspect` picks another of the judge's logits."""

    name = "toy-judge"

    def __init__(self, judge, tokenizer, aspect: str = "pass"):
        super().__init__()
        self.judge, self.tokenizer = judge, tokenizer
        self.column = list(judge.config.aspects).index(aspect)
        self.freeze()

    @classmethod
    def from_pretrained(cls, path, device=None, aspect: str = "pass"):
        from transformers import CLIPTokenizer

        from date_diffusion.toyworld.judge import ToyJudge

        judge = ToyJudge.from_pretrained(path, torch_dtype=torch.float32)
        reward = cls(judge, CLIPTokenizer.from_pretrained(Path(path) / "tokenizer"), aspect)
        reward.source = str(path)
        return reward.to(device) if device is not None else reward

    def forward(self, images, prompts):
        if len(prompts) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts")
        size = self.judge.config.image_size
        weight = self.judge.head.weight
        images = images.to(weight.device, weight.dtype)
        if tuple(images.shape[-2:]) != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        text = self.tokenizer(
            prompts, padding="max_length", max_length=self.judge.config.max_tokens, truncation=True, return_tensors="pt"
        ).to(weight.device)
        return self.judge(images, text.input_ids, text.attention_mask)[:, self.column]
