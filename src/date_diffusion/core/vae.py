"""The VAE's latent scaling: model latents <-> what a decoder takes (scaling factor, SDXL's / SD3's mean and std,
FLUX's shift), in one place for the reward path, decoding and editing; and the VAE's calls on images, where a
video VAE (Qwen-Image's, Wan's) codes an image as a one-frame video."""

from __future__ import annotations

import torch


def latent_stats(cfg, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A VAE config's per-channel latents mean and std (SDXL-style VAEs) shaped to broadcast over `like`; None when
    the config has none."""
    mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
    if mean is None or std is None:
        return None
    view = (1, len(mean), 1, 1)
    return tuple(torch.tensor(v, device=like.device, dtype=like.dtype).view(view) for v in (mean, std))


def scaling_factor(cfg) -> float:
    """A VAE config's latent scaling factor; 1 where it has none (FLUX.2's VAE: its latents are normalised by the
    pipeline with the VAE's batch-norm statistics, in the family's `to_vae` / `from_vae`; Qwen-Image's VAE: its mean
    and std alone)."""
    return getattr(cfg, "scaling_factor", None) or 1.0


def vae_input(latents: torch.Tensor, decoder) -> torch.Tensor:
    """Model latents -> what `decoder.decode` takes (scaling factor, and SDXL's / SD3's mean, std or shift)."""
    cfg = decoder.config
    if stats := latent_stats(cfg, latents):
        mean, std = stats
        return latents * std / scaling_factor(cfg) + mean
    return latents / scaling_factor(cfg) + (getattr(cfg, "shift_factor", None) or 0.0)


def decode_dtype(vae) -> torch.dtype:
    """The dtype `vae.decode` takes latents in: its post-quant convolution's (as SDXL's stock pipeline reads it after
    upcasting), or the VAE's own where it has none (AutoencoderTiny, ConsistencyDecoderVAE, an AutoencoderKL made with
    `use_post_quant_conv=False`)."""
    conv = getattr(vae, "post_quant_conv", None)
    weight = next(iter(conv.parameters()), None) if isinstance(conv, torch.nn.Module) else None
    return weight.dtype if weight is not None else vae.dtype


def model_latents(vae_latents: torch.Tensor, vae) -> torch.Tensor:
    """VAE latents -> the model's (the inverse of `vae_input`)."""
    cfg = vae.config
    if stats := latent_stats(cfg, vae_latents):
        mean, std = stats
        return (vae_latents - mean) * scaling_factor(cfg) / std
    return (vae_latents - (getattr(cfg, "shift_factor", None) or 0.0)) * scaling_factor(cfg)


def takes_frames(vae) -> bool:
    """Whether `vae` is a video VAE (its config has `temperal_downsample`: Qwen-Image's, Wan's), which codes an image
    as a one-frame video `[B, C, 1, H, W]`."""
    return getattr(vae.config, "temperal_downsample", None) is not None


def decode_image(decoder, latents: torch.Tensor) -> torch.Tensor:
    """`decoder.decode` of `[B, C, h, w]` latents (as `vae_input` makes them) -> images `[B, 3, H, W]`."""
    if takes_frames(decoder):
        return decoder.decode(latents.unsqueeze(2), return_dict=False)[0][:, :, 0]
    return decoder.decode(latents, return_dict=False)[0]


def encode_image(vae, pixels: torch.Tensor) -> torch.Tensor:
    """The mode of `vae.encode` of images `[B, 3, H, W]` -> latents `[B, C, h, w]` (the VAE's scaling not applied)."""
    if takes_frames(vae):
        return vae.encode(pixels.unsqueeze(2)).latent_dist.mode()[:, :, 0]
    return vae.encode(pixels).latent_dist.mode()
