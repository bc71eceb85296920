"""The shipped toy world: loads with stock diffusers/transformers, fits the size budget, runs the main command."""

import json

from date_diffusion.cli.main import main
from date_diffusion.toyworld.world import ASSETS as TOY_ASSETS
from date_diffusion.toyworld.world import CLIPS
from date_diffusion.toyworld.world import PIPELINE as TOY_PIPELINE


def test_shipped_models_load_with_stock_classes():
    from diffusers import AutoencoderTiny, StableDiffusionPipeline
    from transformers import CLIPModel, CLIPTokenizer

    pipe = StableDiffusionPipeline.from_pretrained(TOY_PIPELINE)
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    for path in CLIPS.values():
        CLIPModel.from_pretrained(path)
        CLIPTokenizer.from_pretrained(path)
    AutoencoderTiny.from_pretrained(TOY_ASSETS / "tiny-decoder")
    meta = json.loads((TOY_PIPELINE / "toyworld.json").read_text())
    assert {"guidance_scale", "update_every"} <= set(meta["recommended"])
    assert len({"rho", "rho_relative"} & set(meta["recommended"])) == 1


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


def test_generate_uses_the_recommended_setting_and_the_paper_is_one_flag_away(tmp_path):
    recommended = json.loads((TOY_PIPELINE / "toyworld.json").read_text())["recommended"]
    argv = ["generate", "a red circle", "--steps", "10", "--out", str(tmp_path)]
    assert main(argv) == 0
    meta = json.loads((tmp_path / "a-red-circle-s0.json").read_text())
    assert meta["reward"] == recommended["reward"] and meta["guidance_scale"] == recommended["guidance_scale"]
    for key in ("rho", "rho_relative", "update_every"):
        if key in recommended:
            assert meta["date"][key] == recommended[key]
    assert main([*argv, "--paper-defaults"]) == 0
    paper = json.loads((tmp_path / "a-red-circle-s0-2.json").read_text())
    assert (paper["reward"], paper["date"]["rho"], paper["date"]["rho_relative"]) == ("toy-clip", 0.5, None)
    assert paper["date"]["update_every"] == 10 and paper["date"]["anchor"] == "previous"


def test_bench_runs_the_recommended_method(tmp_path):
    from date_diffusion.evaluation.methods import Recommended, parse_methods

    recommended = json.loads((TOY_PIPELINE / "toyworld.json").read_text())["recommended"]
    (method,) = parse_methods("recommended")
    assert method.label == "recommended" and isinstance(method, Recommended)
    assert method.date.rho_relative == recommended["rho_relative"] and method.reward == recommended["reward"]
    argv = ["bench", "--suite", "toy", "--limit", "1", "--seeds", "1", "--steps", "6", "--methods", "fixed recommended"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["methods"]["recommended"]["reward"] == recommended.get("reward")
    assert main(["report", str(tmp_path)]) == 0
