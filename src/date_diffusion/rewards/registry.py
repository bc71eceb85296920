"""The reward registry: every reward by name, and rewards built from text specs such as `0.5*clip-l+1*imagereward`.

A spec is one term or a `+`-sum of `WEIGHT*TERM`; a term is `NAME`, `NAME:SOURCE` (a folder, file or hub id), or a
wrapper around a spec: `augK(SPEC)` (K augmented views), `mean(SPEC;SPEC;...)` (ensemble), `subjects(SPEC)`
(subject-aware). `ensemble` is the toy world's reward-CLIP ensemble, `mean(clip;clip-s1;clip-m2)`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from date_diffusion.rewards.base import Reward


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


def _toy_ensemble(source, device):
    """The toy world's reward CLIPs (never its evaluation CLIP), averaged."""
    from date_diffusion.hub import TOY_REWARD_ENSEMBLE

    if source is not None:
        raise RewardSpecError("ensemble takes no source; for other models use mean(SPEC;SPEC;...)")
    return _parse("mean(" + ";".join(TOY_REWARD_ENSEMBLE) + ")", device, _registry())


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
    rewards["ensemble"] = _toy_ensemble
    return rewards


SPEC_HELP = (
    "clip (toy CLIP), clip-l, clip:ID_OR_PATH, pickscore[:ID], imagereward[:DIR], aesthetic[:FILE], "
    "ensemble (the toy reward CLIPs' mean), weighted sums like 0.5*clip-l+1*imagereward, and wrappers "
    "augK(SPEC) (mean over K augmented views), mean(SPEC;SPEC;...) and subjects(SPEC) (subject-aware)"
)


def _split(text: str, sep: str) -> list[str]:
    """`text` split at `sep` outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            raise RewardSpecError(f"unbalanced parentheses in reward {text!r}; use {SPEC_HELP}")
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if depth:
        raise RewardSpecError(f"unbalanced parentheses in reward {text!r}; use {SPEC_HELP}")
    return [*parts, cur]


def _wrapped(name: str, inner: str, device, rewards):
    """`augK(...)`, `mean(...;...)`, `subjects(...)`."""
    if m := re.fullmatch(r"aug(\d+)", name):
        from date_diffusion.rewards.augment import AugmentedReward

        if int(m.group(1)) < 1:
            raise RewardSpecError(f"{name}(...) needs at least one view, e.g. aug8(clip)")
        return AugmentedReward(_parse(inner, device, rewards), views=int(m.group(1)))
    if name == "mean":
        from date_diffusion.rewards.ensemble import EnsembleReward

        return EnsembleReward([_parse(part, device, rewards) for part in _split(inner, ";")])
    if name == "subjects":
        from date_diffusion.rewards.subjects import SubjectReward

        return SubjectReward(_parse(inner, device, rewards))
    raise RewardSpecError(f"unknown reward wrapper {name!r}; use {SPEC_HELP}")


def _term(term: str, device, rewards):
    """One `NAME`, `NAME:SOURCE` or `WRAPPER(...)`."""
    if m := re.fullmatch(r"([A-Za-z0-9_-]+)\((.*)\)", term, flags=re.S):
        return _wrapped(m.group(1), m.group(2), device, rewards)
    kind, colon, source = term.partition(":")
    if kind not in rewards or (colon and not source) or "(" in term or ")" in term:
        raise RewardSpecError(f"unknown reward {term!r}; use {SPEC_HELP}")
    if source and kind not in _TAKES_SOURCE:
        raise RewardSpecError(f"reward {kind!r} takes no source ({term!r}); for a model of your own use clip:{source}")
    return rewards[kind](source or None, device)


def _parse(spec: str, device, rewards):
    from date_diffusion.rewards.base import WeightedReward

    terms = [t.strip() for t in _split(str(spec), "+")]
    if not any(terms) or not all(terms):
        raise RewardSpecError(f"empty reward term in {spec!r}; use {SPEC_HELP}")
    weighted = []
    for term in terms:
        weight, star, rest = term.partition("*") if "*" in term.split("(")[0] else ("", "", term)
        try:
            w = float(weight) if star else 1.0
        except ValueError as err:
            raise RewardSpecError(f"bad weight in reward {term!r}: {err}") from err
        weighted.append((w, _term((rest if star else term).strip(), device, rewards)))
    return weighted[0][1] if len(weighted) == 1 and weighted[0][0] == 1.0 else WeightedReward(weighted)


_TAKES_SOURCE = ("clip", "pickscore", "imagereward", "aesthetic")


class _Unbuilt(Reward):
    """Stands for a reward in `check_spec`: the spec's structure is checked without loading any model."""

    def forward(self, images, prompts):  # pragma: no cover - never called
        raise NotImplementedError


def check_spec(spec: str) -> None:
    """Raise `RewardSpecError` for a malformed spec, without loading any model (validate before work starts)."""
    _parse(spec, None, {name: (lambda source, device: _Unbuilt()) for name in _registry()})


def reward_from_spec(spec: str, device: str = "cpu"):
    """One reward, or a combination of rewards, from a text spec (see the module docstring and `SPEC_HELP`)."""
    check_spec(spec)
    return _parse(spec, device, _registry())
