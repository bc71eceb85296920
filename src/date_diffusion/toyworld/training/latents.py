"""The UNet's training set: renders encoded once by the VAE and cached (posterior means and captions)."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from date_diffusion.outputs import save_tensors
from date_diffusion.schemas import loads
from date_diffusion.toyworld import scene
from date_diffusion.toyworld.training.config import TrainConfig
from date_diffusion.toyworld.training.data import images_to_tensor, step_rng
from date_diffusion.toyworld.training.runner import done_marker, finished, mark_done, stage_dir


def latent_scaling(latents: torch.Tensor) -> float:
    """The VAE scaling factor measured from the cached latents: scaled latents have unit standard deviation."""
    return 1.0 / latents.std().item()


def load_latents(path) -> torch.Tensor:
    return load_file(path / "latents.safetensors")["latents"]


def _outputs(path) -> tuple:
    """What the latents stage writes (and seals: `runner.mark_done`)."""
    return (path / "latents.safetensors", path / "captions.json")


def _cached(path):
    """The cached latents and captions, as `encode_latents` wrote them: one caption (text) per latent."""
    latents, captions = load_latents(path), loads((path / "captions.json").read_text())
    if latents.dim() != 4 or not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise ValueError("latents.safetensors holds no [N, C, H, W] latents, or captions.json no list of captions")
    if len(captions) != latents.shape[0]:
        raise ValueError(f"captions.json has {len(captions)} captions for {latents.shape[0]} latents")
    return latents, captions


@torch.no_grad()
def encode_latents(cfg: TrainConfig, vae):
    """Render the UNet's training set once and cache its latents (mean of the posterior) and captions."""
    path = stage_dir(cfg, "latents")
    path.mkdir(parents=True, exist_ok=True)
    if done_marker(cfg, "latents").exists():
        return finished(cfg, "latents", lambda: _cached(path), _outputs(path))
    rng = step_rng(cfg, "latents", 0)
    latents, captions = [], []
    for start in tqdm(range(0, cfg.latent_images, 256), desc="latents"):
        images, caps = scene.sample_batch(rng, min(256, cfg.latent_images - start))
        latents.append(vae.encode(images_to_tensor(images, cfg.device)).latent_dist.mean.cpu())
        captions += caps
    lat = torch.cat(latents)
    save_tensors({"latents": lat.contiguous()}, path / "latents.safetensors")
    (path / "captions.json").write_text(json.dumps(captions))
    mark_done(cfg, "latents", _outputs(path))
    return lat, captions
