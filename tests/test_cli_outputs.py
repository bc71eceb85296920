"""The command line as people use it on real models: single files, LoRAs, per-family defaults, never overwrite,
PNG provenance and `info`, embeddings that replay, prompt files, `--version`."""

import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from PIL import Image
from safetensors.torch import save_file
from test_sdxl import sdxl_components  # noqa: F401  (fixture)

from date_diffusion.cli.main import main
from date_diffusion.outputs import atomic_path, read_png_metadata


@pytest.fixture(scope="module")
def sd_files(tmp_path_factory, tokenizer):
    """A tiny SD model as a diffusers folder and as one original-format checkpoint file."""
    from conftest import make_components
    from ldm_checkpoint import sd_checkpoint

    root = tmp_path_factory.mktemp("tiny-sd-files")
    comps = make_components(tokenizer)
    StableDiffusionPipeline(**comps).save_pretrained(root / "folder")
    save_file(sd_checkpoint(comps["unet"], comps["vae"], comps["text_encoder"]), root / "model.safetensors")
    return root


def gen(model, clip_dir, out, *extra):
    argv = ["generate", "--model", str(model), "--reward", f"clip:{clip_dir}", "--out", str(out), *extra]
    return main(argv + (["--steps", "6", "--update-every", "2"] if "--steps" not in extra else []))


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_single_file_checkpoint_gives_the_folders_image(sd_files, clip_dir, tmp_path):
    assert gen(sd_files / "folder", clip_dir, tmp_path / "a", "a red circle", "--compare") == 0
    argv = ["a red circle", "--compare", "--config", str(sd_files / "folder")]
    assert gen(sd_files / "model.safetensors", clip_dir, tmp_path / "b", *argv) == 0
    a, b = tmp_path / "a", tmp_path / "b"
    assert np.array_equal(pixels(a / "a-red-circle-s0-fixed.png"), pixels(b / "a-red-circle-s0-fixed.png"))
    # DATE: the gradients agree to ~1e-9 relative (the loaded models are equal bit for bit; the backward pass is
    # not), which can move a pixel by one level
    assert np.abs(pixels(a / "a-red-circle-s0.png") - pixels(b / "a-red-circle-s0.png")).max() <= 1
    meta = json.loads((tmp_path / "b" / "a-red-circle-s0.json").read_text())
    assert meta["family"] == "sd" and meta["pipeline"] == "StableDiffusionDATEPipeline"


def test_single_file_errors_are_named(sd_files, clip_dir, tmp_path, capsys):
    argv = ["a cat", "--config", str(sd_files / "folder"), "--family", "sdxl"]
    assert gen(sd_files / "model.safetensors", clip_dir, tmp_path, *argv) == 2
    assert "is a 'sd' checkpoint by its keys, not 'sdxl'" in capsys.readouterr().err
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    assert gen(tmp_path / "junk.safetensors", clip_dir, tmp_path, "a cat") == 2
    assert "could not read" in capsys.readouterr().err
    assert gen(tmp_path / "missing.safetensors", clip_dir, tmp_path, "a cat") == 2
    assert "no such checkpoint file" in capsys.readouterr().err
    assert gen(sd_files / "folder", clip_dir, tmp_path, "a cat", "--family", "sd") == 2
    assert "--family and --config apply to a single checkpoint file" in capsys.readouterr().err


def test_files_are_named_as_what_they_are(sd_files, clip_dir, tmp_path, capsys, monkeypatch):
    """A single file offline without its config names --config and the hub repo holding it; a file that holds no
    diffusion model (a CLIP, a README) is named as such before any weights load; "folder" only of folders."""
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert gen(sd_files / "model.safetensors", clip_dir, tmp_path / "o", "a cat") == 2
    err = capsys.readouterr().err
    assert "single checkpoint file" in err and "--config FOLDER" in err and "folder exists" not in err
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in err  # where diffusers reads an SD 1.x file's configs
    (tmp_path / "README").write_text("a model card")
    started = time.perf_counter()
    assert gen(tmp_path / "README", clip_dir, tmp_path / "o", "a cat") == 2
    assert time.perf_counter() - started < 2  # named before any heavy import or load
    err = capsys.readouterr().err
    assert "is a file, not a diffusers folder" in err and "folder exists" not in err
    assert gen(clip_dir / "model.safetensors", clip_dir, tmp_path / "o", "a cat") == 2
    err = capsys.readouterr().err
    assert "is not a diffusion checkpoint" in err and "logit_scale" in err  # its first tensor, named
    assert not (tmp_path / "o").exists()


