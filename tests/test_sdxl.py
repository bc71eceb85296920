"""SDXL: tiny random components as diffusers' own tests build them."""

import numpy as np
import pytest
import torch
from conftest import MAX_TOKENS, tiny_clip_text_config, tiny_vae
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from date_diffusion import DATEConfig
from date_diffusion.pipelines.embeddings import load_packed as load_file
from date_diffusion.pipelines.stable_diffusion_xl import StableDiffusionXLDATEPipeline


@pytest.fixture
def sdxl_components(tokenizer):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=4,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 4 + 16,
        cross_attention_dim=32,
        norm_num_groups=4,
    )
    torch.manual_seed(0)
    vae = tiny_vae(sample_size=16)
    conf = tiny_clip_text_config(tokenizer)
    torch.manual_seed(0)
    te = CLIPTextModel(conf)
    torch.manual_seed(1)
    te2 = CLIPTextModelWithProjection(conf)
    sched = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    return dict(
        unet=unet,
        vae=vae,
        text_encoder=te,
        text_encoder_2=te2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        scheduler=sched,
        force_zeros_for_empty_prompt=True,
    )


def gens(*s):
    return [torch.Generator().manual_seed(x) for x in s]


def call(pipe, **kw):
    return pipe(
        ["a red circle", "a blue dog"],
        num_inference_steps=6,
        guidance_scale=5.0,
        generator=gens(0, 1),
        output_type="np",
        **kw,
    )


def test_equals_stock_sdxl_without_updates(sdxl_components, reward):
    stock = StableDiffusionXLPipeline(**sdxl_components, add_watermarker=False)
    stock.set_progress_bar_config(disable=True)
    ours = StableDiffusionXLDATEPipeline(**sdxl_components, add_watermarker=False)
    ours.set_progress_bar_config(disable=True)
    expected = call(stock).images
    for date in (None, DATEConfig(rho=0.0)):
        assert abs(call(ours, date=date, reward=reward).images - expected).max() <= 1e-5


@pytest.mark.parametrize("adapt_pooled", [False, True])
def test_updates_move_rho_and_touch_only_the_adapted_part(sdxl_components, reward, tmp_path, adapt_pooled):
    pipe = StableDiffusionXLDATEPipeline(**sdxl_components, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    path = tmp_path / "e.safetensors"
    out = call(
        pipe, date=DATEConfig(rho=0.5, update_every=3), reward=reward, save_embeddings=path, adapt_pooled=adapt_pooled
    )
    saved = load_file(path)
    tokens = 32 * MAX_TOKENS
    moved = saved["final"] - saved["original"]
    assert (moved[:, tokens:].abs().max() > 0) == adapt_pooled
    assert moved[:, :tokens].abs().max() > 0
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for t in out.traces for u in t["updates"])
    assert np.isfinite(out.images).all()


def test_relative_step_uses_the_norm_of_the_adapted_part_only(sdxl_components, reward, tmp_path):
    pipe = StableDiffusionXLDATEPipeline(**sdxl_components, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    path = tmp_path / "e.safetensors"
    call(pipe, date=DATEConfig(rho_relative=0.02, update_every=3), reward=reward, save_embeddings=path)
    saved = load_file(path)
    tokens = 32 * MAX_TOKENS
    token_norm = saved["original"][:, :tokens].double().norm(dim=1)
    whole_norm = saved["original"].double().norm(dim=1)
    assert (whole_norm - token_norm).abs().min() > 1e-3  # the pooled part would change the answer
    first = sorted(k for k in saved if k.startswith("step_"))[0]
    moved = (saved[first] - saved["original"]).double().norm(dim=1)
    torch.testing.assert_close(moved, 0.02 * token_norm, atol=1e-5, rtol=0)


def _tiny_vae(kind):
    from diffusers import AutoencoderTiny, ConsistencyDecoderVAE

    torch.manual_seed(0)
    if kind == "tiny":
        blocks = dict(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8))
        return AutoencoderTiny(**blocks, num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=4)
    if kind == "consistency":
        encoder = dict(
            encoder_block_out_channels=(8, 16),
            encoder_norm_num_groups=4,
            encoder_down_block_types=("DownEncoderBlock2D",) * 2,
        )
        decoder = dict(
            decoder_block_out_channels=(8, 16),
            decoder_layers_per_block=1,
            decoder_norm_num_groups=4,
            decoder_down_block_types=("ResnetDownsampleBlock2D",) * 2,
            decoder_up_block_types=("ResnetUpsampleBlock2D",) * 2,
        )
        return ConsistencyDecoderVAE(**encoder, **decoder, latent_channels=4, decoder_num_train_timesteps=1024)
    return tiny_vae(sample_size=16, use_post_quant_conv=False)


@pytest.mark.parametrize("kind", ["tiny", "consistency", "kl-without-post-quant-conv"])
def test_decodes_with_a_vae_without_post_quant_conv(sdxl_components, kind):
    """diffusers' test_multi_vae: SDXL decodes with any of its VAE classes, also those without a post-quant
    convolution (the DATE pipeline once read that convolution's dtype unconditionally: AttributeError)."""
    components = {**sdxl_components, "vae": _tiny_vae(kind)}
    stock = StableDiffusionXLPipeline(**components, add_watermarker=False)
    ours = StableDiffusionXLDATEPipeline(**components, add_watermarker=False)
    for pipe in (stock, ours):
        pipe.set_progress_bar_config(disable=True)
    call_ = lambda pipe: pipe("a red circle", num_inference_steps=2, generator=gens(0), output_type="np").images
    expected = call_(stock)
    got = call_(ours)
    assert got.shape == expected.shape
    if kind != "consistency":  # the consistency decoder draws its own noise
        assert abs(got - expected).max() <= 1e-5
