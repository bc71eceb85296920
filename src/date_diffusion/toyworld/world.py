"""Everything the library knows about the shipped toy world, in one place: where its models are, what it
recommends, its rewards' names, its suites, and its exact evaluator as a judge.

Other layers ask this module (`is_toy_world(model)`, `recommended(model)`, `is_toy_suite(name)`, `judge_for(model)`)
instead of comparing paths or testing names. It imports nothing heavy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from date_diffusion.schemas import loads

ASSETS = Path(__file__).resolve().parent / "assets"
PIPELINE = ASSETS / "pipeline"  # the shipped model (Stable Diffusion format); the default --model
TINY_DECODER = ASSETS / "tiny-decoder"  # its distilled decoder for the approximate reward path
META_FILE = "toyworld.json"  # written into a pipeline folder by `toyworld export`; marks a toy-world model

# The toy world's CLIPs by reward name. `toy-clip-eval` scores the benchmark's held-out CLIP metric and is never
# a reward by default; `toy-clip-na` was fine-tuned on the toy UNet's x0_hat at every noise level.
CLIPS = {
    "toy-clip": ASSETS / "clip",
    "toy-clip-eval": ASSETS / "clip-eval",
    "toy-clip-s1": ASSETS / "clip-s1",
    "toy-clip-m2": ASSETS / "clip-m2",
    "toy-clip-na": ASSETS / "clip-na",
}
# The learned judges (toy ImageRewards, `toyworld train-judge`): the `pass` logit of a model trained on the toy UNet's
# generations labelled by the exact evaluator; `toy-judge-na` read x0_hat at every fifth step (a value model).
JUDGES = {"toy-judge": ASSETS / "judge", "toy-judge-na": ASSETS / "judge-na"}
ENSEMBLE = ("toy-clip", "toy-clip-s1", "toy-clip-m2")  # `toy-ensemble`: their mean (never the evaluation CLIP)
PLAIN_REWARD = "toy-clip"  # the paper's plain CLIP reward, in the toy world (`--paper-defaults`)
EVAL_CLIP = "toy-clip-eval"
# Names of earlier versions, refused with the new name in the message.
RENAMED = {
    "clip": "toy-clip",
    "clip-eval": "toy-clip-eval",
    "clip-s1": "toy-clip-s1",
    "clip-m2": "toy-clip-m2",
    "clip-na": "toy-clip-na",
    "ensemble": "toy-ensemble",
}


@dataclass(frozen=True)
class SuiteDefaults:
    seeds: int  # seeds per prompt
    seed_base: int  # the first seed


# The toy world's generation suites: the evaluation suite (seeds from 1000, never used for tuning) and the
# validation prompts that settings are chosen on (seeds from 0).
SUITES = {"toy": SuiteDefaults(4, 1000), "toy-validation": SuiteDefaults(4, 0)}


def is_toy_world(model) -> bool:
    """Whether `model` is a toy-world pipeline folder (`toyworld export` writes its `toyworld.json`)."""
    return model is not None and (Path(str(model)) / META_FILE).exists()


def is_toy_suite(name: str) -> bool:
    """Whether a benchmark suite is one of the toy world's generation suites (scored by the exact evaluator)."""
    return name in SUITES


def recommended(model) -> dict:
    """The settings a toy-world model recommends (`toyworld.json`'s `recommended`: sampling and DATE settings and
    the reward); empty for any other model."""
    if not is_toy_world(model):
        return {}
    path = Path(str(model)) / META_FILE
    try:
        meta = loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not readable JSON ({err}): restore it from the toy world's export") from None
    advice = meta.get("recommended", {}) if isinstance(meta, dict) else None
    if not isinstance(advice, dict):
        raise ValueError(f"{path}: 'recommended' must be an object of settings (the file holds "
                         f"{type(meta).__name__}): restore it from the toy world's export")  # fmt: skip
    return advice


def default_reward(model) -> str | None:
    """The plain reward of a toy-world model (the paper's kind of reward, in its world); None for other models."""
    return PLAIN_REWARD if is_toy_world(model) else None


def default_eval_clip(model) -> str | None:
    return EVAL_CLIP if is_toy_world(model) else None


def judge_for(model):
    """For a toy-world model, the exact evaluator as a function `(PIL image or array, prompt) -> verdict`; None for
    any other model."""
    if not is_toy_world(model):
        return None
    import numpy as np

    from date_diffusion.toyworld.evaluator import evaluate_prompt

    return lambda image, prompt: evaluate_prompt(np.asarray(image), prompt)
