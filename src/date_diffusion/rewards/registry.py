"""The reward registry: every reward by name, and rewards built from text specs such as `0.5*clip-l+1*imagereward`.

A spec is one term or a `+`-sum of `WEIGHT*TERM`; a term is `NAME` or `NAME:SOURCE` (a folder, file or hub id).
"""

from __future__ import annotations

from collections.abc import Callable


class RewardSpecError(ValueError):
    """A reward spec that names no known reward, or has a malformed weight."""


def _clip(source, device):
    """`clip` alone is the toy world's reward CLIP; `clip:ID_OR_PATH` any CLIP."""
    from date_diffusion.hub import TOY_CLIP
    from date_diffusion.rewards.clip import CLIPScoreReward

    return CLIPScoreReward.from_pretrained(source or TOY_CLIP, device=device)


def _alias(target) -> Callable:
    def build(source, device):
        if source is not None:
            raise RewardSpecError(f"this reward alias takes no source; use clip:{source}")
        return _clip(str(target), device)

    return build


def _pickscore(source, device):
    from date_diffusion.rewards.clip import PickScoreReward

    return PickScoreReward.from_pretrained(source, device=device)


def _imagereward(source, device):
    from date_diffusion.rewards.imagereward import ImageRewardReward

    return ImageRewardReward.from_pretrained(source, device=device)


def _aesthetic(source, device):
    from date_diffusion.rewards.aesthetic import AestheticReward

    return AestheticReward.from_pretrained(source, device=device)


def _registry() -> dict[str, Callable]:
    from date_diffusion.hub import REWARD_ALIASES

    rewards = {name: _alias(target) for name, target in REWARD_ALIASES.items() if name != "clip"}
    rewards.update(clip=_clip, pickscore=_pickscore, imagereward=_imagereward, aesthetic=_aesthetic)
    return rewards


SPEC_HELP = (
    "clip (toy CLIP), clip-l, clip:ID_OR_PATH, pickscore[:ID], imagereward[:DIR], aesthetic[:FILE], "
    "or weighted sums like 0.5*clip-l+1*imagereward"
)


def reward_from_spec(spec: str, device: str = "cpu"):
    """One reward or a `WeightedReward` from a text spec (see the module docstring and `SPEC_HELP`)."""
    from date_diffusion.rewards.base import WeightedReward

    rewards = _registry()
    terms = [t.strip() for t in str(spec).split("+") if t.strip()]
    if not terms:
        raise RewardSpecError(f"empty reward spec {spec!r}; use {SPEC_HELP}")
    weighted = []
    for term in terms:
        weight, star, rest = term.partition("*")
        name = rest if star else term
        try:
            w = float(weight) if star else 1.0
        except ValueError as err:
            raise RewardSpecError(f"bad weight in reward {term!r}: {err}") from err
        kind, colon, source = name.strip().partition(":")
        if kind not in rewards or (colon and not source):
            raise RewardSpecError(f"unknown reward {term!r}; use {SPEC_HELP}")
        weighted.append((w, rewards[kind](source or None, device)))
    return weighted[0][1] if len(weighted) == 1 and weighted[0][0] == 1.0 else WeightedReward(weighted)
