"""Record what the official code outputs, for the tests and for `scripts/compare_official.py`.

Runs in a separate virtual environment holding the official packages (not this project, which never depends on
them): torch + torchvision, open_clip_torch, ftfy, and hpsv2 installed without its dependencies (its wheel lacks
open_clip's BPE vocabulary: copy `open_clip/bpe_simple_vocab_16e6.txt.gz` into `hpsv2/src/open_clip/`), plus
`requests` and `clint`, which `hpsv2.img_score` imports:

    python -m venv side && side/bin/pip install torch torchvision open_clip_torch==3.3.0 ftfy requests clint
    side/bin/pip install hpsv2==1.2.0 --no-deps
    cp side/lib/python3.*/site-packages/open_clip/bpe_simple_vocab_16e6.txt.gz \\
       side/lib/python3.*/site-packages/hpsv2/src/open_clip/
    side/bin/python scripts/record_official.py --out tests/official                      # the tests' records
    side/bin/python scripts/record_official.py --out /tmp/hard --prompt-indices 0 2 3 4 6 7 8 \\
        --archs ViT-B-32 ViT-B-32-quickgelu ViT-L-14 ViT-H-14 --hps-arch ViT-H-14 --no-pixels  # full size
    side/bin/python scripts/record_official.py --out /tmp/fresh --fresh \\
        --archs ViT-B-32 ViT-B-32-quickgelu ViT-L-14 ViT-H-14 --hps-arch ViT-H-14 --no-pixels  # fresh inputs

Weights are random (`tests/official/inputs.py`: made from key names, shapes and a seed, so the reading side makes
the same ones without a file). Recorded, into OUT/record.json and OUT/pixels.npz:

- token ids of every prompt by open_clip's tokenizer and by hpsv2's copy of it;
- preprocessed pixels of every image shape: hpsv2's `preprocess_val` (as `hpsv2.img_score` builds it) and
  open_clip's evaluation transform (float16);
- scores: `hpsv2.img_score.score(paths, prompt, cp=FILE)` itself (the model it builds is the one `initialize_model`
  builds, with `pretrained=None` in place of the download its checkpoint overwrites whole), for two checkpoints
  (standing for HPSv2 and HPSv2.1); and open_clip's cosine of normalised features, for each OpenCLIP architecture.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from official.inputs import (  # noqa: E402
    FRESH_PROMPTS,
    FRESH_SHAPES,
    HARD_PROMPTS,
    SHAPES,
    TINY_CONFIG,
    hashed_state,
    make_image,
)


def register_tiny(factory) -> None:
    """The tiny config (and its QuickGELU twin) as a named model of an open_clip `factory` module."""
    factory._MODEL_CONFIGS["tiny"] = json.loads(json.dumps(TINY_CONFIG))
    factory._MODEL_CONFIGS["tiny-quickgelu"] = {**json.loads(json.dumps(TINY_CONFIG)), "quick_gelu": True}


def shapes_of(model) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def record_hps(arch: str, seeds: dict[str, int], images: list[Path], prompts: list[str], folder: Path) -> dict:
    """hpsv2's own `score()` with each checkpoint (HPS-style `{"state_dict": ...}` files of float16 weights)."""
    from hpsv2 import img_score
    from hpsv2.src.open_clip import create_model_and_transforms, factory, get_tokenizer

    register_tiny(factory)
    model, _, preprocess_val = create_model_and_transforms(
        arch, None, precision="amp", device="cpu", jit=False, force_quick_gelu=False, force_custom_text=False,
        force_patch_dropout=False, force_image_size=None, pretrained_image=False, image_mean=None, image_std=None,
        light_augmentation=True, aug_cfg={}, output_dict=True, with_score_predictor=False,
        with_region_predictor=False,
    )  # fmt: skip
    img_score.model_dict.update(model=model, preprocess_val=preprocess_val)  # what initialize_model() would set
    shapes = shapes_of(model)
    entries = []
    for name, seed in seeds.items():
        state = hashed_state(shapes, seed)
        file = folder / f"{name}-{arch}.pt"
        torch.save({"state_dict": {k: v.half() for k, v in state.items()}}, file)
        paths = [str(p) for p in images]
        scores = [[float(s) for s in img_score.score(paths, prompt, cp=str(file))] for prompt in prompts]
        file.unlink()
        entries.append({"name": name, "arch": arch, "seed": seed, "shapes": shapes, "scores": scores})
        print(f"hps {name} {arch}: {len(prompts)} prompts x {len(images)} images", file=sys.stderr)
    pixels = {f"hps/{p.stem}": preprocess_val(_open(p)).numpy().astype(np.float16) for p in images}
    tokens = get_tokenizer(arch)(prompts).tolist()
    return {"models": entries, "pixels": pixels, "tokens": tokens}