def _lora_file(unet, path, seed=0):
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(path, unet_lora_layers=layers, safe_serialization=True)
    return path / "pytorch_lora_weights.safetensors"


def test_a_lora_that_cannot_act_is_named(sd_files, clip_dir, tmp_path, capsys):
    """An empty LoRA, a whole model passed as a LoRA, a LoRA for another family (its keys name modules this model
    lacks), one holding NaN (which would turn every image black) and one file given twice under two names are each
    refused with the file's name and why, never with diffusers' adapter-list message."""
    empty = tmp_path / "empty.safetensors"
    save_file({}, empty)
    foreign = tmp_path / "flux-lora.safetensors"
    key = "transformer.single_transformer_blocks.0.attn.to_q.lora_{}.weight"
    save_file({key.format("A"): torch.zeros(4, 64), key.format("B"): torch.zeros(3072, 4)}, foreign)
    diverged = tmp_path / "nan-lora.safetensors"
    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora.{}.weight"
    save_file({key.format("down"): torch.zeros(4, 32), key.format("up"): torch.full((32, 4), float("nan"))}, diverged)
    twice = [foreign, tmp_path / ".." / tmp_path.name / foreign.name]
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(foreign.read_bytes())
    (tmp_path / "flux-lora.safetensors:0.5").write_bytes(b"another file whose name ends like a scale")
    # round thirteen: readable but damaged: integer tensors, the down halves alone
    integers, half = tmp_path / "int-lora.safetensors", tmp_path / "half-lora.safetensors"
    peft_key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_{}.weight"
    save_file({peft_key.format("A"): torch.zeros(4, 32, dtype=torch.int32),
               peft_key.format("B"): torch.zeros(32, 4, dtype=torch.int32)}, integers)  # fmt: skip
    save_file({peft_key.format("A"): torch.zeros(4, 32)}, half)
    renamed = tmp_path / "renamed-lora.safetensors"
    zz = "unet.zz_blocks.0.attn1.to_q.lora_{}.weight"
    save_file({zz.format("A"): torch.zeros(4, 32), zz.format("B"): torch.zeros(32, 4)}, renamed)
    cases = [([empty], "holds no tensors"), ([clip_dir / "model.safetensors"], "holds no LoRA weights"),
             ([foreign], "flux-lora.safetensors"), ([diverged], "nan-lora.safetensors': its tensor 'unet.down_blocks"),
             (twice, "flux-lora.safetensors' is given twice"), ([foreign, copy], "copy.safetensors' is given twice"),
             ([f"{foreign}:1e-46"], "is '1e-46', 0 in 32-bit floats: the LoRA would do nothing"),
             ([f"{foreign}:0.5"], "reads two ways"),
             ([integers], "int-lora.safetensors': its tensor 'unet.down_blocks.0.attentions.0.transformer_blocks.0."
                          "attn1.to_q.lora_A.weight' holds integers (I32)"),
             ([half], "half-lora.safetensors': 1 of its low-rank weights lack their other half"),
             ([renamed], "renamed-lora.safetensors' matches no module of StableDiffusionDATEPipeline: its keys name "
                         "modules this model lacks")]  # fmt: skip
    for loras, message in cases:
        given = [arg for lora in loras for arg in ("--lora", str(lora))]
        assert gen(sd_files / "folder", clip_dir, tmp_path / "o", "a cat", *given) == 2
        err = capsys.readouterr().err
        assert message in err and "not in the list of present adapters" not in err, err
        if loras in ([renamed], [foreign]):  # diffusers' log of the failure is not repeated before ours
            assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_lora_file_with_scale_equals_its_weights_merged_by_hand(tokenizer, clip_dir, tmp_path):
    from conftest import make_components

    comps = make_components(tokenizer)
    StableDiffusionPipeline(**comps).save_pretrained(tmp_path / "base")
    lora = _lora_file(make_components(tokenizer)["unet"], tmp_path / "lora")
    # the expected model: W + scale * B @ A (alpha / r = 1) in every targeted projection
    merged = make_components(tokenizer)
    from safetensors.torch import load_file

    lora_state = load_file(lora)  # diffusers' LoRA layout: <module>.lora.down / .lora.up
    hits = 0
    with torch.no_grad():
        for name, module in merged["unet"].named_modules():
            down = lora_state.get(f"unet.{name}.lora.down.weight")
            if down is not None:
                module.weight += 0.5 * lora_state[f"unet.{name}.lora.up.weight"] @ down
                hits += 1
    assert hits == len(lora_state) // 2 > 0
    StableDiffusionPipeline(**merged).save_pretrained(tmp_path / "merged")
    fixed = ["a red circle", "--rho", "0"]
    assert gen(tmp_path / "base", clip_dir, tmp_path / "plain", *fixed) == 0
    assert gen(tmp_path / "base", clip_dir, tmp_path / "lora-out", *fixed, "--lora", f"{lora}:0.5") == 0
    assert gen(tmp_path / "merged", clip_dir, tmp_path / "merged-out", *fixed) == 0
    with_lora = pixels(tmp_path / "lora-out" / "a-red-circle-s0.png")
    assert np.abs(with_lora - pixels(tmp_path / "merged-out" / "a-red-circle-s0.png")).max() <= 1
    assert np.abs(with_lora - pixels(tmp_path / "plain" / "a-red-circle-s0.png")).max() > 3
    meta = json.loads((tmp_path / "lora-out" / "a-red-circle-s0.json").read_text())
    assert meta["loras"] == [[str(lora), 0.5]]


