"""LTX-Video text-to-video with tiny random components (T5 tokens with their attention mask, packed video latents,
the LTX video VAE with latent statistics and timestep-conditioned decoding, flow matching): stock equality with DATE
off, DATE's update of exactly rho, the reward's frames and decode timestep."""

import numpy as np
import pytest
import torch
from conftest import WORDS
from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel
from transformers import T5Config, T5EncoderModel

from date_diffusion import DATEConfig
from date_diffusion.pipelines.embeddings import load_packed
from date_diffusion.pipelines.ltx import LTXDATEPipeline
from date_diffusion.toyworld.tokenizer import build_t5_tokenizer

# LTX's stock check takes sizes in multiples of 32; 9 frames (8k + 1) are 3 latent frames of the tiny VAE (4x time)
CALL = {"height": 32, "width": 32, "num_frames": 9, "max_sequence_length": 8, "num_inference_steps": 4}


def _vae(timestep_conditioning: bool = False):
    """diffusers' fast-test LTX VAE (tests/pipelines/ltx), optionally timestep-conditioned (LTX-Video 0.9.1 on),
    with a latent mean and std that are not 0 and 1, so that denormalising them counts."""
    torch.manual_seed(0)
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=timestep_conditioning,
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    ).eval()
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    with torch.no_grad():
        vae.latents_mean.copy_(torch.linspace(-0.2, 0.2, 8))
        vae.latents_std.copy_(torch.linspace(0.5, 1.5, 8))
    return vae


@pytest.fixture
def ltx_components():
    """diffusers' own fast-test configuration (tests/pipelines/ltx, two layers), a local T5 tokenizer and encoder."""
    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=2,
        caption_channels=32,
    ).eval()
    tok = build_t5_tokenizer(WORDS)
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8)  # fmt: skip
    return dict(transformer=transformer, vae=_vae(), text_encoder=T5EncoderModel(config).eval(), tokenizer=tok,
                scheduler=FlowMatchEulerDiscreteScheduler())  # fmt: skip


def pipes(components):
    stock, ours = LTXPipeline(**components), LTXDATEPipeline(**components)
    for p in (stock, ours):
        p.set_progress_bar_config(disable=True)
    return stock, ours


def call(pipe, **kw):
    return pipe("a red circle", generator=torch.Generator().manual_seed(0), **{**CALL, **kw})


def test_equals_stock_ltx_without_updates(ltx_components):
    stock, ours = pipes(ltx_components)
    kw = dict(guidance_scale=5.0, negative_prompt="blue", output_type="np")
    expected, got = call(stock, **kw), call(ours, **kw)
    assert type(got).__name__ == "DATEVideoPipelineOutput"
    assert got.frames.shape == expected.frames.shape == (1, 9, 32, 32, 3)
    assert np.abs(got.frames - expected.frames).max() <= 1e-6
    assert (got.records[0]["num_frames"], got.records[0]["fps"], got.fps) == (9, 25, 25)
    assert got.records[0]["method"] == "fixed"
    # the frame rate sets the rotary embedding's time scale (as stock) and the videos' rate
    expected_8, got_8 = call(stock, frame_rate=8, **kw), call(ours, frame_rate=8, **kw)
    assert np.abs(got_8.frames - expected_8.frames).max() <= 1e-6
    assert np.abs(expected_8.frames - expected.frames).max() > 1e-4
    assert (got_8.records[0]["fps"], got_8.fps) == (8, 8)
    # the tuple output and the packed latents of output_type="latent"
    (tuple_out,) = call(ours, return_dict=False, output_type="pt")
    (stock_out,) = call(stock, return_dict=False, output_type="pt")
    assert tuple_out.shape == stock_out.shape == (1, 9, 3, 32, 32) and torch.equal(tuple_out, stock_out)
    latent, stock_latent = call(ours, output_type="latent").frames, call(stock, output_type="latent").frames
    assert latent.shape == stock_latent.shape == (1, 3 * 8 * 8, 8) and torch.allclose(latent, stock_latent, atol=1e-6)


def test_callbacks_and_interrupt_equal_stock(ltx_components):
    """Every stock callback tensor (`prompt_embeds` the `[negative; positive]` batch, as stock) and an interrupt."""
    stock, ours = pipes(ltx_components)
    names, seen = list(stock._callback_tensor_inputs), {"stock": [], "ours": []}

    def recorder(key):
        def callback(pipe, i, t, kwargs):
            seen[key].append({k: v.clone() for k, v in kwargs.items()})
            pipe._interrupt = i == 1
            return kwargs

        return callback

    kw = dict(guidance_scale=5.0, output_type="np", callback_on_step_end_tensor_inputs=names)
    expected = call(stock, callback_on_step_end=recorder("stock"), **kw).frames
    got = call(ours, callback_on_step_end=recorder("ours"), **kw).frames
    assert np.abs(got - expected).max() <= 1e-6 and len(seen["ours"]) == len(seen["stock"]) == 2
    assert np.abs(got - call(ours, guidance_scale=5.0, output_type="np").frames).max() > 1e-4  # interrupted
    for a, b in zip(seen["stock"], seen["ours"]):
        assert a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.allclose(a[k], b[k]) for k in a)
    assert seen["ours"][0]["prompt_embeds"].shape == (2, 8, 32)


