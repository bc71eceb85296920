"""The `UNet2DConditionModel` on the frozen toy-CLIP text encoder, trained with Stable Diffusion's recipe in
latent space, and the noise schedule it is trained and sampled with."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from date_diffusion.outputs import save_pretrained
from date_diffusion.toyworld import scene
from date_diffusion.toyworld.training.clip import tokenize
from date_diffusion.toyworld.training.config import TrainConfig
from date_diffusion.toyworld.training.data import step_generator, step_rng
from date_diffusion.toyworld.training.latents import latent_scaling
from date_diffusion.toyworld.training.runner import Stage, done_marker, finished, mark_done, read_checkpoint, stage_dir


def unet_config(cross_attention_dim: int) -> dict:
    return dict(
        sample_size=scene.IMAGE_SIZE // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(64, 128, 128),
        attention_head_dim=8,
        cross_attention_dim=cross_attention_dim,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )


def noise_scheduler_config() -> dict:
    # Stable Diffusion's training schedule.
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def text_encoder_from_clip(clip):
    from transformers import CLIPTextModel

    enc = CLIPTextModel(clip.config.text_config)
    enc.load_state_dict(clip.text_model.state_dict())
    return enc.eval().requires_grad_(False)


def unet_final_dir(cfg: TrainConfig) -> Path:
    """Where the finished UNet (or the one `finalize` assembles from a checkpoint) and its scaling factor live."""
    return stage_dir(cfg, "unet") / "final"


def write_scaling_factor(cfg: TrainConfig, scaling: float, unet_step: int) -> None:
    """Record the latent scaling factor the UNet was trained with and the step its weights are from (`assemble`
    writes it beside the pipeline it builds; it is a record, never read back: the factor is derived from the
    latents each time, `latents.latent_scaling`)."""
    path = stage_dir(cfg, "assemble") / "scaling_factor.json"  # beside the sealed UNet, never inside it
    text = json.dumps({"scaling_factor": scaling, "unet_step": unet_step})
    if path.is_file() and path.read_text() == text:
        return  # written before, as it is: a resumed run writes no file of a finished stage again
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def unet_final_step(cfg: TrainConfig) -> int:
    """The step the finished UNet's weights are from: the last, or `--unet-stop-at`."""
    return min(cfg.unet_steps, cfg.unet_stop_at or cfg.unet_steps)


def stopped_before(cfg: TrainConfig) -> bool:
    """Whether the finished UNet stopped (`--unet-stop-at`) before the step `cfg` trains it to: its checkpoint's step
    is below `unet_final_step`."""
    ckpt = stage_dir(cfg, "unet") / "checkpoint.json"
    return ckpt.exists() and read_checkpoint(cfg, ckpt.parent, cfg.unet_steps, ema=True)["step"] < unet_final_step(cfg)


def train_unet(cfg: TrainConfig, latents: torch.Tensor, captions: list[str], clip, tokenizer):
    """Stable Diffusion's recipe in latent space: epsilon prediction, frozen CLIP text encoder (last hidden
    state), 10% caption dropout to the empty prompt for classifier-free guidance, EMA weights."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    out_dir = unet_final_dir(cfg)
    if done_marker(cfg, "unet").exists():
        load = lambda: UNet2DConditionModel.from_pretrained(out_dir).to(cfg.device)  # noqa: E731
        unet = finished(cfg, "unet", load, (out_dir,))
        if not stopped_before(cfg):
            return unet
        # stopped (`--unet-stop-at`) before the step this run asks for: it trains on from its checkpoint
        done_marker(cfg, "unet").unlink()
    text_encoder = text_encoder_from_clip(clip).to(cfg.device)
    torch.manual_seed(cfg.seed + 3000)
    unet = UNet2DConditionModel(**unet_config(text_encoder.config.hidden_size)).to(cfg.device)
    noise_sched = DDPMScheduler.from_config(noise_scheduler_config())
    scaling = latent_scaling(latents)
    stage = Stage(cfg, "unet", unet, cfg.unet_steps, lr=3e-4, ema_decay=0.9995)
    acp = noise_sched.alphas_cumprod.to(cfg.device)

    def loss_fn(step):
        rng = step_rng(cfg, "unet", step)
        idx = rng.integers(len(captions), size=cfg.unet_batch)
        caps = ["" if rng.random() < 0.1 else captions[i] for i in idx]
        with torch.no_grad():
            cond = text_encoder(tokenize(tokenizer, caps).input_ids.to(cfg.device))[0]
        x0 = latents[torch.from_numpy(idx)].to(cfg.device) * scaling
        gen = step_generator(cfg, step)
        noise = torch.randn(x0.shape, generator=gen, device=cfg.device)
        t = torch.randint(0, 1000, (x0.shape[0],), generator=gen, device=cfg.device)
        a = acp[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        return F.mse_loss(unet(xt, t, encoder_hidden_states=cond).sample, noise)

    stage.run(loss_fn, stop_at=cfg.unet_stop_at)
    save_pretrained(unet, out_dir)
    mark_done(cfg, "unet", (out_dir,))
    return unet