def record_openclip(arch: str, seed: int, images: list[Path], prompts: list[str]) -> dict:
    """open_clip's model, evaluation transform and tokenizer: cosine of the normalised features."""
    import open_clip
    from open_clip import factory

    register_tiny(factory)
    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None)
    shapes = shapes_of(model)
    model.load_state_dict(hashed_state(shapes, seed), strict=True)
    model.eval()
    tokenizer = open_clip.get_tokenizer(arch)
    with torch.no_grad():
        pixels = torch.stack([preprocess(_open(p)) for p in images])
        image = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
        text = torch.nn.functional.normalize(model.encode_text(tokenizer(prompts)), dim=-1)
    scores = (text @ image.T).tolist()  # [prompt][image]
    kept = [(k, p) for k, p in enumerate(images) if k in (0, 1, len(images) - 1)]
    print(f"openclip {arch}: {len(prompts)} prompts x {len(images)} images", file=sys.stderr)
    entry = {"name": f"openclip:{arch}", "arch": arch, "seed": seed, "shapes": shapes, "scores": scores}
    entry["quick_gelu"] = bool(factory._MODEL_CONFIGS[arch].get("quick_gelu", False))
    return {
        "model": entry,
        # open_clip's pixels of the square image, the first non-square one and the last (an upscale): enough to show
        # the crop, at half the size
        "pixels": {f"openclip/{p.stem}": pixels[k].numpy().astype(np.float16) for k, p in kept},
        "tokens": tokenizer(prompts).tolist(),
    }


def _open(path: Path):
    from PIL import Image

    return Image.open(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for record.json and pixels.npz")
    p.add_argument("--fresh", action="store_true", help="the fresh prompts, shapes and seeds (inputs.py)")
    p.add_argument("--archs", nargs="*", default=["tiny", "tiny-quickgelu"], help="open_clip architectures")
    p.add_argument("--hps-arch", default="tiny", help="architecture of the HPS checkpoints (hpsv2: ViT-H-14)")
    p.add_argument("--no-pixels", action="store_true", help="leave the preprocessed pixels out")
    p.add_argument(
        "--prompt-indices", nargs="*", type=int, help="only these of the prompts (full-size models are slow)"
    )
    args = p.parse_args(argv)
    torch.manual_seed(0)
    prompts, shapes = (FRESH_PROMPTS, FRESH_SHAPES) if args.fresh else (HARD_PROMPTS, SHAPES)
    if args.prompt_indices:
        prompts = [prompts[i] for i in args.prompt_indices]
    image_seed = 11 if args.fresh else 1
    seeds = {"hpsv2": 103, "hpsv2.1": 104} if args.fresh else {"hpsv2": 3, "hpsv2.1": 4}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "versions": {n: version(n) for n in ("hpsv2", "open_clip_torch", "torch", "torchvision", "ftfy", "pillow")},
        "prompts": prompts,
        "shapes": shapes,
        "image_seed": image_seed,
        "models": [],
    }
    pixels = {}
    with tempfile.TemporaryDirectory() as tmp:
        images = []
        for h, w in shapes:
            path = Path(tmp) / f"{h}x{w}.png"
            from PIL import Image

            Image.fromarray(make_image(h, w, image_seed)).save(path)
            images.append(path)
        hps = record_hps(args.hps_arch, seeds, images, prompts, Path(tmp))
        record["models"] += hps["models"]
        record["tokens"] = {"hpsv2": hps["tokens"]}
        pixels.update(hps["pixels"])
        for n, arch in enumerate(args.archs):
            oc = record_openclip(arch, 50 + n + (100 if args.fresh else 0), images, prompts)
            record["models"].append(oc["model"])
            record["tokens"].setdefault("open_clip", oc["tokens"])
            if n == 0:
                pixels.update(oc["pixels"])
    (out / "record.json").write_text(json.dumps(record, separators=(",", ":")) + "\n")
    if not args.no_pixels:
        np.savez_compressed(out / "pixels.npz", **pixels)
    print(f"recorded {len(record['models'])} models into {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
