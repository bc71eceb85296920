"""PixArt-alpha with tiny random components (learned sigma, T5 with attention mask)."""

import pytest
import torch
from conftest import WORDS, tiny_vae
from diffusers import DDIMScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
from transformers import T5Config, T5EncoderModel

from date_diffusion import DATEConfig
from date_diffusion.pipelines.embeddings import load_packed as load_file
from date_diffusion.pipelines.pixart import PixArtAlphaDATEPipeline
from date_diffusion.toyworld.tokenizer import build_t5_tokenizer


@pytest.fixture
def pixart_components():
    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(
        sample_size=8,
        num_layers=2,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=3,
        caption_channels=32,
        in_channels=4,
        cross_attention_dim=24,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    ).eval()
    torch.manual_seed(0)
    vae = tiny_vae()
    tok = build_t5_tokenizer(WORDS)
    torch.manual_seed(0)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(tok),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
        )
    ).eval()
    return dict(transformer=transformer, vae=vae, text_encoder=t5, tokenizer=tok, scheduler=DDIMScheduler())


def call(pipe, **kw):
    return pipe(
        ["a red circle", "a blue dog"],
        num_inference_steps=4,
        guidance_scale=4.5,
        output_type="np",
        use_resolution_binning=False,
        clean_caption=False,
        max_sequence_length=8,
        generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
        **kw,
    )


def test_equals_stock_pixart_without_updates(pixart_components, reward):
    stock = PixArtAlphaPipeline(**pixart_components)
    stock.set_progress_bar_config(disable=True)
    ours = PixArtAlphaDATEPipeline(**pixart_components)
    ours.set_progress_bar_config(disable=True)
    expected = call(stock).images
    assert abs(call(ours).images - expected).max() <= 1e-5
    assert abs(call(ours, date=DATEConfig(rho=0.0), reward=reward).images - expected).max() <= 1e-5


def test_date_adapts_unmasked_t5_tokens(pixart_components, reward, tmp_path):
    pipe = PixArtAlphaDATEPipeline(**pixart_components)
    pipe.set_progress_bar_config(disable=True)
    out = call(
        pipe, date=DATEConfig(rho=0.5, update_every=2), reward=reward, save_embeddings=tmp_path / "e.safetensors"
    )
    saved = load_file(tmp_path / "e.safetensors")
    tokens = saved["original"][:, : 8 * 32].view(2, 8, 32)
    mask = saved["original"][:, 8 * 32 :]
    moved = (saved["final"][:, : 8 * 32].view(2, 8, 32) - tokens).abs().amax(-1)
    assert torch.equal(saved["final"][:, 8 * 32 :], mask)  # the attention mask never changes
    assert (moved[mask == 0] == 0).all() and (moved[mask == 1] > 0).any()  # padding stays put
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for t in out.traces for u in t["updates"])


def test_takes_the_stock_kwargs_and_exposes_the_callback_state(pixart_components):
    """As stock: `mask_feature` (a stock `**kwargs` argument) warns that it is deprecated and changes nothing; and
    since the DATE class takes `callback_on_step_end`, a callback may read and raise `pipe.guidance_scale` and read
    `pipe.num_timesteps` as in the newer stock pipelines (diffusers' test_callback_cfg / test_callback_inputs, and
    test_raises_warning_for_mask_feature, which stock passes)."""
    ours = PixArtAlphaDATEPipeline(**pixart_components)
    ours.set_progress_bar_config(disable=True)
    expected = call(ours).images
    with pytest.warns(FutureWarning, match="mask_feature"):
        got = call(ours, mask_feature=True).images
    assert abs(got - expected).max() == 0

    seen = []

    def raise_guidance(pipe, i, t, kwargs):
        seen.append((pipe.guidance_scale, pipe.num_timesteps))
        pipe._guidance_scale += 1.0
        return kwargs

    call(ours, callback_on_step_end=raise_guidance)  # guidance 4.5
    assert [s for s, _ in seen] == [4.5 + i for i in range(len(seen))]
    assert {n for _, n in seen} == {len(seen)}
    assert ours.guidance_scale == 4.5 + ours.num_timesteps
