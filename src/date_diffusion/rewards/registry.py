"""The reward registry: every reward by name, and rewards built from text specs such as `0.5*clip-l+1*imagereward`.

A spec is one term or a `+`-sum of `WEIGHT*TERM`; a term is `NAME`, `NAME:SOURCE` (a folder, file or hub id), or a
wrapper around a spec: `augK(SPEC)` (K augmented views), `mean(SPEC;SPEC;...)` (ensemble), `subjects(SPEC)`
(subject-aware). `clip-l` is the paper's CLIP; the toy world's rewards carry toy names (`toy-clip`, `toy-ensemble` =
`mean(toy-clip;toy-clip-s1;toy-clip-m2)`, see `toyworld/world.py`); their earlier names are refused with the new one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from date_diffusion.core.settings import parse_integer
from date_diffusion.toyworld.world import JUDGES  # a light module: names and paths only

# Each builder imports its reward's module when called: the command line imports this registry to build its
# help and check specs, before (or without) importing torch and transformers.


class RewardSpecError(ValueError):
    """A reward spec that names no known reward, or has a malformed weight."""


def _clip(source, device):
    """`clip:ID_OR_PATH`: any CLIP in transformers format."""
    from date_diffusion.rewards.clip import CLIPScoreReward

    return CLIPScoreReward.from_pretrained(source, device=device)


def _alias(target) -> Callable:
    def build(source, device):
        if source is not None:
            raise RewardSpecError(f"this reward alias takes no source; use clip:{source}")
        return _clip(str(target), device)

    return build


def _toy_ensemble(source, device):
    """The toy world's reward CLIPs (never its evaluation CLIP), averaged."""
    from date_diffusion.toyworld import world

    if source is not None:
        raise RewardSpecError("toy-ensemble takes no source; for other models use mean(SPEC;SPEC;...)")
    return _parse("mean(" + ";".join(world.ENSEMBLE) + ")", device, _registry())


def _judge(path) -> Callable:
    def build(source, device):
        from date_diffusion.rewards.judge import JudgeReward

        return JudgeReward.from_pretrained(source or path, device=device)

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


def _openclip(quick_gelu: bool) -> Callable:
    """`openclip:FILE` (LAION's GELU models) and `openclip-quickgelu:FILE` (OpenAI-trained weights): an
    OpenCLIP-format ViT checkpoint (file, folder or hub repo), its architecture read from the weights' shapes."""

    def build(source, device):
        from date_diffusion.rewards.openclip import OpenCLIPReward

        return OpenCLIPReward.from_checkpoint(source, quick_gelu=quick_gelu, device=device)

    return build


def _hps(version: str) -> Callable:
    """`hpsv2[:FILE]`, `hpsv2.1[:FILE]`: HPS checkpoint from a file, a folder or the hub (default xswu/HPSv2)."""

    def build(source, device):
        from date_diffusion.rewards.hps import HPSReward

        return HPSReward.from_pretrained(source, version=version, device=device)

    return build


def _registry() -> dict[str, Callable]:
    from date_diffusion.hub import PAPER_CLIP
    from date_diffusion.toyworld import world

    rewards = {name: _alias(path) for name, path in world.CLIPS.items()}
    rewards.update(clip=_clip, pickscore=_pickscore, imagereward=_imagereward, aesthetic=_aesthetic)
    rewards["clip-l"] = _alias(PAPER_CLIP)
    rewards["toy-ensemble"] = _toy_ensemble
    rewards.update({name: _judge(path) for name, path in JUDGES.items()})
    rewards.update({"openclip": _openclip(False), "openclip-quickgelu": _openclip(True)})
    rewards.update({"hpsv2": _hps("hpsv2"), "hpsv2.1": _hps("hpsv2.1")})
    return rewards


