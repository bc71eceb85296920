"""Each step's data: renders as tensors, and the random generators that give step `k` of a stage the same batch
and noise in a resumed run as in an uninterrupted one."""

from __future__ import annotations

import numpy as np
import torch

from date_diffusion.toyworld.training.config import TrainConfig


def images_to_tensor(images: np.ndarray, device) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1]."""
    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def step_rng(cfg: TrainConfig, stage: str, step: int) -> np.random.Generator:
    """The numpy RNG of `stage`'s step `step` (which renders, captions, indices)."""
    return np.random.default_rng([cfg.seed, sum(map(ord, stage)), step])


def step_generator(cfg: TrainConfig, step: int) -> torch.Generator:
    """The torch generator of step `step` (latent samples, noise, timesteps) on the run's device."""
    return torch.Generator(cfg.device).manual_seed(cfg.seed * 1_000_003 + step)
