"""Wan 2.x text-to-video with tiny random components (UMT5 tokens, the causal Wan VAE, flow matching; Wan 2.2's
second expert): stock equality with DATE off, DATE's update of exactly rho, the reward's frames."""

import numpy as np
import pytest
import torch
from conftest import WORDS
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from date_diffusion import DATEConfig
from date_diffusion.pipelines.reward_path import reward_frame_indices
from date_diffusion.pipelines.wan import WanDATEPipeline
from date_diffusion.toyworld.tokenizer import build_t5_tokenizer

CALL = {"height": 16, "width": 16, "num_frames": 5, "max_sequence_length": 8, "num_inference_steps": 4}


def _transformer():
    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ).eval()


@pytest.fixture
def wan_components():
    """diffusers' own fast-test configuration (tests/pipelines/wan), a local UMT5 tokenizer and encoder."""
    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).eval()
    tok = build_t5_tokenizer(WORDS)
    torch.manual_seed(0)
    config = UMT5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=8)  # fmt: skip
    return dict(transformer=_transformer(), vae=vae, text_encoder=UMT5EncoderModel(config).eval(), tokenizer=tok,
                scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), transformer_2=None)  # fmt: skip


def pipes(components):
    stock, ours = WanPipeline(**components), WanDATEPipeline(**components)
    for p in (stock, ours):
        p.set_progress_bar_config(disable=True)
    return stock, ours


def call(pipe, **kw):
    return pipe("a red circle", generator=torch.Generator().manual_seed(0), **{**CALL, **kw})


def test_equals_stock_wan_without_updates(wan_components):
    stock, ours = pipes(wan_components)
    expected = call(stock, guidance_scale=5.0, negative_prompt="blue")
    got = call(ours, guidance_scale=5.0, negative_prompt="blue")
    assert type(got).__name__ == "DATEVideoPipelineOutput" and got.frames.shape == expected.frames.shape
    assert np.abs(got.frames - expected.frames).max() <= 1e-6
    assert got.records[0]["num_frames"] == 5 and got.records[0]["method"] == "fixed"
    # the stock rounding of the frame count (4k + 1) and the tuple output
    (tuple_out,) = call(ours, num_frames=7, return_dict=False, output_type="pt")
    (stock_out,) = call(stock, num_frames=7, return_dict=False, output_type="pt")
    assert tuple_out.shape == stock_out.shape == (1, 5, 3, 16, 16) and torch.equal(tuple_out, stock_out)


def test_wan22_second_expert_and_guidance_scale_2_equal_stock(wan_components):
    comps = {**wan_components, "transformer_2": _transformer()}
    with torch.no_grad():
        for p in comps["transformer_2"].parameters():
            p.add_(0.05 * torch.randn_like(p))
    stock, ours = WanPipeline(**comps, boundary_ratio=0.875), WanDATEPipeline(**comps, boundary_ratio=0.875)
    for p in (stock, ours):
        p.set_progress_bar_config(disable=True)
    kw = dict(guidance_scale=4.0, guidance_scale_2=2.0)
    expected = call(stock, **kw).frames
    assert np.abs(call(ours, **kw).frames - expected).max() <= 1e-6
    assert np.abs(call(ours, guidance_scale=4.0).frames - expected).max() > 1e-4  # guidance_scale_2 acts


def test_date_moves_the_prompt_embeds_by_rho_with_a_frame_reward(wan_components, reward):
    _, ours = pipes(wan_components)
    seen = []

    def spy(images, texts):
        seen.append((tuple(images.shape), list(texts)))
        return reward(images, texts)

    out = call(ours, guidance_scale=5.0, date=DATEConfig(rho=0.5, update_every=2), reward=spy, reward_frames=2)
    updates = out.traces[0]["updates"]
    assert [u["step"] for u in updates] == [0, 2]
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for u in updates)
    assert seen[0] == ((2, 3, 16, 16), ["a red circle"] * 2)  # 2 frames of one video, each its own one-frame clip
    assert "2 evenly spaced latent frames" in out.traces[0]["reward_decoder"]
    assert out.records[0]["method"] == "date"


def test_reward_frame_indices():
    assert reward_frame_indices(4, 21) == [0, 7, 13, 20]
    assert reward_frame_indices(4, 2) == [0, 1]
    assert reward_frame_indices(1, 5) == [0]
    assert reward_frame_indices((1, 3), 5) == [1, 3]
    with pytest.raises(ValueError, match="this video has 2 latent frames"):
        reward_frame_indices((0, 2), 2)


def test_generate_writes_a_video_with_its_record_and_a_frame_grid(wan_components, tmp_path, clip_dir, capsys):
    """`generate` on a tiny saved Wan folder: an animated WebP with its record (read back by `info`), the JSON
    record, the fixed video and a compare grid of frame strips; each update moves exactly rho."""
    import json

    from PIL import Image

    from date_diffusion.cli.main import main
    from date_diffusion.grids import STRIP_FRAMES
    from date_diffusion.outputs import read_png_metadata

    WanPipeline(**wan_components).save_pretrained(tmp_path / "model")
    argv = ["generate", "a red circle", "--model", str(tmp_path / "model"), "--reward", f"clip:{clip_dir}",
            "--steps", "4", "--update-every", "2", "--height", "16", "--width", "32", "--frames", "9",
            "--reward-frames", "2", "--compare", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    out = tmp_path / "out"
    meta = json.loads((out / "a-red-circle-s0.json").read_text())
    assert [u["step"] for u in meta["trace"]["updates"]] == [0, 2]
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for u in meta["trace"]["updates"])
    assert (meta["family"], meta["num_frames"], meta["fps"], meta["reward_frames"]) == ("wan", 9, 16, 2)
    assert "2 evenly spaced latent frames" in meta["trace"]["reward_decoder"]
    with Image.open(out / "a-red-circle-s0.webp") as video:
        assert (video.n_frames, video.size) == (9, (32, 16))
    assert read_png_metadata(out / "a-red-circle-s0.webp")["record"] == meta
    assert read_png_metadata(out / "a-red-circle-s0-fixed.webp")["record"]["method"] == "fixed"
    grid = read_png_metadata(out / "a-red-circle-s0-compare.png")["record"]
    assert [p["method"] for p in grid["panels"]][:2] == ["fixed", "DATE"]
    assert grid["panels"][0]["box"][2] - grid["panels"][0]["box"][0] >= STRIP_FRAMES * 32  # frames side by side
    capsys.readouterr()
    assert main(["info", str(out / "a-red-circle-s0.webp")]) == 0
    shown = capsys.readouterr().out
    assert "a red circle" in shown and "update at step 0" in shown
    # image-only and video-only options are refused, naming the model's kind
    assert main([*argv[:-2], "--reward-decoder", "tiny", "--out", str(tmp_path / "o2")]) == 2
    assert "makes videos" in capsys.readouterr().err
