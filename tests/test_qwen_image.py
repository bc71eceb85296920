"""Qwen-Image with tiny random components (configs from diffusers' own fast tests) and a local Qwen tokenizer."""

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
)
from llm_tokenizers import build_qwen_tokenizer
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from date_diffusion import DATEConfig
from date_diffusion.pipelines.embeddings import load_packed as load_file
from date_diffusion.pipelines.qwen_image import QwenImageDATEPipeline


@pytest.fixture
def qwen_image_components():
    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    torch.manual_seed(0)
    vae = AutoencoderKLQwenImage(
        base_dim=4 * 6,
        z_dim=4,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )
    tokenizer = build_qwen_tokenizer()
    torch.manual_seed(0)
    text = {"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 2, "vocab_size": len(tokenizer), "rope_theta": 1000000.0,
            "bos_token_id": None, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}}  # fmt: skip
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        hidden_size=16,
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        vision_end_token_id=151653,
        vision_start_token_id=151652,
        vision_token_id=151654,
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    return dict(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                scheduler=FlowMatchEulerDiscreteScheduler())  # fmt: skip


def call(pipe, **kw):
    kw = dict(height=16, width=16, num_inference_steps=4, output_type="np", max_sequence_length=16, **kw)
    return pipe(["a red circle", "a dog"], generator=[torch.Generator().manual_seed(s) for s in (0, 1)], **kw)


def pipes(components):
    stock, ours = QwenImagePipeline(**components), QwenImageDATEPipeline(**components)
    for p in (stock, ours):
        p.set_progress_bar_config(disable=True)
    return stock, ours


@pytest.mark.parametrize("negative", [None, "bad quality"])
def test_equals_stock_without_updates(qwen_image_components, reward, negative):
    """Prompts of different lengths (a padding mask), with and without true CFG (its norm rescale)."""
    stock, ours = pipes(qwen_image_components)
    expected = call(stock, negative_prompt=negative).images
    assert abs(call(ours, negative_prompt=negative).images - expected).max() <= 1e-5
    dated = call(ours, negative_prompt=negative, date=DATEConfig(rho=0.0), reward=reward).images
    assert abs(dated - expected).max() <= 1e-5
    if negative is not None:  # true CFG acts (stock default true_cfg_scale=4), and 1 turns it off
        assert abs(call(stock).images - expected).max() > 1e-3
        assert abs(call(ours, negative_prompt=negative, true_cfg_scale=1.0).images - call(stock).images).max() <= 1e-5


def test_date_adapts_the_hidden_states_not_the_mask(qwen_image_components, reward, tmp_path):
    _, pipe = pipes(qwen_image_components)
    path = tmp_path / "e.safetensors"
    out = call(pipe, negative_prompt="bad quality", date=DATEConfig(rho=0.5, update_every=2), reward=reward,
               save_embeddings=path)  # fmt: skip
    saved = load_file(path)
    moved = saved["final"] - saved["original"]
    n_tokens, width = moved.shape[1] // 17, 16  # [tokens (L x 16), mask (L)]
    tokens, mask = moved[:, : n_tokens * width].reshape(2, n_tokens, width), moved[:, n_tokens * width :]
    assert mask.abs().max() == 0 and tokens[0].abs().max() > 0
    assert tokens[1, -1].abs().max() == 0  # "a dog" is shorter: its padded position is masked and never moves
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for t in out.traces for u in t["updates"])
    assert np.isfinite(out.images).all()


def test_the_tiny_decoder_is_refused_by_name_where_none_of_its_kind_exists(qwen_image_components, tmp_path):
    """Qwen-Image's VAE's published tiny decoder is a video decoder (TAEHV), no AutoencoderTiny: refused, named."""
    from diffusers import QwenImagePipeline

    from date_diffusion.hub import ModelNotFoundError
    from date_diffusion.pipelines.loading import check_tiny_decoder

    QwenImagePipeline(**qwen_image_components).save_pretrained(tmp_path / "model")
    with pytest.raises(ModelNotFoundError, match="Qwen-Image has no published tiny decoder .* --reward-resolution"):
        check_tiny_decoder(tmp_path / "model")
