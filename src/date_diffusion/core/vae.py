"""The VAE's latent scaling: model latents <-> what a decoder takes (scaling factor, SDXL's / SD3's mean and std,
FLUX's shift), in one place for the reward path, decoding and editing."""

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


def vae_input(latents: torch.Tensor, decoder) -> torch.Tensor:
    """Model latents -> what `decoder.decode` takes (scaling factor, and SDXL's / SD3's mean, std or shift)."""
    cfg = decoder.config
    if stats := latent_stats(cfg, latents):
        mean, std = stats
        return latents * std / cfg.scaling_factor + mean
    return latents / cfg.scaling_factor + (getattr(cfg, "shift_factor", None) or 0.0)


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
        return (vae_latents - mean) * cfg.scaling_factor / std
    return (vae_latents - (getattr(cfg, "shift_factor", None) or 0.0)) * cfg.scaling_factor
