"""Everything the library knows about the shipped toy world, in one place: where its models are, its rewards'
names, its suites, and its exact evaluator as a judge (what it recommends is in its folders' `toyworld.json`).

The registries (families, rewards, model folders' recommendations, the default model) learn about the toy world only
through its plugin (`plugin.py`); the layers above that know it (the benchmark, the command line, the web page) ask
this module (`is_toy_world(model)`, `is_toy_suite(name)`, `judge_for(model)`) instead of comparing paths or testing
names. It imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
PIPELINE = ASSETS / "pipeline"  # the shipped model (Stable Diffusion format); the default --model
NAME = "toy"  # what every command's --model takes for the shipped model (where no folder has that name)
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