def test_a_replay_applies_the_loras_its_file_records(tokenizer, clip_dir, tmp_path, capsys):
    """A replay re-creates the saved image: it applies the LoRAs (and scales) the run was made with, takes `--lora`
    only as the same LoRAs' new places at the same scales, and refuses a recorded LoRA that is no file here."""
    from conftest import make_components

    StableDiffusionPipeline(**make_components(tokenizer)).save_pretrained(tmp_path / "base")
    lora = _lora_file(make_components(tokenizer)["unet"], tmp_path / "lora")
    assert gen(tmp_path / "base", clip_dir, tmp_path / "a", "a red circle", "--lora", f"{lora}:0.8",
               "--save-embeddings") == 0  # fmt: skip
    emb = tmp_path / "a" / "a-red-circle-s0-embeddings.safetensors"
    replay = ["generate", "--replay-embeddings", str(emb)]
    assert main([*replay, "--out", str(tmp_path / "b")]) == 0
    made = pixels(tmp_path / "a" / "a-red-circle-s0.png")
    assert np.array_equal(made, pixels(tmp_path / "b" / "a-red-circle-s0.png"))
    assert json.loads((tmp_path / "b" / "a-red-circle-s0.json").read_text())["loras"] == [[str(lora), 0.8]]
    moved = tmp_path / "moved.safetensors"
    lora.rename(moved)
    assert main([*replay, "--out", str(tmp_path / "c")]) == 2
    assert f"its 'loras' names {str(lora)!r}, which is no file here" in capsys.readouterr().err
    assert main([*replay, "--lora", f"{moved}:0.3", "--out", str(tmp_path / "c")]) == 2
    assert "give the same LoRAs at the same scales" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    assert main([*replay, "--lora", f"{moved}:0.8", "--out", str(tmp_path / "c")]) == 0
    assert np.array_equal(made, pixels(tmp_path / "c" / "a-red-circle-s0.png"))


