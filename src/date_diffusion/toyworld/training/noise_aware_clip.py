"""The noise-aware reward CLIP (`toy-clip-na`): the reward CLIP's image tower fine-tuned on the toy UNet's own
clean-image estimates `x0_hat` at every noise level, as noise-aware CLIPs did for guided diffusion."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from date_diffusion.outputs import save_pretrained
from date_diffusion.rewards.common import ImageNormalizer
from date_diffusion.toyworld import scene
from date_diffusion.toyworld.training.clip import contrastive_loss, tokenize
from date_diffusion.toyworld.training.config import TrainConfig
from date_diffusion.toyworld.training.data import images_to_tensor, step_generator, step_rng
from date_diffusion.toyworld.training.runner import Stage, done_marker, finished, mark_done


def _frozen_pipeline(pipeline_dir: Path, device: str):
    from date_diffusion.families import by_name

    stock_sd = by_name("sd").stock_pipeline()  # the toy world is a Stable Diffusion model

    pipe = stock_sd.from_pretrained(pipeline_dir, safety_checker=None).to(device)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False).eval()
    return pipe


def x0_hat_estimator(pipe, tokenizer, guidance: float, clean_fraction: float, device: str):
    """`estimates(images, captions, gen)`: each render encoded, noised at a random training timestep, denoised by
    the pipeline's UNet with classifier-free guidance and decoded (raw, unclamped, as DATE scores it), in [0, 1];
    `clean_fraction` of them stay the clean render."""
    acp = pipe.scheduler.alphas_cumprod.to(device)
    scaling = pipe.vae.config.scaling_factor

    @torch.no_grad()
    def estimates(images, captions, gen):
        x = images_to_tensor(images, device)
        latents = pipe.vae.encode(x).latent_dist.mean * scaling
        t = torch.randint(0, len(acp), (len(x),), generator=gen, device=device)
        a = acp[t].view(-1, 1, 1, 1)
        noise = torch.randn(latents.shape, generator=gen, device=device)
        xt = a.sqrt() * latents + (1 - a).sqrt() * noise
        cond = pipe.text_encoder(tokenize(tokenizer, captions).input_ids.to(device))[0]
        uncond = pipe.text_encoder(tokenize(tokenizer, [""] * len(x)).input_ids.to(device))[0]
        eps = pipe.unet(torch.cat([xt, xt]), torch.cat([t, t]), encoder_hidden_states=torch.cat([uncond, cond])).sample
        eps_u, eps_c = eps.chunk(2)
        x0 = (xt - (1 - a).sqrt() * (eps_u + guidance * (eps_c - eps_u))) / a.sqrt()
        decoded = (pipe.vae.decode(x0 / scaling).sample + 1) / 2
        clean = torch.rand(len(x), generator=gen, device=device) < clean_fraction
        return torch.where(clean.view(-1, 1, 1, 1), (x + 1) / 2, decoded)

    return estimates


def train_noise_aware_clip(
    out: Path,
    pipeline_dir: Path,
    clip_dir: Path,
    steps: int = 1500,
    batch: int = 32,
    guidance: float = 5.0,
    clean_fraction: float = 0.25,
    seed: int = 4,
    device: str = "cpu",
):
    """Fine-tune the reward CLIP's image tower to judge the model's own clean-image estimates at every noise level
    (as noise-aware CLIPs did for guided diffusion): a render is encoded, noised at a random training timestep,
    denoised by the toy UNet with classifier-free guidance, and the decoded `x0_hat` (raw, unclamped, as DATE
    scores it) is paired with its caption and a hard negative; `clean_fraction` of each batch stays the clean
    render. The text tower stays frozen. Written to `out` like every toy CLIP (CLIPModel + tokenizer)."""
    from transformers import CLIPModel, CLIPTokenizer

    out = Path(out)
    cfg = TrainConfig(out, seed=seed, device=device, checkpoint_every=100)
    if done_marker(cfg, "clip_na").exists():
        return finished(cfg, "clip_na", lambda: CLIPModel.from_pretrained(out).to(device))
    pipe = _frozen_pipeline(pipeline_dir, device)
    model = CLIPModel.from_pretrained(clip_dir).to(device)
    model.text_model.requires_grad_(False)
    model.text_projection.requires_grad_(False)
    tok = CLIPTokenizer.from_pretrained(clip_dir)
    estimates = x0_hat_estimator(pipe, tok, guidance, clean_fraction, device)
    normalize = ImageNormalizer(scene.IMAGE_SIZE).to(device)
    stage = Stage(cfg, "clip_na", model, steps, lr=1e-4)

    def loss_fn(step):
        images, caps, negs = scene.sample_batch(step_rng(cfg, "clip_na", step), batch, with_negatives=True)
        pix = normalize(estimates(images, caps, step_generator(cfg, step)))
        return contrastive_loss(model, tok, pix, caps, negs, device)

    stage.run(loss_fn)
    save_pretrained(model, out)
    save_pretrained(tok, out)
    meta = {
        "from": str(clip_dir),
        "pipeline": str(pipeline_dir),
        "steps": steps,
        "batch": batch,
        "seed": seed,
        "guidance": guidance,
        "clean_fraction": clean_fraction,
    }
    (out / "toyclip.json").write_text(json.dumps(meta, indent=1) + "\n")
    mark_done(cfg, "clip_na")
    return model
