"""SANA with tiny random components (diffusers' own fast-test configs) and a locally built Gemma tokenizer."""

import numpy as np
import pytest
import torch
from conftest import WORDS
from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel
from transformers import Gemma2Config, Gemma2Model

from date_diffusion import DATEConfig
from date_diffusion.pipelines.embeddings import load_packed as load_file
from date_diffusion.pipelines.sana import SanaDATEPipeline

SIDE = 32  # the stock pipeline takes sizes divisible by 32 only


def build_gemma_tokenizer(words):
    """A word-level tokenizer with Gemma's special tokens (`<bos>` prepended, as Gemma's tokenizer adds it; `<pad>`
    for SANA's right padding); any other word is `<unk>`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    vocab = {t: i for i, t in enumerate([*specials, *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                                   unk_token="<unk>")  # fmt: skip


@pytest.fixture
def sana_components():
    torch.manual_seed(0)
    transformer = SanaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_attention_heads=2,
        attention_head_dim=4,
        num_cross_attention_heads=2,
        cross_attention_head_dim=4,
        cross_attention_dim=8,
        caption_channels=8,
        sample_size=8,  # no aspect-ratio bins at this size: samples at the requested size
    ).eval()
    torch.manual_seed(0)
    vae = AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=2,
        encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        encoder_qkv_multiscales=((), (5,)),
        decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1),
        decoder_layers_per_block=[1, 1],
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    ).eval()
    tok = build_gemma_tokenizer(WORDS)
    torch.manual_seed(0)
    gemma = Gemma2Model(
        Gemma2Config(
            head_dim=16,
            hidden_size=8,
            initializer_range=0.02,
            intermediate_size=64,
            max_position_embeddings=8192,
            num_attention_heads=2,
            num_hidden_layers=1,
            num_key_value_heads=2,
            vocab_size=len(tok),
            attn_implementation="eager",
        )
    ).eval()
    return dict(
        transformer=transformer,
        vae=vae,
        text_encoder=gemma,
        tokenizer=tok,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
    )


def call(pipe, **kw):
    return pipe(
        ["a red circle", "a blue dog"],
        height=SIDE,
        width=SIDE,
        num_inference_steps=4,
        output_type="np",
        use_resolution_binning=False,  # the stock pipeline raises for a sample size without bins
        max_sequence_length=8,
        generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
        **kw,
    )


def test_equals_stock_sana_without_updates(sana_components, reward):
    stock = SanaPipeline(**sana_components)
    stock.set_progress_bar_config(disable=True)
    ours = SanaDATEPipeline(**sana_components)
    ours.set_progress_bar_config(disable=True)
    expected = call(stock).images
    assert abs(call(ours).images - expected).max() <= 1e-5
    assert abs(call(ours, date=DATEConfig(rho=0.0), reward=reward).images - expected).max() <= 1e-5
    plain = dict(complex_human_instruction=None)  # the prompt alone, without the instruction
    assert abs(call(ours, **plain).images - call(stock, **plain).images).max() <= 1e-5


def test_date_adapts_unmasked_gemma_tokens(sana_components, reward, tmp_path):
    pipe = SanaDATEPipeline(**sana_components)
    pipe.set_progress_bar_config(disable=True)
    out = call(
        pipe,
        complex_human_instruction=None,  # 8 positions: "<bos> a red circle" and padding
        date=DATEConfig(rho=0.5, update_every=2),
        reward=reward,
        save_embeddings=tmp_path / "e.safetensors",
    )
    saved = load_file(tmp_path / "e.safetensors")
    tokens = saved["original"][:, : 8 * 8].view(2, 8, 8)
    mask = saved["original"][:, 8 * 8 :]
    moved = (saved["final"][:, : 8 * 8].view(2, 8, 8) - tokens).abs().amax(-1)
    assert mask[:, :4].eq(1).all() and mask[:, 4:].eq(0).all()
    assert torch.equal(saved["final"][:, 8 * 8 :], mask)  # the attention mask never changes
    assert (moved[mask == 0] == 0).all() and (moved[mask == 1] > 0).any()  # padding stays put
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for t in out.traces for u in t["updates"])
    assert np.isfinite(out.images).all()


def test_flow_dpm_solver_equals_stock_and_date_moves_rho(sana_components, reward):
    """A multistep DPM-Solver on flow sigmas (the kind of scheduler SANA's checkpoints ship; these settings are
    the scheduler's options, not a copied checkpoint config): DATE off is stock, each update moves rho."""
    from diffusers import DPMSolverMultistepScheduler

    dpm = DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    comps = {**sana_components, "scheduler": dpm}
    stock, ours = SanaPipeline(**comps), SanaDATEPipeline(**comps)
    for p in (stock, ours):
        p.set_progress_bar_config(disable=True)
    assert abs(call(ours).images - call(stock).images).max() <= 1e-5
    out = call(ours, date=DATEConfig(rho=0.5, update_every=2), reward=reward)
    assert [u["step"] for u in out.traces[0]["updates"]] == [0, 2]
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for t in out.traces for u in t["updates"])


def test_latents_stay_float32_with_a_bfloat16_model(sana_components):
    """Stock SANA samples in float32 whatever the model's dtype; so does DATE's loop."""
    pipe = SanaDATEPipeline(**sana_components)
    request = pipe._date_bind(prompt="a", height=SIDE, width=SIDE)
    latents = pipe.date_adapter.latents(request, 1, torch.bfloat16, "cpu")
    assert latents.dtype == torch.float32
    assert pipe.default_image_size() == 1024  # the stock default size