def test_defaults_come_from_the_family_and_flags_override(sdxl_components, clip_dir, tmp_path):  # noqa: F811
    StableDiffusionXLPipeline(**sdxl_components, add_watermarker=False).save_pretrained(tmp_path / "xl")
    size = ["--height", "16", "--width", "16", "--update-every", "25"]
    assert main(["generate", "a cat", "--model", str(tmp_path / "xl"), "--reward", f"clip:{clip_dir}",
                 "--out", str(tmp_path / "o"), *size]) == 0  # fmt: skip
    meta = json.loads((tmp_path / "o" / "a-cat-s0.json").read_text())
    assert (meta["steps"], meta["guidance_scale"]) == (50, 5.0)  # StableDiffusionXLPipeline's own defaults
    sources = meta["sources"]
    assert (sources["num_inference_steps"], sources["guidance_scale"], sources["reward"]) == (
        "family",
        "family",
        "user",
    )
    assert (sources["update_every"], sources["rho"]) == ("user", "paper") and meta["dtype"] == "float32"
    assert main(["generate", "a cat", "--model", str(tmp_path / "xl"), "--reward", f"clip:{clip_dir}",
                 "--out", str(tmp_path / "o"), "--steps", "4", "--guidance", "2", *size]) == 0  # fmt: skip
    meta = json.loads((tmp_path / "o" / "a-cat-s0-2.json").read_text())
    assert (meta["steps"], meta["guidance_scale"]) == (4, 2.0)
    assert (meta["sources"]["num_inference_steps"], meta["sources"]["guidance_scale"]) == ("user", "user")


def test_never_overwrites_and_overwrite_says_so(sd_files, clip_dir, tmp_path):
    assert gen(sd_files / "folder", clip_dir, tmp_path, "a red circle", "--compare") == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert gen(sd_files / "folder", clip_dir, tmp_path, "a red circle", "--compare", "--rho", "0.2") == 0
    assert all((tmp_path / name).read_bytes() == data for name, data in before.items())
    assert json.loads((tmp_path / "a-red-circle-s0-2.json").read_text())["date"]["rho"] == 0.2
    assert (tmp_path / "a-red-circle-s0-2-compare.png").exists()
    assert gen(sd_files / "folder", clip_dir, tmp_path, "a red circle", "--rho", "0.3", "--overwrite") == 0
    assert json.loads((tmp_path / "a-red-circle-s0.json").read_text())["date"]["rho"] == 0.3
    assert not list(tmp_path.glob(".*"))  # no claim or temporary file is left


def test_png_metadata_round_trip_and_info(sd_files, clip_dir, tmp_path, capsys):
    assert gen(sd_files / "folder", clip_dir, tmp_path, "a red circle", "--negative-prompt", "blue", "--compare") == 0
    sidecar = json.loads((tmp_path / "a-red-circle-s0.json").read_text())
    png = read_png_metadata(tmp_path / "a-red-circle-s0.png")
    assert png["record"] == sidecar
    lines = png["parameters"].splitlines()
    assert lines[0] == "a red circle" and lines[1] == "Negative prompt: blue"
    assert "Steps: 6," in lines[2] and "Seed: 0," in lines[2] and "CFG scale: 8.0" in lines[2]
    assert read_png_metadata(tmp_path / "a-red-circle-s0-fixed.png")["record"]["method"] == "fixed"
    capsys.readouterr()
    assert main(["info", str(tmp_path / "a-red-circle-s0.png")]) == 0
    out = capsys.readouterr().out
    assert "a red circle" in out and "update at step 0" in out
    assert main(["info", str(tmp_path / "a-red-circle-s0.json")]) == 2


def test_embeddings_replay_bit_identical_without_a_reward(sd_files, clip_dir, tmp_path):
    assert gen(sd_files / "folder", clip_dir, tmp_path / "a", "a red circle", "--seed", "5", "--save-embeddings") == 0
    emb = tmp_path / "a" / "a-red-circle-s5-embeddings.safetensors"
    from date_diffusion.pipelines.embeddings import load_embeddings

    saved = load_embeddings(emb)
    assert saved.metadata["prompt"] == "a red circle" and saved.metadata["seed"] == 5
    assert saved.metadata["date"]["update_every"] == 2 and saved.update_steps() == [0, 2, 4]
    assert saved.stages["final"]["prompt_embeds"].shape == (1, 16, 16)
    assert main(["generate", "--replay-embeddings", str(emb), "--out", str(tmp_path / "b")]) == 0  # loads no reward
    assert np.array_equal(
        pixels(tmp_path / "a" / "a-red-circle-s5.png"), pixels(tmp_path / "b" / "a-red-circle-s5.png")
    )
    assert json.loads((tmp_path / "b" / "a-red-circle-s5.json").read_text())["method"] == "replay"