def test_timestep_conditioned_decoding_equals_stock(ltx_components):
    """LTX-Video 0.9.1's VAE: the stock decode's noise (from the call's generator) and decode timestep."""
    stock, ours = pipes({**ltx_components, "vae": _vae(timestep_conditioning=True)})
    kw = dict(decode_timestep=0.05, decode_noise_scale=0.025, output_type="np")
    expected = call(stock, **kw).frames
    assert np.abs(call(ours, **kw).frames - expected).max() <= 1e-6
    assert np.abs(call(ours, output_type="np").frames - expected).max() > 1e-4  # the decode timestep acts


def test_to_vae_and_from_vae_are_the_stock_unpacking_and_its_inverse(ltx_components):
    _, ours = pipes(ltx_components)
    request = ours._date_bind(**CALL)
    packed = torch.randn(2, 3 * 8 * 8, 8)
    video = ours.date_adapter.to_vae(request, packed)
    assert torch.equal(video, LTXPipeline._unpack_latents(packed, 3, 8, 8))
    assert video.shape == (2, 8, 3, 8, 8) and torch.equal(ours.date_adapter.from_vae(request, video), packed)


def test_date_moves_the_prompt_embeds_by_rho_and_keeps_the_mask(ltx_components, reward, tmp_path):
    _, ours = pipes(ltx_components)
    seen = []

    def spy(images, texts):
        seen.append((tuple(images.shape), list(texts)))
        return reward(images, texts)

    path = tmp_path / "e.safetensors"
    out = call(ours, guidance_scale=5.0, date=DATEConfig(rho=0.5, update_every=2), reward=spy, reward_frames=2,
               save_embeddings=path, output_type="np")  # fmt: skip
    updates = out.traces[0]["updates"]
    assert [u["step"] for u in updates] == [0, 2]
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for u in updates)
    assert seen[0] == ((2, 3, 32, 32), ["a red circle"] * 2)  # 2 frames of one video, each its own one-frame clip
    assert "2 evenly spaced latent frames" in out.traces[0]["reward_decoder"]
    assert out.records[0]["method"] == "date"
    saved = load_packed(path)
    tokens = 8 * 32  # max_sequence_length x the T5 width; then the attention mask, never moved
    moved = (saved["final"] - saved["original"])[0]
    assert moved[tokens:].abs().max() == 0 and moved[:tokens].norm() > 0.5  # two steps of rho, the mask fixed
    mask = saved["original"][0, tokens:]
    assert mask.tolist() == [1.0] * 4 + [0.0] * 4  # "a red circle" + </s>, then padding
    assert moved[:tokens].view(8, 32)[mask == 0].abs().max() == 0  # padded tokens get no gradient: they stay


def test_the_reward_decodes_at_the_calls_decode_timestep(ltx_components, reward):
    """A timestep-conditioned VAE decodes the reward's frames at the call's decode timestep, one per clip."""
    _, ours = pipes({**ltx_components, "vae": _vae(timestep_conditioning=True)})
    decode, timesteps = ours.vae.decode, []

    def spy(z, temb=None, **kw):
        if torch.is_grad_enabled():  # the reward's decodes (the output's runs without gradient)
            timesteps.append(temb.detach().clone())
        return decode(z, temb, **kw)

    ours.vae.decode = spy
    call(ours, guidance_scale=5.0, date=DATEConfig(rho=0.5, update_every=2), reward=reward, reward_frames=2,
         decode_timestep=0.05, decode_noise_scale=0.025, output_type="np")  # fmt: skip
    assert len(timesteps) >= 2 and all(torch.allclose(t, torch.tensor([0.05, 0.05])) for t in timesteps)


def test_generate_writes_a_video_with_its_record(ltx_components, tmp_path, clip_dir, capsys):
    """`generate` on a tiny saved LTX folder: an animated WebP at the stock 25 frames per second with its record
    (read back by `info`) and the JSON record; each update moves exactly rho."""
    import json

    from PIL import Image

    from date_diffusion.cli.main import main
    from date_diffusion.hub import ModelNotFoundError
    from date_diffusion.outputs import read_png_metadata
    from date_diffusion.pipelines.loading import reward_decoder

    LTXPipeline(**ltx_components).save_pretrained(tmp_path / "model")
    argv = ["generate", "a red circle", "--model", str(tmp_path / "model"), "--reward", f"clip:{clip_dir}",
            "--steps", "4", "--update-every", "2", "--height", "32", "--width", "64", "--frames", "9",
            "--reward-frames", "2", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    out = tmp_path / "out"
    meta = json.loads((out / "a-red-circle-s0.json").read_text())
    assert [u["step"] for u in meta["trace"]["updates"]] == [0, 2]
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for u in meta["trace"]["updates"])
    assert (meta["family"], meta["num_frames"], meta["fps"], meta["reward_frames"]) == ("ltx", 9, 25, 2)
    with Image.open(out / "a-red-circle-s0.webp") as video:
        video.seek(1)
        video.load()
        assert (video.n_frames, video.size, video.info["duration"]) == (9, (64, 32), 40)  # 25 fps
    assert read_png_metadata(out / "a-red-circle-s0.webp")["record"] == meta
    capsys.readouterr()
    assert main(["info", str(out / "a-red-circle-s0.webp")]) == 0
    assert "a red circle" in capsys.readouterr().out
    # an image decoder is refused for a video model, and no tiny decoder is named for LTX-Video (none exists)
    assert main([*argv[:-2], "--reward-decoder", "tiny", "--out", str(tmp_path / "o2")]) == 2
    assert "makes videos" in capsys.readouterr().err
    with pytest.raises(ModelNotFoundError, match="LTX-Video .* has no published tiny decoder"):
        reward_decoder(tmp_path / "model")
