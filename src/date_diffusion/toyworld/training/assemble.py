"""The last stage: the trained models put together as a stock Stable Diffusion pipeline folder (`out/pipeline`),
at the end of a run or from the UNet's latest checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from date_diffusion.outputs import save_pretrained
from date_diffusion.schemas import TRAIN_CHECKPOINT, SchemaError, read_tensors
from date_diffusion.toyworld.training.config import TrainConfig
from date_diffusion.toyworld.training.latents import latent_scaling
from date_diffusion.toyworld.training.runner import done_marker, load_ema_shadow, read_checkpoint, stage_dir
from date_diffusion.toyworld.training.unet import (
    noise_scheduler_config,
    text_encoder_from_clip,
    unet_config,
    write_scaling_factor,
)


def assemble(cfg: TrainConfig, clip, vae, unet, tokenizer, latents: torch.Tensor, unet_step: int):
    """The pipeline folder, its VAE's scaling factor derived from the run's `latents` (the factor the UNet was
    trained with), recorded with `unet_step` in `work/assemble/scaling_factor.json`."""
    from diffusers import DDIMScheduler

    from date_diffusion.families import by_name

    stock_sd = by_name("sd").stock_pipeline()  # the toy world is a Stable Diffusion model

    scaling = latent_scaling(latents)
    write_scaling_factor(cfg, scaling, unet_step)
    vae.register_to_config(scaling_factor=scaling)
    pipe = stock_sd(
        vae=vae.cpu(),
        text_encoder=text_encoder_from_clip(clip.cpu()),
        tokenizer=tokenizer,
        unet=unet.cpu(),
        scheduler=DDIMScheduler.from_config(noise_scheduler_config()),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    save_pretrained(pipe, cfg.out / "pipeline")
    return pipe


def _ema_unet_from_checkpoint(cfg: TrainConfig, cross_attention_dim: int):
    """The UNet stage's latest checkpoint with its EMA weights, and the step it was written at."""
    from diffusers import UNet2DConditionModel

    folder = stage_dir(cfg, "unet")
    if not (folder / "checkpoint.json").exists():
        raise SchemaError(f"{folder}: the UNet has no checkpoint yet; train it: date-diffusion toyworld train --out "
                          f"{cfg.out}")  # fmt: skip
    meta = read_checkpoint(cfg, folder, cfg.unet_steps, ema=True)  # this run's, at a step of it
    unet = UNet2DConditionModel(**unet_config(cross_attention_dim))
    unet.load_state_dict(read_tensors(folder / "model.safetensors", TRAIN_CHECKPOINT.fix))
    shadow = load_ema_shadow(folder)
    params = [p for p in unet.parameters() if p.requires_grad]
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(shadow[i])
    return unet.eval(), meta["step"]


def finalize_from_checkpoint(cfg: TrainConfig) -> None:
    """Assemble the pipeline from the UNet stage's latest checkpoint (its EMA weights), e.g. when a run must
    stop before its last step. Writes what `train_all` writes at the end; records the step used."""
    from transformers import CLIPTokenizer

    from date_diffusion.toyworld.training.clip import train_clip
    from date_diffusion.toyworld.training.latents import encode_latents
    from date_diffusion.toyworld.training.vae import finetune_vae_decoder, train_vae

    cfg.out = Path(cfg.out)
    unfinished = [s for s in ("clip", "vae", "latents", "vae_decoder") if s in cfg.stages and
                  not done_marker(cfg, s).exists()]  # fmt: skip
    if unfinished:  # finalize trains nothing: it assembles the finished stages with the UNet's checkpoint
        raise SchemaError(f"{stage_dir(cfg, unfinished[0])}: the stage {unfinished[0]!r} has not finished; train it "
                          f"first: date-diffusion toyworld train --out {cfg.out}")  # fmt: skip
    # each finished stage read back as a resume reads it: this run's (its run id), as it sealed it
    clip = train_clip(cfg, "clip", small=False, steps=cfg.clip_steps)
    vae = train_vae(cfg)
    latents, _ = encode_latents(cfg, vae)
    if "vae_decoder" in cfg.stages:
        vae = finetune_vae_decoder(cfg, vae)
    unet, step = _ema_unet_from_checkpoint(cfg, clip.config.text_config.hidden_size)
    assemble(cfg, clip, vae, unet, CLIPTokenizer.from_pretrained(cfg.out / "clip"), latents, step)
