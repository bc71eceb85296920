"""The configurations real checkpoints ship (tests/real_configs/*.json, each naming its source), applied to the
tests' tiny random-weight components: the scheduler exactly as shipped, and the denoiser settings that change
sampling (FLUX's guidance embedding). Sizes stay tiny; behaviour is the real checkpoint's."""

from __future__ import annotations

import json
import math
from pathlib import Path

import diffusers

HERE = Path(__file__).parent / "real_configs"
# real configuration -> the family whose tiny components carry it
FAMILY = {"sd15": "sd", "sd21": "sd", "sdxl": "sdxl", "sd35m": "sd3", "flux_dev": "flux", "flux_schnell": "flux",
          "pixart_1024": "pixart"}  # fmt: skip
NAMES = sorted(FAMILY)
# families with no real configuration here yet, each with why (no copy of the hub repository's configs was found to
# take one from; configs are never written from memory alone)
UNSOURCED = {
    "pixart-sigma": "no copy of PixArt-alpha/PixArt-Sigma-XL-2-1024-MS's scheduler config was found",
    "flux2": "no copy of black-forest-labs/FLUX.2-dev's scheduler config was found",
    "flux2-klein": "no copy of a black-forest-labs/FLUX.2-klein checkpoint's scheduler config was found",
    "qwen-image": "no copy of Qwen/Qwen-Image's scheduler config was found",
    "z-image": "no copy of Tongyi-MAI/Z-Image-Turbo's scheduler config was found",
    "wan": "no copy of Wan-AI/Wan2.1-T2V-1.3B-Diffusers' scheduler config was found",
    "sana": "no copy of Efficient-Large-Model/Sana_1600M_1024px_diffusers's scheduler config was found",
    "chroma": "no copy of lodestones/Chroma1-HD's scheduler config was found",
    "ltx": "no copy of Lightricks/LTX-Video's scheduler config was found",
}
BEHAVIOUR = ("guidance_embeds",)  # denoiser settings that change what a step computes (sizes stay tiny)


def load(name: str) -> dict:
    """A real configuration; JSON's missing -Infinity is stored as the string "-inf"."""
    config = json.loads((HERE / f"{name}.json").read_text())
    config["scheduler"] = {k: -math.inf if v == "-inf" else v for k, v in config["scheduler"].items()}
    return config


def scheduler(name: str):
    """The scheduler a real checkpoint ships, built from its config file."""
    config = load(name)["scheduler"]
    return getattr(diffusers, config["_class_name"]).from_config(config)


def apply(name: str, components: dict) -> dict:
    """Tiny `components` of the family with the real checkpoint's scheduler and behavioural denoiser settings."""
    import torch

    config = load(name)
    out = {**components, "scheduler": scheduler(name)}
    key = "unet" if "unet" in components else "transformer"
    model = components[key]
    changed = {k: config["denoiser"][k] for k in BEHAVIOUR if k in config["denoiser"] and k in model.config}
    if any(model.config[k] != v for k, v in changed.items()):
        torch.manual_seed(0)
        out[key] = type(model).from_config({**model.config, **changed}).eval()
    return out
