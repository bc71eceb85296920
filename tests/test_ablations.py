"""The paper's ablations and the data-space guidance baseline, through the pipeline."""

import pytest
import torch
from test_pipeline import run

from date_diffusion import DATEConfig


def test_random_direction_moves_rho_and_is_seeded_per_image(pipe, reward, tmp_path):
    date = DATEConfig(rho=0.5, update_every=3, direction="random")
    a = run(pipe, date=date, reward=reward, save_embeddings=tmp_path / "a.safetensors")
    b = run(pipe, date=date, reward=reward)
    assert (a.images == b.images).all()
    assert all(u["update_norm"] == pytest.approx(0.5, abs=1e-5) for t in a.traces for u in t["updates"])
    grad = run(pipe, date=DATEConfig(rho=0.5, update_every=3), reward=reward)
    assert abs(a.images - grad.images).max() > 0


def test_unnormalised_step_is_rho_times_gradient(pipe, reward):
    out = run(pipe, date=DATEConfig(rho=10.0, update_every=3, normalize=False), reward=reward)
    for t in out.traces:
        for u in t["updates"]:
            # float32 embeddings: the tiny step is measured to ~1% (norm ~16, step ~1e-5)
            assert u["update_norm"] == pytest.approx(10.0 * u["grad_norms"][0], rel=2e-2)


def test_reward_on_next_noisy_sample_runs_and_differs(pipe, reward):
    x0 = run(pipe, date=DATEConfig(update_every=3), reward=reward)
    nxt = run(pipe, date=DATEConfig(update_every=3, reward_target="next"), reward=reward)
    assert (nxt.images == nxt.images).all()
    assert nxt.traces[0]["updates"][0]["reward_before"] != pytest.approx(x0.traces[0]["updates"][0]["reward_before"])


def test_universal_guidance_changes_sample_and_keeps_embedding(pipe, reward):
    seen = []
    fixed = run(pipe)
    ug = run(
        pipe,
        reward=reward,
        ug_scale=50.0,
        ug_every=2,
        callback_on_step_end=lambda p, i, t, kw: seen.append(kw["prompt_embeds"].clone()) or {},
        callback_on_step_end_tensor_inputs=["prompt_embeds"],
    )
    assert abs(ug.images - fixed.images).max() > 0
    assert all(torch.equal(s, seen[0]) for s in seen)
    assert ug.traces[0]["updates"] == []


def test_ablation_fields_are_validated():
    with pytest.raises(ValueError, match="direction"):
        DATEConfig(direction="sideways")
    with pytest.raises(ValueError, match="reward_target"):
        DATEConfig(reward_target="xt")
