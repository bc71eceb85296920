"""The whole recipe: every stage in order, each resumed or skipped if already done, with the times they took."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from date_diffusion.toyworld.training.assemble import assemble
from date_diffusion.toyworld.training.clip import train_clip
from date_diffusion.toyworld.training.config import TrainConfig
from date_diffusion.toyworld.training.latents import encode_latents, latent_scaling
from date_diffusion.toyworld.training.tiny_decoder import train_tiny_decoder
from date_diffusion.toyworld.training.unet import train_unet
from date_diffusion.toyworld.training.vae import finetune_vae_decoder, train_vae


def train_all(cfg: TrainConfig):
    cfg.out = Path(cfg.out)
    (cfg.out / "work").mkdir(parents=True, exist_ok=True)
    (cfg.out / "work" / "config.json").write_text(json.dumps({**asdict(cfg), "out": str(cfg.out)}, indent=1))
    t0 = time.time()
    timings = {}
    from transformers import CLIPTokenizer

    clip = train_clip(cfg, "clip", small=False, steps=cfg.clip_steps)
    timings["clip"] = time.time() - t0
    if "clip_eval" in cfg.stages:
        train_clip(cfg, "clip_eval", small=True, steps=cfg.clip_eval_steps)
        timings["clip_eval"] = time.time() - t0
    tokenizer = CLIPTokenizer.from_pretrained(cfg.out / "clip")
    vae = train_vae(cfg)
    timings["vae"] = time.time() - t0
    latents, captions = encode_latents(cfg, vae)
    timings["latents"] = time.time() - t0
    vae = finetune_vae_decoder(cfg, vae)
    timings["vae_decoder"] = time.time() - t0
    train_tiny_decoder(cfg, vae, latents, latent_scaling(latents))
    timings["tiny_decoder"] = time.time() - t0
    unet = train_unet(cfg, latents, captions, clip, tokenizer)
    timings["unet"] = time.time() - t0
    assemble(cfg, clip, vae, unet, tokenizer)
    timings["total_s"] = time.time() - t0
    (cfg.out / "work" / "timings.json").write_text(json.dumps(timings, indent=1))
    return timings
