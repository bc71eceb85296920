"""FLUX with tiny random components and locally written tokenizers."""

import numpy as np
import pytest
import torch
from conftest import FLUX_VAE, WORDS, tiny_clip_text_config, tiny_vae
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextModel, T5Config, T5EncoderModel

from date_diffusion import DATEConfig
from date_diffusion.pipelines.embeddings import load_packed as load_file
from date_diffusion.pipelines.flux import FluxDATEPipeline
from date_diffusion.toyworld.tokenizer import build_t5_tokenizer


@pytest.fixture
def flux_components(tokenizer):
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=16,
        axes_dims_rope=[4, 4, 8],
        guidance_embeds=True,
    )
    torch.manual_seed(0)
    clip = CLIPTextModel(tiny_clip_text_config(tokenizer))
    t5_tok = build_t5_tokenizer(WORDS)
    torch.manual_seed(0)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tok),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
        )
    ).eval()
    torch.manual_seed(0)
    vae = tiny_vae(**FLUX_VAE)
    return dict(
        transformer=transformer,
        vae=vae,
        text_encoder=clip,
        text_encoder_2=t5,
        tokenizer=tokenizer,
        tokenizer_2=t5_tok,
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )


def call(pipe, **kw):
    return pipe(
        ["a red circle", "a blue dog"],
        height=16,
        width=16,
        num_inference_steps=4,
        guidance_scale=3.5,
        output_type="np",
        max_sequence_length=8,
        generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
        **kw,
    )


def test_equals_stock_flux_without_updates(flux_components, reward):
    stock = FluxPipeline(**flux_components)
    stock.set_progress_bar_config(disable=True)
    ours = FluxDATEPipeline(**flux_components)
    ours.set_progress_bar_config(disable=True)
    expected = call(stock).images
    assert abs(call(ours).images - expected).max() <= 1e-5
    assert abs(call(ours, date=DATEConfig(rho=0.0), reward=reward).images - expected).max() <= 1e-5


def test_date_adapts_t5_tokens_without_a_negative_branch(flux_components, reward, tmp_path):
    pipe = FluxDATEPipeline(**flux_components)
    pipe.set_progress_bar_config(disable=True)
    out = call(
        pipe, date=DATEConfig(rho=0.5, update_every=2), reward=reward, save_embeddings=tmp_path / "e.safetensors"
    )
    saved = load_file(tmp_path / "e.safetensors")
    moved = saved["final"] - saved["original"]
    n_tokens = 8 * 32
    assert moved[:, :n_tokens].abs().max() > 0 and moved[:, n_tokens:].abs().max() == 0
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for t in out.traces for u in t["updates"])
    assert np.isfinite(out.images).all()