def test_prompts_file_text_and_csv(sd_files, clip_dir, tmp_path, capsys):
    (tmp_path / "p.txt").write_text("a red circle\n\n  a blue dog  \n")
    (tmp_path / "p.csv").write_text('id,prompt\n1,"a green square, small"\n')
    assert gen(sd_files / "folder", clip_dir, tmp_path / "o", "--prompts-file", str(tmp_path / "p.txt")) == 0
    assert gen(sd_files / "folder", clip_dir, tmp_path / "o", "--prompts-file", str(tmp_path / "p.csv")) == 0
    names = sorted(p.name for p in (tmp_path / "o").glob("*.json"))
    assert names == ["a-blue-dog-s0.json", "a-green-square-small-s0.json", "a-red-circle-s0.json"]
    (tmp_path / "bad.csv").write_text("id,text\n1,a cat\n")
    assert gen(sd_files / "folder", clip_dir, tmp_path / "o", "--prompts-file", str(tmp_path / "bad.csv")) == 2
    assert "has no 'prompt' or 'caption' column" in capsys.readouterr().err
    # the same reader as bench's: a `caption` column and GenEval's jsonl are prompts files too
    (tmp_path / "c.csv").write_text("caption\na red circle\n")
    (tmp_path / "g.jsonl").write_text('{"tag": "single", "prompt": "a blue dog"}\n')
    assert gen(sd_files / "folder", clip_dir, tmp_path / "o2", "--prompts-file", str(tmp_path / "c.csv")) == 0
    assert gen(sd_files / "folder", clip_dir, tmp_path / "o2", "--prompts-file", str(tmp_path / "g.jsonl")) == 0
    assert sorted(p.name for p in (tmp_path / "o2").glob("*.json")) == ["a-blue-dog-s0.json", "a-red-circle-s0.json"]


def test_version_and_help_examples(capsys):
    from date_diffusion import __version__

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"date-diffusion {__version__}"
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "--lora FILE[:SCALE]" in text and "sd 50 steps / guidance 8" in text
    assert "(default: None)" not in text


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "x.png") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_dtype_auto_per_family_and_device():
    import torch

    from date_diffusion.pipelines.loading import parse_lora, resolve_dtype

    assert resolve_dtype("auto", "flux", "cpu") == torch.float32
    assert resolve_dtype("auto", "sd", "cuda") == torch.float16
    assert resolve_dtype("auto", "sdxl", "cuda:1") == torch.float16
    assert resolve_dtype("bfloat16", "sd", "cpu") == torch.bfloat16
    assert parse_lora("style.safetensors:0.7") == ("style.safetensors", 0.7)
    assert parse_lora("style.safetensors") == ("style.safetensors", 1.0)


def test_offload_on_cpu_is_refused(sd_files, clip_dir, tmp_path, capsys):
    assert gen(sd_files / "folder", clip_dir, tmp_path, "a cat", "--offload", "model", "--device", "cpu") == 2
    assert "--offload moves models" in capsys.readouterr().err


def test_a_replay_whose_lora_file_changed_since_is_named(tokenizer, clip_dir, tmp_path, capsys):
    """Round ten: other weights under a recorded LoRA's name replayed as the saved image, 242 levels off."""
    from conftest import make_components

    StableDiffusionPipeline(**make_components(tokenizer)).save_pretrained(tmp_path / "base")
    lora = _lora_file(make_components(tokenizer)["unet"], tmp_path / "lora")
    assert gen(tmp_path / "base", clip_dir, tmp_path / "a", "a red circle", "--lora", str(lora),
               "--save-embeddings") == 0  # fmt: skip
    other = _lora_file(make_components(tokenizer)["unet"], tmp_path / "other", seed=1)
    other.replace(lora)
    emb = tmp_path / "a" / "a-red-circle-s0-embeddings.safetensors"
    capsys.readouterr()
    assert main(["generate", "--replay-embeddings", str(emb), "--out", str(tmp_path / "b")]) == 2
    assert "was saved with LoRAs whose files have changed since" in capsys.readouterr().err
