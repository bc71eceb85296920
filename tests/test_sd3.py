"""SD3 with tiny random components (CLIP-L/G and T5 stand-ins, locally written tokenizers)."""

import numpy as np
import pytest
import torch
from conftest import FLUX_VAE, WORDS, tiny_clip_text_config, tiny_vae
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from transformers import CLIPTextModelWithProjection, T5Config, T5EncoderModel

from date_diffusion import DATEConfig
from date_diffusion.core.prediction import predicted_x0
from date_diffusion.pipelines.embeddings import load_packed as load_file
from date_diffusion.pipelines.stable_diffusion_3 import StableDiffusion3DATEPipeline
from date_diffusion.toyworld.tokenizer import build_t5_tokenizer


@pytest.fixture
def sd3_components(tokenizer):
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        caption_projection_dim=16,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        out_channels=4,
    )
    conf = tiny_clip_text_config(tokenizer)
    torch.manual_seed(0)
    te = CLIPTextModelWithProjection(conf)
    torch.manual_seed(1)
    te2 = CLIPTextModelWithProjection(conf)
    torch.manual_seed(0)
    vae = tiny_vae(**FLUX_VAE)
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
    return dict(
        transformer=transformer,
        vae=vae,
        text_encoder=te,
        text_encoder_2=te2,
        text_encoder_3=t5,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        tokenizer_3=t5_tok,
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )


def call(pipe, **kw):
    return pipe(
        ["a red circle", "a blue dog"],
        num_inference_steps=5,
        guidance_scale=5.0,
        output_type="np",
        generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
        max_sequence_length=8,
        **kw,
    )


def test_flow_x0_inverts_the_interpolation():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    s = torch.tensor(0.3)
    xt = (1 - s) * x0 + s * noise
    torch.testing.assert_close(predicted_x0(xt, noise - x0, 1 - s, s, "flow"), x0)


def test_equals_stock_sd3_without_updates(sd3_components, reward):
    stock = StableDiffusion3Pipeline(**sd3_components)
    stock.set_progress_bar_config(disable=True)
    ours = StableDiffusion3DATEPipeline(**sd3_components)
    ours.set_progress_bar_config(disable=True)
    expected = call(stock).images
    assert abs(call(ours).images - expected).max() <= 1e-5
    assert abs(call(ours, date=DATEConfig(rho=0.0), reward=reward).images - expected).max() <= 1e-5


def test_date_moves_tokens_by_rho_with_flow_matching(sd3_components, reward, tmp_path):
    pipe = StableDiffusion3DATEPipeline(**sd3_components)
    pipe.set_progress_bar_config(disable=True)
    calls = []
    step = pipe.scheduler.step
    pipe.scheduler.step = lambda *a, **k: calls.append(1) or step(*a, **k)
    out = call(
        pipe, date=DATEConfig(rho=0.5, update_every=2), reward=reward, save_embeddings=tmp_path / "e.safetensors"
    )
    assert len(calls) == 5
    saved = load_file(tmp_path / "e.safetensors")
    n_tokens = saved["original"].shape[1] - 32
    moved = saved["final"] - saved["original"]
    assert moved[:, :n_tokens].abs().max() > 0 and moved[:, n_tokens:].abs().max() == 0
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for t in out.traces for u in t["updates"])
    assert np.isfinite(out.images).all()
