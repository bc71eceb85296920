"""Shipping a finished run: the completeness check, the VAE quality gate, and the copy (with `toyworld.json`)
into the package or another folder."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from date_diffusion.toyworld import world
from date_diffusion.toyworld.training.config import STAGES, TrainConfig
from date_diffusion.toyworld.training.vae import reconstruction_accuracy

EXPORT_GATE = 0.9  # the shipped world's VAE round trips pass 0.985; a run below 0.9 is not exported
# the folders of a run that are shipped: the package's asset folders (a run is laid out as the assets are)
EXPORTED = tuple(
    p.name for p in (world.PIPELINE, world.CLIPS["toy-clip"], world.CLIPS["toy-clip-eval"], world.TINY_DECODER)
)


def check_complete(run_dir: Path) -> None:
    """A run can be exported only when every stage finished and it is not a `--smoke` run."""
    run_dir = Path(run_dir)
    config = run_dir / "work" / "config.json"
    missing = [s for s in STAGES if s != "assemble" and not (run_dir / "work" / s / "done").exists()]
    if not config.exists() or missing:
        raise ValueError(f"{run_dir} is not a finished `toyworld train` run (unfinished stages: {missing or 'all'})")
    smoke = TrainConfig.smoke(run_dir)
    if json.loads(config.read_text()).get("unet_steps", 0) <= smoke.unet_steps:
        raise ValueError(f"{run_dir} is a --smoke run (a few steps per stage): its models are not usable")


@torch.no_grad()
def quality_gate(run_dir: Path, per_category: int = 40) -> dict:
    """The export gate: VAE round trips of renders must pass the exact evaluator at least `EXPORT_GATE` of the time
    (`reconstruction_accuracy`, a smaller draw); raises ValueError below it."""
    from diffusers import AutoencoderKL

    accuracy = reconstruction_accuracy(AutoencoderKL.from_pretrained(Path(run_dir) / "pipeline" / "vae"), per_category)
    if accuracy["all"] < EXPORT_GATE:
        raise ValueError(
            f"{run_dir} fails the quality gate: VAE round trips pass {accuracy['all']:.1%} of renders "
            f"(at least {EXPORT_GATE:.0%} needed); train longer"
        )
    return accuracy


def _json_or_none(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _copy_models(run_dir: Path, dest: Path, backup: bool) -> None:
    if backup and dest.exists():
        shutil.copytree(dest, dest.with_name(f"{dest.name}.backup-{time.strftime('%Y%m%d-%H%M%S')}"))
    dest.mkdir(parents=True, exist_ok=True)
    for name in EXPORTED:
        shutil.rmtree(dest / name, ignore_errors=True)
        shutil.copytree(run_dir / name, dest / name)


def export(run_dir: Path, dest: Path, recommended: dict, notes: dict | None = None, backup: bool = False) -> None:
    """Copy a finished run's pipeline and CLIPs to `dest` with `toyworld.json`; with `backup`, what `dest` held
    is first moved to `dest.backup-<time>`."""
    run_dir, dest = Path(run_dir), Path(dest)
    check_complete(run_dir)
    gate = quality_gate(run_dir)
    for name in EXPORTED:
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir / name} is missing: finish `toyworld train --out {run_dir}` first")
    _copy_models(run_dir, dest, backup)
    work = run_dir / "work"
    meta = {
        "recommended": recommended,
        "export_quality_gate": gate,
        "suite_version": "v1",
        "training_config": _json_or_none(work / "config.json"),
        "training_timings_s": _json_or_none(work / "timings.json"),
        **(notes or {}),
    }
    (dest / world.PIPELINE.name / world.META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
