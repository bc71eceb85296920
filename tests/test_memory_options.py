"""Exact-path memory savings change nothing but memory; the approximate decoder path is labelled."""

import numpy as np
import pytest
import torch
from diffusers import AutoencoderTiny
from test_pipeline import run

from date_diffusion import DATEConfig


def test_gradient_checkpointing_gives_the_same_result_and_is_restored(pipe, reward):
    date = DATEConfig(rho=0.5, update_every=3)
    plain = run(pipe, date=date, reward=reward)
    ckpt = run(pipe, date=date, reward=reward, gradient_checkpointing=True)
    assert abs(plain.images - ckpt.images).max() <= 1e-6
    for a, b in zip(plain.traces, ckpt.traces):
        for x, y in zip(a["updates"], b["updates"]):
            assert abs(x["reward_before"] - y["reward_before"]) < 1e-6
            assert abs(x["grad_norms"][0] - y["grad_norms"][0]) <= 1e-5 * x["grad_norms"][0]
    assert not pipe.unet.is_gradient_checkpointing and not pipe.vae.is_gradient_checkpointing


def test_half_precision_models_with_float32_reward_stay_finite(components, reward):
    from conftest import make_components

    from date_diffusion import StableDiffusionDATEPipeline

    comps = make_components(components["tokenizer"], dtype=torch.bfloat16)
    pipe = StableDiffusionDATEPipeline(**comps)
    pipe.set_progress_bar_config(disable=True)
    out = run(pipe, date=DATEConfig(rho=0.5, update_every=3), reward=reward)
    assert np.isfinite(out.images).all()
    assert all(abs(u["update_norm"] - 0.5) < 5e-2 for t in out.traces for u in t["updates"])  # bf16 embeddings


def test_tiny_reward_decoder_is_used_and_labelled(pipe, reward):
    torch.manual_seed(0)
    tiny = AutoencoderTiny(
        encoder_block_out_channels=(8,),
        decoder_block_out_channels=(8,),
        num_encoder_blocks=(1,),
        num_decoder_blocks=(1,),
        latent_channels=4,
        upsampling_scaling_factor=2,
    )
    calls = []
    original = tiny.decode
    tiny.decode = lambda *a, **k: calls.append(1) or original(*a, **k)
    date = DATEConfig(rho=0.5, update_every=3)
    exact = run(pipe, date=date, reward=reward)
    approx = run(pipe, date=date, reward=reward, reward_decoder=tiny)
    assert calls and approx.traces[0]["reward_decoder"].endswith("(approximate)")
    assert exact.traces[0]["reward_decoder"] == "vae"
    assert exact.traces[0]["updates"][0]["reward_before"] != approx.traces[0]["updates"][0]["reward_before"]


def test_reduced_resolution_reward_decode_keeps_the_vae_and_is_labelled(pipe, reward):
    from date_diffusion import Reward

    class Seen(Reward):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.images = inner, []

        def forward(self, images, prompts):
            self.images.append(images.detach())
            return self.inner(images, prompts)

    date = DATEConfig(rho=0.5, update_every=3)
    full, low = Seen(reward), Seen(reward)
    exact = run(pipe, date=date, reward=full)
    approx = run(pipe, date=date, reward=low, reward_resolution=8)
    assert {tuple(i.shape[-2:]) for i in full.images} == {(16, 16)} and {tuple(i.shape[-2:]) for i in low.images} == {
        (8, 8)
    }
    assert approx.traces[0]["reward_decoder"] == "vae at 8 px (approximate)"
    assert approx.traces[0]["updates"][0]["reward_before"] != exact.traces[0]["updates"][0]["reward_before"]
    same = run(pipe, date=date, reward=reward, reward_resolution=16)  # full size: no resize, the exact path
    assert abs(same.images - exact.images).max() <= 1e-6
    with pytest.raises(ValueError, match="reward_resolution must be a positive multiple of 2"):
        run(pipe, date=date, reward=reward, reward_resolution=7)


def test_memory_saving_mode_returns_freed_memory_at_each_part(pipe, reward, monkeypatch):
    import date_diffusion.pipelines.reward_path as reward_path  # where the reward path releases memory

    calls = []
    monkeypatch.setattr(reward_path, "release_freed_memory", lambda t: calls.append(t.device.type))
    date = DATEConfig(rho=0.5, update_every=3)
    out = run(pipe, date=date, reward=reward)
    assert calls == []  # only in the memory-saving mode
    out = run(pipe, date=date, reward=reward, gradient_checkpointing=True)
    n_updates = sum(len(t["update_steps"]) for t in out.traces[:1])
    assert calls == ["cpu"] * 2 * n_updates  # before decoding and before the backward pass of each update step
