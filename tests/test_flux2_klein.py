"""FLUX.2 [klein] with tiny random components (diffusers' own fast-test configs) and a locally written tokenizer:
the base model (classifier-free guidance on the empty prompt) and the step-distilled one (none)."""

import numpy as np
import pytest
import torch
from conftest import WORDS
from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline
from llm_tokenizers import build_qwen2_tokenizer
from test_flux2 import flux2_transformer, flux2_vae, text_kv_cache_changes_nothing
from transformers import Qwen3Config, Qwen3ForCausalLM

from date_diffusion import DATEConfig
from date_diffusion.pipelines.embeddings import load_packed as load_file
from date_diffusion.pipelines.flux2_klein import Flux2KleinDATEPipeline

MAX_TOKENS = 24
# the stock call's arguments for the tiny model (the stock layers (9, 18, 27) are read, stacked, as by default)
KLEIN_EXTRA = {"max_sequence_length": MAX_TOKENS}


@pytest.fixture
def flux2_klein_components():
    tokenizer = build_qwen2_tokenizer(WORDS)
    config = Qwen3Config(
        intermediate_size=16,
        hidden_size=16,
        num_hidden_layers=27,  # the stock layers (9, 18, 27) exist
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    text_encoder = Qwen3ForCausalLM(config).eval()
    return dict(scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=text_encoder, tokenizer=tokenizer,
                transformer=flux2_transformer(guidance_embeds=False), vae=flux2_vae())  # fmt: skip


def call(pipe, **kw):
    kw = dict(height=16, width=16, num_inference_steps=4, guidance_scale=4.0, output_type="np", **KLEIN_EXTRA) | kw
    return pipe(prompt=["a red circle", "a blue dog"], generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
                **kw)  # fmt: skip


def pipes(components, is_distilled=False):
    stock = Flux2KleinPipeline(**components, is_distilled=is_distilled)
    ours = Flux2KleinDATEPipeline(**components, is_distilled=is_distilled)
    for p in (stock, ours):
        p.set_progress_bar_config(disable=True)
    return stock, ours


@pytest.mark.parametrize("is_distilled", [False, True])
def test_equals_stock_klein_with_and_without_guidance(flux2_klein_components, reward, is_distilled):
    stock, ours = pipes(flux2_klein_components, is_distilled)
    for scale in (4.0, 1.0):
        expected = call(stock, guidance_scale=scale).images
        assert abs(call(ours, guidance_scale=scale).images - expected).max() <= 1e-5
    assert abs(call(ours, date=DATEConfig(rho=0.0), reward=reward).images - call(stock).images).max() <= 1e-5
    guided = abs(call(ours).images - call(ours, guidance_scale=1.0).images).max()
    assert (guided == 0) if is_distilled else (guided > 1e-4)  # the distilled model ignores the scale, as stock
    latents = call(stock, output_type="latent").images  # unpacked and de-normalised, as stock returns them
    assert latents.shape == (2, 1, 16, 16) and torch.equal(call(ours, output_type="latent").images, latents)


def test_negative_prompt_embeds_equal_stock(flux2_klein_components):
    stock, ours = pipes(flux2_klein_components)
    negative = torch.randn(2, MAX_TOKENS, 48, generator=torch.Generator().manual_seed(3))
    expected = call(stock, negative_prompt_embeds=negative).images
    assert abs(call(ours, negative_prompt_embeds=negative).images - expected).max() <= 1e-5
    assert abs(call(ours).images - expected).max() > 1e-4


@pytest.mark.parametrize("is_distilled", [False, True])
def test_date_adapts_the_positive_tokens_only(flux2_klein_components, reward, tmp_path, is_distilled):
    _, pipe = pipes(flux2_klein_components, is_distilled)
    path = tmp_path / "e.safetensors"
    out = call(pipe, date=DATEConfig(rho=0.5, update_every=2), reward=reward, save_embeddings=path)
    saved = load_file(path)
    assert saved["final"].shape == (2, MAX_TOKENS * 48)
    assert (saved["final"] - saved["original"]).abs().amax(dim=1).min() > 0
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for t in out.traces for u in t["updates"])
    assert np.isfinite(out.images).all()
    without = pipe.settings_without_effect(4.0)
    assert ("guidance_scale" in without) == is_distilled


def test_text_kv_cache_cannot_freeze_klein_text(flux2_klein_components, reward):
    text_kv_cache_changes_nothing(pipes(flux2_klein_components)[1], call, reward)
