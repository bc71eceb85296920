"""How long each stage of a toy-world training run trains, on what, and where it writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from date_diffusion.schemas import schema_of

STAGES = ("clip", "clip_eval", "vae", "latents", "vae_decoder", "tiny_decoder", "unet", "assemble")


@dataclass
class TrainConfig:
    out: Path
    seed: int = 0
    device: str = "cpu"
    # Sized for one CPU thread in about two hours (see docs/toy-world.md for measured times).
    clip_steps: int = 1000
    clip_eval_steps: int = 600
    clip_batch: int = 64
    vae_steps: int = 2500
    vae_batch: int = 32
    latent_images: int = 50_000
    unet_steps: int = 8000
    unet_batch: int = 64
    tiny_decoder_steps: int = 1200
    tiny_decoder_batch: int = 16
    vae_decoder_steps: int = 1500
    vae_decoder_halo: int = 2  # px of background around objects weighted like objects (see reconstruction_loss)
    unet_stop_at: int | None = None  # stop the UNet early (same LR schedule as the full run), e.g. a time budget
    checkpoint_every: int = 250
    stages: tuple[str, ...] = field(default=STAGES)

    @classmethod
    def smoke(cls, out: Path, seed: int = 0, device: str = "cpu") -> TrainConfig:
        """A few steps of every stage on a few images: proves the recipe runs, not that it learns."""
        return cls(
            out,
            seed,
            device,
            clip_steps=3,
            clip_eval_steps=3,
            clip_batch=8,
            vae_steps=3,
            vae_batch=4,
            latent_images=16,
            unet_steps=3,
            unet_batch=4,
            tiny_decoder_steps=3,
            vae_decoder_steps=3,
            checkpoint_every=2,
        )


# `work/config.json`, as `recipe.train_all` writes it: every field of TrainConfig with its kind, nothing else
TRAIN_CONFIG = schema_of(TrainConfig, "toy-world training settings file",
                         "resume with the settings it names, or give another --out", required=("seed",),
                         closed=True)  # fmt: skip


def trained_config(out) -> TrainConfig:
    """The settings the training folder `out` was trained with (its `work/config.json`, through `TRAIN_CONFIG`), as
    the config that reads its stages back (`toyworld finalize`); a setting an earlier version's file lacks at its
    default."""
    from date_diffusion.schemas import read_json

    settings = read_json(Path(out) / "work" / "config.json", TRAIN_CONFIG)
    return TrainConfig(**{**settings, "out": Path(out), "stages": tuple(settings.get("stages", STAGES))})


# settings a resume may change: where the folder is, the device, how often checkpoints are written, and the UNet's
# early stop (while the UNet has not trained past it)
RESUMABLE = ("out", "device", "checkpoint_every", "unet_stop_at")


def run_id(cfg: TrainConfig) -> str:
    """The fingerprint of what decides a training run's models (its settings but `RESUMABLE`): every checkpoint and
    finished stage records it, so a stage copied from another run (another seed) is told apart on resume."""
    import hashlib
    import json
    from dataclasses import asdict

    decided = {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE}
    return hashlib.sha256(json.dumps(decided, sort_keys=True, default=str).encode()).hexdigest()[:20]
