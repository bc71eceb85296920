"""The whole recipe: every stage in order, each resumed or skipped if already done, with the times they took."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from date_diffusion.outputs import not_new_folder
from date_diffusion.schemas import TRAIN_CHECKPOINT, SchemaError, read_json
from date_diffusion.toyworld.training.assemble import assemble
from date_diffusion.toyworld.training.clip import train_clip
from date_diffusion.toyworld.training.config import RESUMABLE, TRAIN_CONFIG, TrainConfig
from date_diffusion.toyworld.training.latents import encode_latents, latent_scaling
from date_diffusion.toyworld.training.runner import stage_dir
from date_diffusion.toyworld.training.tiny_decoder import train_tiny_decoder
from date_diffusion.toyworld.training.unet import train_unet, unet_final_step
from date_diffusion.toyworld.training.vae import finetune_vae_decoder, train_vae


def check_same_run(cfg: TrainConfig, settings: dict) -> None:
    """A folder trained before (its `work/config.json`) is resumed only with the settings it was trained with:
    another seed or step count would finish the run at once, or mix two runs, under the new settings' name.
    `SchemaError` naming the file and each setting that differs."""
    path = cfg.out / "work" / "config.json"
    if not path.exists():
        trained = sorted(p.parent.name for p in (cfg.out / "work").glob("*/checkpoint.json"))
        trained += sorted(p.parent.name for p in (cfg.out / "work").glob("*/done") if p.parent.name not in trained)
        if trained:  # stages of a run whose settings are unknown: resuming would mix them with these
            raise SchemaError(f"{path} is missing, and {cfg.out / 'work'} holds trained stages ({', '.join(trained)}) "
                              "whose settings it recorded: restore it, or give another --out")  # fmt: skip
        foreign = not_new_folder(cfg.out, ("work",), "`toyworld train` (work/config.json)")
        if foreign:  # a bench run, a model, a user's files: training would write beside them
            raise SchemaError(foreign)
        return
    old = read_json(path, TRAIN_CONFIG)
    differ = [f"{k} {json.dumps(old.get(k))} (now {json.dumps(v)})" for k, v in settings.items()
              if k not in RESUMABLE and old.get(k) != v]  # fmt: skip
    if differ:
        raise SchemaError(f"{path}: this folder was trained with other settings: {'; '.join(differ)}; "
                          f"{TRAIN_CONFIG.fix}")  # fmt: skip
    stop = settings["unet_stop_at"]
    trained = stage_dir(cfg, "unet") / "checkpoint.json"
    if stop is not None and trained.exists() and stop != old.get("unet_stop_at"):
        step = read_json(trained, TRAIN_CHECKPOINT)["step"]
        if step > stop:  # the fix named is one the command takes (`cli.toyworld` refuses a stop at the end)
            fix = (f"give --unet-stop-at from {step} to {cfg.unet_steps - 1} (or none)" if step < cfg.unet_steps
                   else "the UNet has finished: leave out --unet-stop-at")  # fmt: skip
            raise SchemaError(f"{path}: the UNet has trained {step} steps, past --unet-stop-at {stop}; {fix}, or give "
                              "another --out")  # fmt: skip


def train_all(cfg: TrainConfig):
    cfg.out = Path(cfg.out)
    settings = json.loads(json.dumps({**asdict(cfg), "out": str(cfg.out)}))  # as the file holds them
    check_same_run(cfg, settings)
    (cfg.out / "work").mkdir(parents=True, exist_ok=True)
    (cfg.out / "work" / "config.json").write_text(json.dumps(settings, indent=1))
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
    assemble(cfg, clip, vae, unet, tokenizer, latents, unet_final_step(cfg))
    timings["total_s"] = time.time() - t0
    (cfg.out / "work" / "timings.json").write_text(json.dumps(timings, indent=1))
    return timings
