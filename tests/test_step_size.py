"""`rho_relative`: the scale-free step moves exactly its fraction of each sample's original embedding norm."""

import pytest
import torch

from date_diffusion import DATEConfig
from date_diffusion.core.update import date_update
from date_diffusion.pipelines.embeddings import load_packed as load_file


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_update_with_per_sample_rho_moves_each_its_own_distance():
    g = torch.Generator().manual_seed(0)
    embeds, grad = torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    rho = torch.tensor([0.1, 0.7, 2.0], dtype=torch.float64)
    res = date_update(embeds, embeds, grad, rho)
    moved = (res.embeds - embeds).flatten(1).double().norm(dim=1)
    torch.testing.assert_close(moved, rho, atol=1e-6, rtol=0)
    # the same as three scalar updates
    for b in range(3):
        one = date_update(embeds[b : b + 1], embeds[b : b + 1], grad[b : b + 1], float(rho[b])).embeds
        torch.testing.assert_close(res.embeds[b : b + 1], one)


def test_config_rejects_both_step_sizes_and_bad_values():
    with pytest.raises(ValueError, match="only one of rho"):
        DATEConfig(rho=0.3, rho_relative=0.01)
    for bad in (-0.1, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="rho_relative"):
            DATEConfig(rho_relative=bad)
    assert not DATEConfig(rho_relative=0.0).moves and DATEConfig(rho_relative=0.01).moves
    assert DATEConfig(rho_relative=0.01).to_dict()["rho_relative"] == 0.01


def test_pipeline_moves_the_stated_fraction_of_each_prompt_norm(pipe, reward, tmp_path):
    path = tmp_path / "e.safetensors"
    embeds, negative = pipe.encode_prompt(["a red circle", "a blue dog and a cat"], "cpu", 1, True)
    embeds = embeds * torch.tensor([1.0, 1.7]).view(2, 1, 1)  # two different norms, so two different steps
    out = pipe(
        prompt_embeds=embeds,
        negative_prompt_embeds=negative,
        reward_prompt=["a red circle", "a blue dog and a cat"],
        generator=gens(0, 1),
        num_inference_steps=6,
        output_type="np",
        date=DATEConfig(rho_relative=0.03, update_every=2),
        reward=reward,
        save_embeddings=path,
    )
    saved = load_file(path)
    norms = saved["original"].flatten(1).double().norm(dim=1)
    assert abs(norms[0] - norms[1]) > 1
    previous = saved["original"]
    for key in sorted(k for k in saved if k.startswith("step_")):
        moved = (saved[key] - previous).flatten(1).double().norm(dim=1)
        torch.testing.assert_close(moved, 0.03 * norms, atol=1e-5, rtol=0)
        previous = saved[key]
    for b, trace in enumerate(out.traces):
        assert [u["update_norm"] for u in trace["updates"]] == pytest.approx([0.03 * float(norms[b])] * 3, abs=1e-5)
