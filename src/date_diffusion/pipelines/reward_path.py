"""What the reward of an update step sees: x0_hat's latents decoded and scored against the texts.

Exact by default (the pipeline's VAE, the raw decode as the reference scores it, not clamped to [0, 1]);
APPROXIMATE with a tiny decoder (`reward_decoder`) or at a reduced resolution (`reward_resolution`: the latents
resized so the decoded image is that many pixels per side). In memory-saving mode the memory freed by each part
of an update step goes back to the OS before the next (`sampling.checkpointing.release_freed_memory`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from date_diffusion.core.vae import decode_image, vae_input
from date_diffusion.sampling.checkpointing import release_freed_memory


def decode_for_reward(x0_latents: torch.Tensor, decoder) -> torch.Tensor:
    """Images in [0, 1] (not clamped: the reference scores the raw decode), at least float32."""
    image = decode_image(decoder, vae_input(x0_latents.to(decoder.dtype), decoder))
    return image.to(torch.promote_types(image.dtype, torch.float32)) / 2 + 0.5  # half -> float, never lower


class RewardPath:
    """`decode(x0_latents) -> images` and `score(images) -> scores [B]` for one call (`options`: `DATEOptions`);
    `to_vae` turns the model's latent layout into the VAE's (FLUX's packed latents)."""

    def __init__(self, vae, vae_scale_factor: int, options, to_vae=None):
        self.vae, self.scale, self.options, self.to_vae = vae, vae_scale_factor, options, to_vae

    def _release(self, tensor) -> None:
        if self.options.gradient_checkpointing and torch.is_grad_enabled():
            release_freed_memory(tensor)

    def decode(self, x0_latents: torch.Tensor) -> torch.Tensor:
        self._release(x0_latents)
        latents = self.to_vae(x0_latents) if self.to_vae else x0_latents
        if self.options.reward_resolution:
            side = self.options.reward_resolution // self.scale
            latents = F.interpolate(latents, size=(side, side), mode="bilinear", antialias=True)
        return decode_for_reward(latents, self.options.reward_decoder or self.vae)

    def score(self, images: torch.Tensor) -> torch.Tensor:
        scores = self.options.reward(images, self.options.texts)
        if not isinstance(scores, torch.Tensor) or scores.shape != (images.shape[0],):
            shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise ValueError(f"the reward must return one score per image, a tensor [{images.shape[0]}]; got {shape}")
        self._release(images)  # before the backward pass
        return scores

    @property
    def name(self) -> str:
        """What decodes for the reward, as traces record it."""
        decoder, resolution = self.options.reward_decoder, self.options.reward_resolution
        name = "vae" if decoder is None else f"{type(decoder).__name__} (approximate)"
        return name + (f" at {resolution} px (approximate)" if resolution else "")
