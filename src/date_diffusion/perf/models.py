"""Models for `bench-perf`: the toy world, or Stable Diffusion 1.5's architecture with random weights.

Random weights cost exactly what trained ones cost, so time and memory ratios are real. The configs are SD 1.5's
published layer sizes: the 860M-parameter UNet, the f=8 VAE, CLIP ViT-L/14 text tower (conditioning) and the
full CLIP ViT-L/14 (reward, as the paper).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel

from date_diffusion.hub import load_component
from date_diffusion.pipelines.stable_diffusion import StableDiffusionDATEPipeline
from date_diffusion.resolver import resolve_settings
from date_diffusion.rewards.clip import CLIPScoreReward
from date_diffusion.rewards.registry import reward_from_spec
from date_diffusion.toyworld import world
from date_diffusion.toyworld.tokenizer import build_clip_tokenizer

SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    attention_head_dim=8,
    cross_attention_dim=768,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=2,
    sample_size=512,
    block_out_channels=(128, 256, 512, 512),
    scaling_factor=0.18215,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
)
CLIP_L_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=1,
)
CLIP_L_VISION = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=224,
    patch_size=14,
    hidden_act="quick_gelu",
    projection_dim=768,
)


def sd15_random(dtype=torch.float32, seed: int = 0):
    """(StableDiffusionDATEPipeline, CLIPScoreReward) with SD 1.5's architecture and random weights."""
    torch.manual_seed(seed)
    tok = build_clip_tokenizer("a photo of cat dog red blue and the on with".split(), model_max_length=77)
    pipe = StableDiffusionDATEPipeline(
        vae=AutoencoderKL(**SD15_VAE),
        text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT)),
        tokenizer=tok,
        unet=UNet2DConditionModel(**SD15_UNET),
        scheduler=DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    clip = CLIPModel(CLIPConfig(text_config=CLIP_L_TEXT, vision_config=CLIP_L_VISION, projection_dim=768))
    return pipe.to(dtype=dtype), CLIPScoreReward(clip.float(), tok)


def load(model: str, dtype=torch.float32, reward_spec: str | None = None):
    """(pipeline, reward, image size) for a bench-perf model name or a diffusers folder. Reward: `reward_spec`
    (CLI syntax), else the toy CLIP for the toy world, random CLIP-L for sd15-random, CLIP-L for a folder."""
    if model.startswith("sd15-random-"):
        pipe, reward = sd15_random(dtype)
        size = int(model.rsplit("-", 1)[1])
    else:
        folder = world.PIPELINE if model == world.NAME else model
        pipe = load_component(StableDiffusionDATEPipeline, folder, dtype=dtype)
        # the model's plain reward, as the paper's algorithm uses it: toy-clip on the toy world, else clip-l
        reward_spec = reward_spec or resolve_settings(folder, paper_defaults=True).reward
        size = pipe.default_image_size()
    if reward_spec:
        reward = reward_from_spec(reward_spec, "cpu")
    return pipe, reward, size
