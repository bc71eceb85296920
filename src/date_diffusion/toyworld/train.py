"""Compatibility module: toy-world training lives in `date_diffusion.toyworld.training`, one module per stage.

Re-exports the names that documentation and the shipped `toyworld.json` refer to as `toyworld.train.X`.
"""

from date_diffusion.toyworld.training.clip import train_reward_clip
from date_diffusion.toyworld.training.config import TrainConfig
from date_diffusion.toyworld.training.export import export
from date_diffusion.toyworld.training.noise_aware_clip import train_noise_aware_clip
from date_diffusion.toyworld.training.recipe import train_all
from date_diffusion.toyworld.training.vae import reconstruction_accuracy

__all__ = [
    "TrainConfig",
    "export",
    "reconstruction_accuracy",
    "train_all",
    "train_noise_aware_clip",
    "train_reward_clip",
]
