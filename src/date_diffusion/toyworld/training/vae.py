"""The toy world's f=8 `AutoencoderKL`: its training, the decoder-only fine-tune, and how well its round trips
keep what the exact evaluator reads."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from date_diffusion.outputs import save_pretrained
from date_diffusion.toyworld import scene
from date_diffusion.toyworld.training.config import TrainConfig
from date_diffusion.toyworld.training.data import images_to_tensor, step_generator, step_rng
from date_diffusion.toyworld.training.runner import Stage, done_marker, finished, mark_done, stage_dir


def vae_config() -> dict:
    return dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        sample_size=scene.IMAGE_SIZE,
        layers_per_block=1,
        block_out_channels=(16, 32, 64, 64),
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )


def reconstruction_loss(rec: torch.Tensor, x: torch.Tensor, halo: int = 0) -> torch.Tensor:
    """L1 + L2 with object pixels weighted 10x: objects are a few percent of the pixels, and their colours and
    edges are what the evaluator reads. The top-left pixel is background (objects never reach the corners).
    `halo` > 0 extends the weight to background pixels within that many pixels of an object: the notches of a
    small cross are background, and filling them in (a cross decoded as a blob) costs little without it."""
    obj = (x - x[:, :, :1, :1]).abs().amax(1, keepdim=True).gt(0.05).float()
    if halo:
        obj = F.max_pool2d(obj, 2 * halo + 1, stride=1, padding=halo)
    weight = 1 + 9 * obj
    return (weight * (rec - x).abs()).mean() + (weight * (rec - x) ** 2).mean()


def train_vae(cfg: TrainConfig):
    from diffusers import AutoencoderKL

    out_dir = stage_dir(cfg, "vae") / "final"
    if done_marker(cfg, "vae").exists():
        return finished(cfg, "vae", lambda: AutoencoderKL.from_pretrained(out_dir).to(cfg.device), (out_dir,))
    torch.manual_seed(cfg.seed + 2000)
    vae = AutoencoderKL(**vae_config()).to(cfg.device)
    stage = Stage(cfg, "vae", vae, cfg.vae_steps, lr=1e-3)

    def loss_fn(step):
        images, _ = scene.sample_batch(step_rng(cfg, "vae", step), cfg.vae_batch)
        x = images_to_tensor(images, cfg.device)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=step_generator(cfg, step))).sample
        return reconstruction_loss(rec, x) + 1e-6 * post.kl().mean()

    stage.run(loss_fn)
    save_pretrained(vae, out_dir)
    mark_done(cfg, "vae", (out_dir,))
    return vae


def finetune_vae_decoder(cfg: TrainConfig, vae):
    """More training for the VAE *decoder* with the encoder frozen: the latents the UNet learns from do not
    change, so this can run beside (or after) the UNet stage and still sharpen every decoded image."""
    from diffusers import AutoencoderKL

    out_dir = stage_dir(cfg, "vae_decoder") / "final"
    if done_marker(cfg, "vae_decoder").exists():
        return finished(cfg, "vae_decoder", lambda: AutoencoderKL.from_pretrained(out_dir).to(cfg.device), (out_dir,))
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    vae.post_quant_conv.requires_grad_(True)
    stage = Stage(cfg, "vae_decoder", vae, cfg.vae_decoder_steps, lr=3e-4)

    def loss_fn(step):
        images, _ = scene.sample_batch(step_rng(cfg, "vae_decoder", step), cfg.vae_batch)
        x = images_to_tensor(images, cfg.device)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
        rec = vae.decode(z).sample
        return reconstruction_loss(rec, x, halo=cfg.vae_decoder_halo)

    stage.run(loss_fn)
    vae.requires_grad_(False)
    save_pretrained(vae, out_dir)
    mark_done(cfg, "vae_decoder", (out_dir,))
    return vae


@torch.no_grad()
def reconstruction_accuracy(vae, per_category: int = 200, seed: int = 778, batch: int = 100) -> dict[str, float]:
    """Share of renders whose VAE round trip (posterior mean, decode) still passes the exact evaluator, per
    category and overall: the ceiling every generated image lives under."""
    from date_diffusion.toyworld.evaluator import evaluate

    rng = np.random.default_rng(seed)
    device = next(vae.parameters()).device
    passed: dict[str, list[bool]] = {}
    for category in ("single", "two_object", "counting", "position", "novel"):
        specs = [scene.sample_spec(rng, category, allow_held_out=category == "novel") for _ in range(per_category)]
        for start in range(0, per_category, batch):
            chunk = specs[start : start + batch]
            x = images_to_tensor(np.stack([scene.render(scene.place(s, rng)) for s in chunk]), device)
            rec = vae.decode(vae.encode(x).latent_dist.mean).sample
            rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
            passed.setdefault(category, []).extend(evaluate(im, s)["pass"] for im, s in zip(rec, chunk))
    out = {k: float(np.mean(v)) for k, v in passed.items()}
    out["all"] = float(np.mean([p for v in passed.values() for p in v]))
    return out
