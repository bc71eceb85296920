"""The shipped toy world: loads with stock diffusers/transformers, fits the size budget, runs the main command."""

import json

from date_diffusion.cli.main import main
from date_diffusion.hub import TOY_ASSETS, TOY_CLIP, TOY_CLIP_EVAL, TOY_CLIP_M2, TOY_CLIP_NA, TOY_CLIP_S1, TOY_PIPELINE


def test_shipped_models_load_with_stock_classes():
    from diffusers import AutoencoderTiny, StableDiffusionPipeline
    from transformers import CLIPModel, CLIPTokenizer

    pipe = StableDiffusionPipeline.from_pretrained(TOY_PIPELINE)
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    for path in (TOY_CLIP, TOY_CLIP_EVAL, TOY_CLIP_S1, TOY_CLIP_M2, TOY_CLIP_NA):
        CLIPModel.from_pretrained(path)
        CLIPTokenizer.from_pretrained(path)
    AutoencoderTiny.from_pretrained(TOY_ASSETS / "tiny-decoder")
    meta = json.loads((TOY_PIPELINE / "toyworld.json").read_text())
    assert set(meta["recommended"]) == {"guidance_scale", "rho", "update_every"}


def test_weights_are_safetensors_within_budget():
    files = [p for p in TOY_ASSETS.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    assert sum(p.stat().st_size for p in files) <= 60 * 2**20


def test_main_command_compares_and_judges(tmp_path, capsys, monkeypatch):
    import torch

    threads = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # no thread setting from the user: one thread
    torch.set_num_threads(2)
    prompt = "a red circle to the left of a blue square"
    try:
        assert main(["generate", prompt, "--compare", "--out", str(tmp_path)]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    meta = json.loads((tmp_path / "a-red-circle-to-the-left-of-a-blue-square-s0.json").read_text())
    assert set(meta["evaluator"]) == {"fixed", "date"}
    assert meta["trace"]["update_steps"] == list(range(0, 50, meta["date"]["update_every"]))
    out = capsys.readouterr().out
    assert "evaluator (fixed)" in out and "evaluator (date)" in out and "reward" in out
    assert (tmp_path / "a-red-circle-to-the-left-of-a-blue-square-s0-compare.png").exists()
