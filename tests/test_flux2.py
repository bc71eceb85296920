"""FLUX.2 [dev] with tiny random components (diffusers' own fast-test configs) and a locally written tokenizer."""

import numpy as np
import pytest
import torch
from conftest import WORDS
from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Pipeline, Flux2Transformer2DModel
from llm_tokenizers import build_mistral_tokenizer
from PIL import Image
from transformers import Mistral3Config, Mistral3ForConditionalGeneration

from date_diffusion import DATEConfig
from date_diffusion.pipelines.embeddings import load_packed as load_file
from date_diffusion.pipelines.flux2 import Flux2DATEPipeline

# the tokens the tiny pipelines read: FLUX.2's system message (unknown words: one <unk> each) and the prompt fit
MAX_TOKENS = 48


def flux2_transformer(guidance_embeds: bool = True, text_dim: int = 48):
    torch.manual_seed(0)
    return Flux2Transformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=text_dim,  # three stacked text-encoder layers of 16
        timestep_guidance_channels=256,
        axes_dims_rope=[4, 4, 4, 4],
        guidance_embeds=guidance_embeds,
    )


def flux2_vae():
    torch.manual_seed(0)
    vae = AutoencoderKLFlux2(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=1,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    with torch.no_grad():  # batch-norm statistics other than the identity, so that decoding uses them
        vae.bn.running_mean.copy_(torch.linspace(-0.2, 0.2, vae.bn.running_mean.numel()))
        vae.bn.running_var.copy_(torch.linspace(0.5, 1.5, vae.bn.running_var.numel()))
    return vae


@pytest.fixture
def flux2_components():
    tokenizer = build_mistral_tokenizer(WORDS)
    config = Mistral3Config(
        text_config={
            "model_type": "mistral",
            "vocab_size": len(tokenizer),
            "hidden_size": 16,
            "intermediate_size": 37,
            "max_position_embeddings": 512,
            "num_attention_heads": 4,
            "num_hidden_layers": 30,  # the stock layers (10, 20, 30) exist
            "num_key_value_heads": 2,
            "rms_norm_eps": 1e-05,
            "rope_theta": 1000000000.0,
            "sliding_window": None,
            "bos_token_id": 2,
            "eos_token_id": 3,
            "pad_token_id": 4,
        },
        vision_config={
            "model_type": "pixtral",
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "intermediate_size": 37,
            "image_size": 30,
            "patch_size": 6,
            "num_channels": 3,
        },
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=4,
        model_dtype="mistral3",
        image_seq_length=4,
        vision_feature_layer=-1,
        image_token_index=1,
    )
    transformer = flux2_transformer()
    torch.manual_seed(0)
    text_encoder = Mistral3ForConditionalGeneration(config).eval()
    return dict(scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=text_encoder, tokenizer=tokenizer,
                transformer=transformer, vae=flux2_vae())  # fmt: skip


# the stock call's arguments for the tiny model (the stock layers (10, 20, 30) are read, stacked, as by default)
FLUX2_EXTRA = {"max_sequence_length": MAX_TOKENS}


def call(pipe, **kw):
    kw = dict(height=16, width=16, num_inference_steps=4, guidance_scale=3.5, output_type="np", **FLUX2_EXTRA) | kw
    return pipe(prompt=["a red circle", "a blue dog"], generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
                **kw)  # fmt: skip


def pipes(components):
    stock, ours = Flux2Pipeline(**components), Flux2DATEPipeline(**components)
    for p in (stock, ours):
        p.set_progress_bar_config(disable=True)
    return stock, ours


def test_equals_stock_flux2_without_updates(flux2_components, reward):
    stock, ours = pipes(flux2_components)
    expected = call(stock).images
    assert abs(call(ours).images - expected).max() <= 1e-5
    assert abs(call(ours, date=DATEConfig(rho=0.0), reward=reward).images - expected).max() <= 1e-5
    assert abs(call(ours, guidance_scale=1.5).images - expected).max() > 1e-4  # guidance is an input


def test_conditioning_images_equal_stock(flux2_components):
    """Reference images: their latents join the sample's tokens (fixed); the sample's size follows the first."""
    stock, ours = pipes(flux2_components)
    image = Image.fromarray((np.random.default_rng(0).random((64, 80, 3)) * 255).astype("uint8"))
    kw = dict(num_inference_steps=3, output_type="np", **FLUX2_EXTRA)
    expected = stock(prompt="a red circle", image=image, generator=torch.Generator().manual_seed(0), **kw).images
    got = ours(prompt="a red circle", image=image, generator=torch.Generator().manual_seed(0), **kw).images
    assert got.shape == expected.shape == (1, 64, 80, 3)
    assert abs(got - expected).max() <= 1e-5
    plain = ours(prompt="a red circle", height=64, width=80, generator=torch.Generator().manual_seed(0), **kw).images
    assert abs(plain - expected).max() > 1e-4


def test_date_adapts_the_text_tokens_without_a_negative_branch(flux2_components, reward, tmp_path):
    _, pipe = pipes(flux2_components)
    path = tmp_path / "e.safetensors"
    out = call(pipe, date=DATEConfig(rho=0.5, update_every=2), reward=reward, save_embeddings=path)
    saved = load_file(path)
    assert saved["final"].shape == (2, MAX_TOKENS * 48)  # the tokens are all there is
    assert (saved["final"] - saved["original"]).abs().amax(dim=1).min() > 0
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for t in out.traces for u in t["updates"])
    assert np.isfinite(out.images).all()
    assert pipe.settings_without_effect(3.5, negative_prompt="x") == {
        "negative_prompt": "no negative branch runs (FLUX.2 [dev] is guidance-distilled: the stock pipeline has no "
        "negative branch)"
    }


def text_kv_cache_changes_nothing(pipe, call, reward):
    """diffusers' text key/value cache (`TextKVCacheConfig`, which would compute the text keys and values once and
    so ignore every DATE update) caches nothing in a FLUX.2 transformer: it hooks only NucleusMoE-Image blocks. A
    DATE run with it enabled equals one without; should diffusers ever hook these blocks, this fails."""
    from diffusers import TextKVCacheConfig
    from diffusers.hooks.text_kv_cache import _TEXT_KV_CACHE_BLOCK_HOOK

    date = dict(date=DATEConfig(rho=0.5, update_every=2), reward=reward)
    expected = call(pipe, **date).images
    pipe.transformer.enable_cache(TextKVCacheConfig())
    try:
        hooked = [name for name, m in pipe.transformer.named_modules()
                  if getattr(m, "_diffusers_hook", None) is not None
                  and m._diffusers_hook.get_hook(_TEXT_KV_CACHE_BLOCK_HOOK) is not None]  # fmt: skip
        assert hooked == []
        assert abs(call(pipe, **date).images - expected).max() == 0
    finally:
        pipe.transformer.disable_cache()


def test_text_kv_cache_cannot_freeze_flux2s_text(flux2_components, reward):
    text_kv_cache_changes_nothing(pipes(flux2_components)[1], call, reward)