SPEC_HELP = (
    "clip-l (the paper's CLIP ViT-L/14), clip:ID_OR_PATH, pickscore[:ID], imagereward[:DIR], aesthetic[:FILE], "
    "openclip:FILE (an OpenCLIP-format ViT checkpoint; openclip-quickgelu:FILE for OpenAI-trained weights), "
    "hpsv2[:FILE] and hpsv2.1[:FILE] (100 x cosine), "
    "the toy world's toy-clip, toy-clip-s1, toy-clip-m2, toy-clip-na, toy-ensemble (their mean) and its learned "
    "judges toy-judge[:DIR] and toy-judge-na[:DIR], "
    "weighted sums like 0.5*clip-l+1*imagereward, and wrappers "
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
    if m := re.fullmatch(r"aug([0-9]+)", name):
        from date_diffusion.rewards.augment import AugmentedReward

        views = parse_integer(m.group(1))
        if not 1 <= views <= MAX_VIEWS:
            raise RewardSpecError(f"{name}(...) needs 1 to {MAX_VIEWS} views, e.g. aug8(clip-l)")
        return AugmentedReward(_parse(inner, device, rewards), views=views)
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
    _refuse_old_name(kind, source)
    if kind not in rewards or (colon and not source) or "(" in term or ")" in term:
        raise RewardSpecError(f"unknown reward {term!r}; use {SPEC_HELP}")
    if not source and kind in _NEEDS_SOURCE:
        raise RewardSpecError(f"reward {kind!r} needs a checkpoint: {kind}:FILE (a file, folder or hub repo)")
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
        if not math.isfinite(w) or abs(w) > MAX_WEIGHT:
            raise RewardSpecError(
                f"bad weight in reward {term!r}: a finite number up to {MAX_WEIGHT:g} in size, got {w}"
            )
        weighted.append((w, _term((rest if star else term).strip(), device, rewards)))
    return weighted[0][1] if len(weighted) == 1 and weighted[0][0] == 1.0 else WeightedReward(weighted)


_TAKES_SOURCE = (
    "clip",
    "pickscore",
    "imagereward",
    "aesthetic",
    "openclip",
    "openclip-quickgelu",
    "hpsv2",
    "hpsv2.1",
    *JUDGES,
)
_NEEDS_SOURCE = ("openclip", "openclip-quickgelu")
# bounds that keep a spec's cost finite: views of augK(...), wrappers inside each other, a term's weight
MAX_VIEWS, MAX_NESTING, MAX_WEIGHT = 64, 8, 1e6
MAX_TERMS, MAX_SPEC_CHARS = 32, 4096  # rewards scored per image, and a spec's length (each term is a model's run)


def _views(text: str) -> int:
    """The most augmented views any reward inside `text` is scored on (nested `augK(...)` multiply)."""
    stack, most = [1], 1
    for m in re.finditer(r"aug([0-9]+)\(|\(|\)", text):
        if m.group(0) == ")":
            stack.pop() if len(stack) > 1 else None
        else:
            stack.append(stack[-1] * (parse_integer(m.group(1)) if m.group(1) else 1))
            most = max(most, stack[-1])
    return most


def _depths(text: str):
    """The parenthesis depth after each character of `text`."""
    depth = 0
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        yield depth


def _refuse_old_name(kind: str, source: str) -> None:
    """The toy world's rewards had generic names (`clip`, `ensemble`, ...): refused with the new name, so that no
    model is guided by a toy reward under a name that reads like a real one."""
    from date_diffusion.toyworld import world

    if kind == "clip" and not source:
        raise RewardSpecError(
            "'clip' alone names no model: use clip-l (the paper's CLIP ViT-L/14), clip:ID_OR_PATH, or on the toy "
            "world toy-clip (its CLIP, called 'clip' in earlier versions)"
        )
    if kind in world.RENAMED and kind != "clip":
        raise RewardSpecError(f"reward {kind!r} is the toy world's, now called {world.RENAMED[kind]!r}")


def _unbuilt():
    """Stands for a reward in `check_spec`: the spec's structure is checked without loading any model."""
    from date_diffusion.rewards.base import Reward

    class Unbuilt(Reward):
        def forward(self, images, prompts):  # pragma: no cover - never called
            raise NotImplementedError

    return Unbuilt()


def check_spec(spec: str) -> None:
    """Raise `RewardSpecError` for a malformed spec, without loading any model (validate before work starts)."""
    if len(str(spec)) > MAX_SPEC_CHARS:
        raise RewardSpecError(f"reward spec of {len(str(spec)):,} characters; at most {MAX_SPEC_CHARS:,}")
    terms = len(re.findall(r"[A-Za-z][\w.-]*(?=[:;+()]|$)", str(spec)))
    if terms > MAX_TERMS:
        raise RewardSpecError(f"reward {str(spec)[:60]!r}... names {terms} rewards; at most {MAX_TERMS}")
    depth = max(_depths(str(spec)), default=0)
    if depth > MAX_NESTING:
        raise RewardSpecError(f"reward {str(spec)[:60]!r}... nests {depth} wrappers; at most {MAX_NESTING}")
    views = _views(str(spec))
    if views > MAX_VIEWS:
        raise RewardSpecError(
            f"reward {str(spec)[:60]!r} scores {views} augmented views per image; at most {MAX_VIEWS}"
        )
    _parse(spec, None, {name: (lambda source, device: _unbuilt()) for name in _registry()})


def spec_sources(spec: str) -> list[tuple[str, str | None]]:
    """(reward name, source or None) of every term of a spec, wrappers and weighted sums walked by the spec's own
    parser (`mean(clip:/a;0.5*aug8(hpsv2:/b))` -> [('clip', '/a'), ('hpsv2', '/b')]); checked as `check_spec`
    checks, nothing loaded. A caller that must limit what a spec may read (the web page) looks at the sources."""
    check_spec(spec)
    found: list[tuple[str, str | None]] = []

    def recording(name: str) -> Callable:
        def build(source, device):
            found.append((name, source))
            return _unbuilt()

        return build

    _parse(spec, None, {name: recording(name) for name in _registry()})
    return found


def reward_from_spec(spec: str, device: str = "cpu"):
    """One reward, or a combination of rewards, from a text spec (see the module docstring and `SPEC_HELP`)."""
    check_spec(spec)
    return _parse(spec, device, _registry())
