"""Z-Image with tiny random components (configs from diffusers' own fast tests) and a local Qwen tokenizer."""

import copy

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
from llm_tokenizers import build_qwen_tokenizer
from transformers import Qwen3Config, Qwen3Model

from date_diffusion import DATEConfig
from date_diffusion.pipelines.embeddings import load_packed as load_file
from date_diffusion.pipelines.z_image import ZImageDATEPipeline


@pytest.fixture
def z_image_components():
    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=32,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        norm_eps=1e-5,
        qk_norm=True,
        cap_feat_dim=16,
        rope_theta=256.0,
        t_scale=1000.0,
        axes_dims=[8, 4, 4],
        axes_lens=[256, 32, 32],
    )
    with torch.no_grad():  # initialised with torch.empty (as diffusers' tests, fixed)
        transformer.x_pad_token.copy_(torch.ones_like(transformer.x_pad_token.data))
        transformer.cap_pad_token.copy_(torch.ones_like(transformer.cap_pad_token.data))
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        block_out_channels=[8, 16],
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        sample_size=32,
        scaling_factor=0.3611,
        shift_factor=0.1159,
    )
    tokenizer = build_qwen_tokenizer()
    torch.manual_seed(0)
    config = Qwen3Config(
        hidden_size=16,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    text_encoder = Qwen3Model(config).eval()
    return dict(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                scheduler=FlowMatchEulerDiscreteScheduler())  # fmt: skip


def call(pipe, prompts=("a red circle", "a dog"), **kw):
    kw = copy.deepcopy(kw)  # stock rewrites a list of (negative) prompts in place with its chat template
    kw = dict(height=16, width=16, num_inference_steps=4, output_type="np", max_sequence_length=16, **kw)
    return pipe(list(prompts), generator=[torch.Generator().manual_seed(s) for s in range(len(prompts))], **kw)


def pipes(components):
    stock, ours = ZImagePipeline(**components), ZImageDATEPipeline(**components)
    for p in (stock, ours):
        p.set_progress_bar_config(disable=True)
    return stock, ours


@pytest.mark.parametrize(
    "kw",
    [{}, {"guidance_scale": 0.0}, {"negative_prompt": ["bad quality", "blue"], "cfg_normalization": 1.0},
     {"cfg_truncation": 0.5}],
)  # fmt: skip
def test_equals_stock_without_updates(z_image_components, reward, kw):
    """Prompts of different lengths; CFG, none, normalisation and truncation as stock."""
    stock, ours = pipes(z_image_components)
    expected = call(stock, **kw).images
    assert abs(call(ours, **kw).images - expected).max() <= 1e-5
    assert abs(call(ours, date=DATEConfig(rho=0.0), reward=reward, **kw).images - expected).max() <= 1e-5
    if kw:
        assert abs(call(stock).images - expected).max() > 1e-4  # each setting acts


def test_date_adapts_the_real_tokens_independently_of_the_batch(z_image_components, reward, tmp_path):
    _, pipe = pipes(z_image_components)
    date = DATEConfig(rho=0.5, update_every=2)
    path = tmp_path / "e.safetensors"
    out = call(pipe, date=date, reward=reward, save_embeddings=path)
    saved = load_file(path)
    moved = (saved["final"] - saved["original"])[:, : 16 * 16].reshape(2, 16, 16)
    masks = saved["original"][:, 16 * 16 :]
    assert (saved["final"][:, 16 * 16 :] == masks).all()  # the mask never moves
    for k in range(2):  # only the real tokens move
        n = int(masks[k].sum())
        assert moved[k, :n].abs().max() > 0 and moved[k, n:].abs().max() == 0
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for t in out.traces for u in t["updates"])
    alone = call(pipe, prompts=("a dog",), date=date, reward=reward)  # seed 0 as the pair's first: compare theirs
    first = call(pipe, prompts=("a dog", "a red circle"), date=date, reward=reward)
    assert np.abs(alone.images[0] - first.images[0]).max() <= 1e-4
    assert [u["update_norm"] for u in alone.traces[0]["updates"]] == pytest.approx(
        [u["update_norm"] for u in first.traces[0]["updates"]]
    )


def test_callbacks_see_stock_s_list_of_prompt_embeds(z_image_components):
    stock, ours = pipes(z_image_components)
    seen = {"stock": [], "ours": []}

    def recorder(key):
        def callback(pipe, i, t, kwargs):
            seen[key].append([e.clone() for e in kwargs["prompt_embeds"]])
            return kwargs

        return callback

    kw = {"callback_on_step_end_tensor_inputs": ["latents", "prompt_embeds"]}
    expected = call(stock, callback_on_step_end=recorder("stock"), **kw).images
    assert abs(call(ours, callback_on_step_end=recorder("ours"), **kw).images - expected).max() <= 1e-5
    for a, b in zip(seen["stock"], seen["ours"]):
        assert [e.shape for e in a] == [e.shape for e in b] and all(torch.equal(x, y) for x, y in zip(a, b))


def test_prompt_embeds_as_stocks_list_sample_as_stock(z_image_components):
    """Stock Z-Image takes `prompt_embeds` as a list of one tensor per prompt (diffusers' own
    test_encode_prompt_works_in_isolation passes them so): with DATE off, ours samples them as stock."""
    stock, ours = ZImagePipeline(**z_image_components), ZImageDATEPipeline(**z_image_components)
    embeds, negative = stock.encode_prompt("a red circle", device="cpu", do_classifier_free_guidance=True)
    kw = dict(prompt_embeds=embeds, negative_prompt_embeds=negative, num_inference_steps=2, height=16, width=16,
              output_type="np")  # fmt: skip
    expected = stock(generator=torch.Generator().manual_seed(0), **kw).images
    assert np.abs(ours(generator=torch.Generator().manual_seed(0), **kw).images - expected).max() <= 1e-5
