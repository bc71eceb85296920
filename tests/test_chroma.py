"""Chroma with tiny random components (diffusers' fast-test transformer config) and a locally written T5
tokenizer."""

import numpy as np
import pytest
import torch
from conftest import FLUX_VAE, WORDS, tiny_vae
from diffusers import ChromaPipeline, ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler
from transformers import T5Config, T5EncoderModel

from date_diffusion import DATEConfig
from date_diffusion.pipelines.chroma import ChromaDATEPipeline
from date_diffusion.pipelines.embeddings import load_packed as load_file
from date_diffusion.toyworld.tokenizer import build_t5_tokenizer


@pytest.fixture
def chroma_components():
    torch.manual_seed(0)
    transformer = ChromaTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=[4, 4, 8],
        approximator_hidden_dim=32,
        approximator_layers=1,
        approximator_num_channels=16,
    ).eval()
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
        text_encoder=t5,
        tokenizer=t5_tok,
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )


def call(pipe, **kw):
    return pipe(
        ["a red circle", "a blue dog"],
        height=16,
        width=16,
        num_inference_steps=4,
        output_type="np",
        max_sequence_length=8,
        generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
        **kw,
    )


def test_equals_stock_chroma_without_updates(chroma_components, reward):
    stock = ChromaPipeline(**chroma_components)
    stock.set_progress_bar_config(disable=True)
    ours = ChromaDATEPipeline(**chroma_components)
    ours.set_progress_bar_config(disable=True)
    for kw in ({}, {"negative_prompt": ["blue", "red square"]}, {"guidance_scale": 1.0}):
        expected = call(stock, **kw).images
        assert abs(call(ours, **kw).images - expected).max() <= 1e-5, kw
    assert abs(call(ours, date=DATEConfig(rho=0.0), reward=reward).images - call(stock).images).max() <= 1e-5


def test_given_embeddings_and_a_boolean_mask_equal_stock(chroma_components):
    """Embeddings and masks passed in: the transformer gets each branch's mask in the dtype it came in (a boolean
    mask is a mask, a floating one is added), as stock."""
    stock = ChromaPipeline(**chroma_components)
    stock.set_progress_bar_config(disable=True)
    ours = ChromaDATEPipeline(**chroma_components)
    ours.set_progress_bar_config(disable=True)
    embeds, _, mask, neg, _, neg_mask = stock.encode_prompt(["a red circle", "a blue dog"], "", max_sequence_length=8)
    given = dict(prompt_embeds=embeds, prompt_attention_mask=mask.bool(), negative_prompt_embeds=neg,
                 negative_prompt_attention_mask=neg_mask)  # fmt: skip

    def go(pipe):
        return pipe(height=16, width=16, num_inference_steps=4, output_type="np",
                    generator=[torch.Generator().manual_seed(s) for s in (0, 1)], **given).images  # fmt: skip

    expected = go(stock)
    assert abs(go(ours) - expected).max() <= 1e-5
    assert abs(expected - call(stock).images).max() > 1e-4  # the boolean mask differs from the floating one


def test_date_adapts_the_t5_tokens_never_the_mask(chroma_components, reward, tmp_path):
    """Stock's floating mask is added to the attention logits (diffusers issue #12116), so padding takes part:
    every token position may move; the mask does not."""
    pipe = ChromaDATEPipeline(**chroma_components)
    pipe.set_progress_bar_config(disable=True)
    out = call(
        pipe, date=DATEConfig(rho=0.5, update_every=2), reward=reward, save_embeddings=tmp_path / "e.safetensors"
    )
    saved = load_file(tmp_path / "e.safetensors")
    tokens = saved["original"][:, : 8 * 32].view(2, 8, 32)
    mask = saved["original"][:, 8 * 32 :]
    moved = (saved["final"][:, : 8 * 32].view(2, 8, 32) - tokens).abs().amax(-1)
    assert torch.equal(saved["final"][:, 8 * 32 :], mask)  # the attention mask never changes
    assert mask[:, :5].eq(1).all() and mask[:, 5:].eq(0).all()  # "a red circle", </s> and one padding token
    assert (moved[mask == 1] > 0).any() and (moved[mask == 0] > 0).any()  # padding is attended, so it moves too
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for t in out.traces for u in t["updates"])
    assert np.isfinite(out.images).all()
