"""What the reward of an update step sees: x0_hat's latents decoded and scored against the texts.

Exact by default (the pipeline's VAE, the raw decode as the reference scores it, not clamped to [0, 1]);
APPROXIMATE with a tiny decoder (`reward_decoder`) or at a reduced resolution (`reward_resolution`: the latents
resized so the decoded image is that many pixels per side). Video latents ([B, C, F, h, w] in the VAE's layout)
give the reward `reward_frames` of each video: the chosen latent frames, each decoded on its own as a one-frame clip
(what a video VAE decodes a clip's first frame as: exact for latent frame 0, approximate for later ones under a
causal VAE), scored as images and averaged per video. In memory-saving mode the memory freed by each part
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


def reward_frame_indices(frames: int | tuple[int, ...], n_frames: int) -> list[int]:
    """The latent frames the reward scores of a video of `n_frames` latent frames: `frames` evenly spaced ones
    (first and last included; all of them where `frames` is at least `n_frames`), or the listed indices."""
    if isinstance(frames, int):
        k = min(frames, n_frames)
        return [0] if k == 1 else [round(i * (n_frames - 1) / (k - 1)) for i in range(k)]
    if max(frames) >= n_frames:
        raise ValueError(f"reward_frames {list(frames)}: this video has {n_frames} latent frames (0 to {n_frames - 1})")
    return list(frames)


class RewardPath:
    """`decode(x0_latents) -> images` and `score(images) -> scores [B]` for one call (`options`: `DATEOptions`);
    `to_vae` turns the model's latent layout into the VAE's (FLUX's packed latents); `vae_decode` (the family
    adapter's) decodes VAE-layout latents to pixels in [-1, 1] (default: `core.vae.vae_input` and `vae.decode`).
    A video's images are `[B, K, 3, H, W]`: K frames per video (`reward_frames`)."""

    def __init__(self, vae, vae_scale_factor: int, options, to_vae=None, vae_decode=None):
        self.vae, self.scale, self.options, self.to_vae = vae, vae_scale_factor, options, to_vae
        self.vae_decode = vae_decode

    def _release(self, tensor) -> None:
        if self.options.gradient_checkpointing and torch.is_grad_enabled():
            release_freed_memory(tensor)

    def decode(self, x0_latents: torch.Tensor) -> torch.Tensor:
        self._release(x0_latents)
        latents = self.to_vae(x0_latents) if self.to_vae else x0_latents
        video = latents.dim() == 5
        if video:  # [B, C, F, h, w] -> the chosen frames, each a one-frame clip: [B * K, C, 1, h, w]
            chosen = reward_frame_indices(self.options.reward_frames, latents.shape[2])
            latents = latents[:, :, chosen].transpose(1, 2).flatten(0, 1).unsqueeze(2)
        if self.options.reward_resolution:
            side = self.options.reward_resolution // self.scale
            flat = latents.flatten(1, 2) if video else latents
            flat = F.interpolate(flat, size=(side, side), mode="bilinear", antialias=True)
            latents = flat.unflatten(1, latents.shape[1:3]) if video else flat
        decoder = self.options.reward_decoder
        if decoder is not None:  # an image decoder: a video's frames as images
            images = decode_for_reward(latents.squeeze(2) if video else latents, decoder)
        elif self.vae_decode is not None:
            images = self.vae_decode(latents)
            images = images.to(torch.promote_types(images.dtype, torch.float32)) / 2 + 0.5
        else:
            images = decode_for_reward(latents, self.vae)
        if video:  # [B * K, 3, (1,) H, W] -> [B, K, 3, H, W]
            images = images[:, :, 0] if images.dim() == 5 else images
            images = images.unflatten(0, (x0_latents.shape[0], len(chosen)))
        return images

    def score(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 5:  # videos: each frame scored against its video's text, the mean per video
            n, k = images.shape[:2]
            texts = [text for text in self.options.texts for _ in range(k)]
            frames = self.options.reward(images.flatten(0, 1), texts)
            if not isinstance(frames, torch.Tensor) or frames.shape != (n * k,):
                shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
                raise ValueError(f"the reward must return one score per image, a tensor [{n * k}]; got {shape}")
            self._release(images)
            return frames.view(n, k).mean(1)
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

    def video_name(self) -> str:
        """`name` for a video: which frames the reward scores, and how they are decoded."""
        frames = self.options.reward_frames
        chosen = f"{frames} evenly spaced latent frames" if isinstance(frames, int) else f"latent frames {list(frames)}"
        return f"{self.name}, {chosen}, each decoded alone (approximate after the first)"
