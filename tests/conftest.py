"""Tiny Stable Diffusion components with random weights (as diffusers' own tests build them) and a tiny CLIP."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

torch.set_num_threads(1)

WORDS = ["a", "red", "blue", "green", "circle", "square", "cat", "dog", "and", "photo", "of", "the"]
MAX_TOKENS = 16


@pytest.fixture(scope="session")
def tokenizer():
    from date_diffusion.toyworld.tokenizer import build_clip_tokenizer

    return build_clip_tokenizer(WORDS, MAX_TOKENS)


def tiny_clip_text_config(tokenizer, projection_dim: int = 16):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        projection_dim=projection_dim,
    )


# the tests' tiny AutoencoderKL (two blocks of 8 and 16 channels, 4 latent channels), and the latent scaling of the
# SD3 / FLUX VAEs on it
TINY_VAE = dict(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)  # fmt: skip
FLUX_VAE = dict(sample_size=16, shift_factor=0.0609, scaling_factor=1.5035)


def tiny_vae(**config):
    """The tests' tiny AutoencoderKL, with `config` on top (random weights: seed torch first)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(**{**TINY_VAE, **config})


def make_components(tokenizer, prediction_type: str = "epsilon", dtype=torch.float32):
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        norm_num_groups=4,
        attention_head_dim=4,
    )
    torch.manual_seed(0)
    vae = tiny_vae()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(tiny_clip_text_config(tokenizer))
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    return dict(
        unet=unet.to(dtype),
        vae=vae.to(dtype),
        text_encoder=text_encoder.to(dtype),
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@pytest.fixture
def components(tokenizer):
    return make_components(tokenizer)


@pytest.fixture
def pipe(components):
    from date_diffusion import StableDiffusionDATEPipeline

    p = StableDiffusionDATEPipeline(**components)
    p.set_progress_bar_config(disable=True)
    return p


def make_clip(tokenizer, seed: int = 0):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    conf = CLIPConfig(
        text_config=tiny_clip_text_config(tokenizer).to_dict(),
        vision_config=dict(
            image_size=32,
            patch_size=8,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
        ),
        projection_dim=16,
    )
    return CLIPModel(conf).eval()


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory, tokenizer):
    """A tiny CLIP checkpoint folder (random weights, local tokenizer), loadable by id-or-path code."""
    path = tmp_path_factory.mktemp("tiny-clip")
    make_clip(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def reward(clip_dir):
    from date_diffusion import CLIPScoreReward

    return CLIPScoreReward.from_pretrained(clip_dir)


def overridden(base, extra):
    """`base` then `extra`, where a flag of `extra` replaces the same flag of `base` (a flag given twice is refused)."""
    given = {a for a in extra if str(a).startswith("--")}
    kept, k = [], 0
    while k < len(base):
        if base[k] in given:
            k += 2
            continue
        kept.append(base[k])
        k += 1
    return [*kept, *extra]
