"""The one place that knows model ids and paths, and how loading failures are explained to the user."""

from __future__ import annotations

import os
from pathlib import Path

TOY_ASSETS = Path(__file__).resolve().parent / "toyworld" / "assets"
TOY_PIPELINE = TOY_ASSETS / "pipeline"  # default --model: the toy world's Stable-Diffusion-format pipeline
TOY_CLIP = TOY_ASSETS / "clip"  # default reward
TOY_CLIP_EVAL = TOY_ASSETS / "clip-eval"  # evaluation only, never a reward

# Checkpoints of the paper (need network once, or a local copy).
PAPER_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
PAPER_CLIP = "openai/clip-vit-large-patch14"

# More toy reward CLIPs (other seeds / sizes) for ensembles; never the evaluation CLIP.
TOY_CLIP_S1 = TOY_ASSETS / "clip-s1"
TOY_CLIP_M2 = TOY_ASSETS / "clip-m2"
TOY_CLIP_NA = TOY_ASSETS / "clip-na"  # the reward CLIP fine-tuned on the toy UNet's x0_hat at every noise level
TOY_REWARD_ENSEMBLE = ("clip", "clip-s1", "clip-m2")

REWARD_ALIASES = {
    "clip": TOY_CLIP,
    "clip-eval": TOY_CLIP_EVAL,
    "clip-s1": TOY_CLIP_S1,
    "clip-m2": TOY_CLIP_M2,
    "clip-na": TOY_CLIP_NA,
    "clip-l": PAPER_CLIP,
}

# Tiny decoders for the approximate reward path, per family (TAESD and relatives by madebyollin).
TOY_TINY_DECODER = TOY_ASSETS / "tiny-decoder"
TINY_DECODERS = {
    "StableDiffusionPipeline": "madebyollin/taesd",
    "StableDiffusionXLPipeline": "madebyollin/taesdxl",
    "StableDiffusion3Pipeline": "madebyollin/taesd3",
    "FluxPipeline": "madebyollin/taef1",
    "PixArtAlphaPipeline": "madebyollin/taesd",
}


def is_toy_world(model) -> bool:
    """Whether `model` is a toy-world pipeline folder (`toyworld export` writes its `toyworld.json`)."""
    return (Path(str(model)) / "toyworld.json").exists()


def stock_pipeline_name(class_name: str) -> str:
    """The stock diffusers pipeline class name for a DATE one (`StableDiffusionXLDATEPipeline` ->
    `StableDiffusionXLPipeline`); stock names are returned as they are."""
    return class_name.replace("DATEPipeline", "Pipeline").replace("DATE", "")


def tiny_decoder_for(model, spec: str = "tiny"):
    """An `AutoencoderTiny` for the approximate reward path: `tiny` picks the family's TAESD (the toy world's
    own distilled decoder for the toy model); anything else is a folder or hub id."""
    from diffusers import AutoencoderTiny

    if spec != "tiny":
        return load_component(AutoencoderTiny, spec)
    if is_toy_world(model):
        return load_component(AutoencoderTiny, TOY_TINY_DECODER)
    from diffusers import DiffusionPipeline

    family = stock_pipeline_name(DiffusionPipeline.load_config(str(model))["_class_name"])
    return load_component(AutoencoderTiny, TINY_DECODERS.get(family, "madebyollin/taesd"))


# Preference rewards (need network once, or local copies; see docs/python-api.md).
IMAGEREWARD_REPO = "THUDM/ImageReward"  # files ImageReward.pt, med_config.json
IMAGEREWARD_TOKENIZER = "google-bert/bert-base-uncased"
PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
AESTHETIC_REPO = "camenduru/improved-aesthetic-predictor"  # LAION's sac+logos+ava1-l14-linearMSE.pth
AESTHETIC_FILE = "sac+logos+ava1-l14-linearMSE.pth"


def fetch_file(repo_or_dir, filename: str) -> Path:
    """A file from a local folder, or from the Hugging Face cache / hub (honours HF_HUB_OFFLINE)."""
    local = Path(str(repo_or_dir))
    if local.is_dir():
        if not (local / filename).exists():
            raise ModelNotFoundError(f"{local / filename} not found")
        return local / filename
    if local.is_file():
        return local
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(str(repo_or_dir), filename))
    except Exception as err:  # offline, missing, or no network: one explanation for all
        raise explain_load_error(repo_or_dir, err) from err


def load_state_dict(path: Path) -> dict:
    """Weights from .safetensors, or from a third-party .pt/.pth checkpoint read with weights_only (no code)."""
    import torch

    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def model_defaults(model) -> dict:
    """Sampling defaults a model folder recommends (the toy world ships tuned `guidance_scale`, `rho`,
    `update_every` in `toyworld.json`); empty for any other model, which then gets the paper's defaults."""
    import json

    meta = Path(str(model)) / "toyworld.json"
    return json.loads(meta.read_text()).get("recommended", {}) if meta.exists() else {}


class ModelNotFoundError(OSError):
    pass


def explain_load_error(id_or_path, err: Exception) -> ModelNotFoundError:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
    if Path(str(id_or_path)).exists():
        hint = f"the folder exists but is not a complete checkpoint ({type(err).__name__}: {err})"
    elif str(id_or_path).startswith(("/", ".", "~")):
        hint = "no such folder: check the path"
    else:
        hint = (
            "it is not a local folder and not in the Hugging Face cache"
            + (" (HF_HUB_OFFLINE is set, so nothing is downloaded)" if offline else " and could not be downloaded")
            + f". Fix: on a machine with network run `hf download {id_or_path}` (or save the model with"
            " save_pretrained) and pass the local folder"
        )
    return ModelNotFoundError(f"could not load {str(id_or_path)!r}: {hint}")


def load_component(cls, id_or_path, **kwargs):
    """`cls.from_pretrained(id_or_path)` with an error that says how to fix a missing or offline model."""
    try:
        return cls.from_pretrained(str(id_or_path), **kwargs)
    except (OSError, ValueError) as err:
        raise explain_load_error(id_or_path, err) from err
