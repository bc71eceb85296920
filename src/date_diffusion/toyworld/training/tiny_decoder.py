"""The TAESD-style `AutoencoderTiny` distilled from the VAE decoder (the approximate reward-decoding path)."""

from __future__ import annotations

import torch

from date_diffusion.outputs import save_pretrained
from date_diffusion.toyworld.training.config import TrainConfig
from date_diffusion.toyworld.training.data import step_generator, step_rng
from date_diffusion.toyworld.training.runner import Stage, done_marker, finished, mark_done


def tiny_decoder_config() -> dict:
    # TAESD's layout (four decoder blocks, three 2x upsamplings) at toy width; decodes *scaled* latents
    # (scaling_factor 1.0), like the pipeline's own latents, so its tanh input clamp never bites.
    return dict(
        encoder_block_out_channels=(16, 16, 16, 16),
        decoder_block_out_channels=(32, 32, 32, 32),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
        scaling_factor=1.0,
    )


def train_tiny_decoder(cfg: TrainConfig, vae, latents: torch.Tensor, scaling: float):
    """Distil the VAE decoder into a TAESD-style `AutoencoderTiny` (the approximate reward-decoding path).
    Targets are the VAE's own decodes of cached latents, slightly perturbed as x0_hat estimates are."""
    from diffusers import AutoencoderTiny

    out_dir = cfg.out / "tiny-decoder"
    if done_marker(cfg, "tiny_decoder").exists():
        return finished(
            cfg, "tiny_decoder", lambda: AutoencoderTiny.from_pretrained(out_dir).to(cfg.device), (out_dir,)
        )
    torch.manual_seed(cfg.seed + 4000)
    tiny = AutoencoderTiny(**tiny_decoder_config()).to(cfg.device)
    tiny.encoder.requires_grad_(False)  # only the decoder is used
    stage = Stage(cfg, "tiny_decoder", tiny, cfg.tiny_decoder_steps, lr=1e-3)
    vae.requires_grad_(False)

    def loss_fn(step):
        rng = step_rng(cfg, "tiny_decoder", step)
        idx = torch.from_numpy(rng.integers(len(latents), size=cfg.tiny_decoder_batch))
        gen = step_generator(cfg, step)
        z = latents[idx].to(cfg.device) * scaling
        z = z + 0.3 * torch.rand(len(z), 1, 1, 1, generator=gen, device=cfg.device) * torch.randn(
            z.shape, generator=gen, device=cfg.device
        )
        with torch.no_grad():
            target = vae.decode(z / scaling).sample
        pred = tiny.decode(z).sample
        return (pred - target).abs().mean() + ((pred - target) ** 2).mean()

    stage.run(loss_fn)
    save_pretrained(tiny, out_dir)
    mark_done(cfg, "tiny_decoder", (out_dir,))
    return tiny
