"""A subject-aware reward for prompts with several subjects: every subject must be in the image.

Attend-and-Excite evaluates multi-subject prompts by the minimum CLIP score over the subjects' sub-prompts; this
reward turns that idea into a training signal: `(1 - w) * score(prompt) + w * min_s score(subject_s)`, where the
sub-prompts are the prompt split at conjunctions and spatial relations ("a red circle to the left of a blue
square" -> "a red circle", "a blue square"). A prompt with one subject scores `score(prompt)`.
"""

from __future__ import annotations

import re

import torch

from date_diffusion.rewards.base import Reward

CONJUNCTIONS = ("and", "with")
RELATIONS = (
    "to the left of",
    "to the right of",
    "on top of",
    "in front of",
    "next to",
    "above",
    "below",
    "under",
    "behind",
    "beside",
)


def subject_prompts(prompt: str, relations: bool = True) -> list[str]:
    """The sub-prompts of a multi-subject prompt (one per subject), or `[]` for a single subject.
    `relations=False` splits only at "and" / "with" (Attend-and-Excite's evaluation split), not at relations
    or commas."""
    words = CONJUNCTIONS + (RELATIONS if relations else ())
    pattern = r"\s+(?:" + "|".join(re.escape(w) for w in words) + r")\s+"
    if relations:
        pattern = r"\s*,\s*|" + pattern
    parts = [p.strip() for p in re.split(pattern, prompt.strip()) if p and p.strip()]
    return parts if len(parts) > 1 else []


class SubjectReward(Reward):
    """`(1 - weight) * reward(prompt) + weight * min over subjects of reward(sub-prompt)` (see the module)."""

    def __init__(self, reward: Reward, weight: float = 0.5):
        super().__init__()
        if not 0 <= weight <= 1:
            raise ValueError(f"weight must be in [0, 1], got {weight!r}")
        self.reward, self.weight = reward, float(weight)
        self.name = f"subjects({reward.name})"

    def forward(self, images, prompts):
        whole = self.reward(images, prompts)
        owners, texts = [], []
        for b, prompt in enumerate(prompts):
            for part in subject_prompts(prompt):
                owners.append(b)
                texts.append(part)
        if not texts:
            return whole
        owner = torch.tensor(owners, device=images.device)
        part_scores = self.reward(images[owner], texts)
        worst = whole.clone()
        for b in set(owners):
            worst[b] = part_scores[owner == b].min()
        return (1 - self.weight) * whole + self.weight * worst
