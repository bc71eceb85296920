"""`date-diffusion generate`: images with DATE (and, with --compare, the fixed-embedding image beside each)."""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from date_diffusion.cli.common import (
    CLIError,
    add_date_arguments,
    date_config_from_args,
    flag_error,
    load_reward,
    resolve_device,
)
from date_diffusion.hub import TOY_PIPELINE, model_defaults
from date_diffusion.schedulers import SCHEDULERS


def add_parser(sub):
    p = sub.add_parser(
        "generate", help="generate images with DATE", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("prompts", nargs="+", metavar="PROMPT", help="one or more prompts")
    p.add_argument("--model", default=None, help="diffusers Stable Diffusion folder or hub id (default: the toy world)")
    p.add_argument(
        "--reward",
        default="clip",
        help="reward: clip (toy CLIP), clip:ID_OR_PATH, or weighted sums like 0.5*clip:PATH_A+1*clip:PATH_B",
    )
    add_date_arguments(p)
    p.add_argument("--steps", type=int, default=50, help="number of sampling steps")
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance scale (default: paper's 8, or the toy world's tuned value)",
    )
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--scheduler", default=None, help=f"one of {', '.join(SCHEDULERS)} (default: the model's own)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first image; image k uses seed + k")
    p.add_argument("--images-per-prompt", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass (results do not depend on it)")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--out", default="outputs", help="output folder")
    p.add_argument("--compare", action="store_true", help="also sample with fixed embeddings (same seed); grid")
    p.add_argument("--save-embeddings", action="store_true", help="also write the embeddings as .safetensors")
    p.add_argument(
        "--reward-decoder",
        default=None,
        help="APPROXIMATE: decode x0_hat for the reward with a tiny decoder: 'tiny' (the family's TAESD; "
        "the toy world's own) or a folder / hub id",
    )
    p.add_argument("--gradient-checkpointing", action="store_true", help="less memory in update steps, same result")
    p.set_defaults(func=run)
    return p


def slug(text: str, n: int = 60) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:n] or "prompt"


def check_output_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise CLIError(f"--out {str(out)!r} is not writable ({err.strerror or err}); choose another folder") from err


def resolve_model(model: str | None) -> str:
    if model is not None:
        return model
    if not TOY_PIPELINE.exists():
        raise CLIError("no default model is installed with this copy; pass --model ID_OR_PATH")
    return str(TOY_PIPELINE)


def load_pipeline(model: str, dtype: str, device: str, scheduler: str | None):
    from date_diffusion.pipelines import load_date_pipeline

    return load_date_pipeline(model, dtype, device, scheduler)


def run(args) -> int:
    import torch
    from tqdm.auto import tqdm

    if any(not p.strip() for p in args.prompts):
        raise CLIError("a PROMPT is empty; give non-empty text")
    if args.scheduler is not None and args.scheduler not in SCHEDULERS:
        raise CLIError(f"unknown --scheduler {args.scheduler!r}; choose one of: {', '.join(SCHEDULERS)}")
    for name in ("steps", "images_per_prompt", "batch_size"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    out = Path(args.out)
    check_output_dir(out)
    model = resolve_model(args.model)
    defaults = model_defaults(model)
    if args.guidance is None:
        args.guidance = defaults.get("guidance_scale", 8.0)
    date = date_config_from_args(args, defaults)
    try:
        date.update_indices(args.steps)  # out-of-range indices fail now, before any model loads
    except ValueError as err:
        raise flag_error(err) from err
    device = resolve_device(args.device)
    if device == "cpu" and Path(model).resolve() == TOY_PIPELINE.resolve() and "OMP_NUM_THREADS" not in os.environ:
        # the toy world's models are too small to gain from threads: a second one only spins (measured on two
        # cores: 9.8 s of CPU with one thread against 14.3 s with two, for the README's main command)
        torch.set_num_threads(1)
    pipe = load_pipeline(model, args.dtype, device, args.scheduler)
    pipe.set_progress_bar_config(disable=True)
    if args.negative_prompt is not None and not pipe._date_negative_branch:
        raise CLIError(f"--negative-prompt is not supported by {type(pipe).__name__} (no negative branch)")
    reward = load_reward(args.reward, device)
    decoder = None
    if args.reward_decoder:
        from date_diffusion.hub import tiny_decoder_for

        decoder = tiny_decoder_for(model, args.reward_decoder).to(device, getattr(torch, args.dtype))
    judge = toy_judge(model)

    jobs = [(p, args.seed + k) for p in args.prompts for k in range(args.images_per_prompt)]
    jobs = [(idx, p, s) for idx, (p, s) in enumerate(jobs)]
    runs = [("fixed", None), ("date", date)] if args.compare else [("date", date)]
    bar = tqdm(total=len(jobs) * len(runs), desc="images", unit="img")
    for start in range(0, len(jobs), args.batch_size):
        batch = jobs[start : start + args.batch_size]
        results = {}
        for kind, cfg in runs:
            # One generator per image: an image depends on its prompt and seed only, never on the batch.
            gens = [torch.Generator("cpu").manual_seed(s) for _, _, s in batch]
            emb_path = out / ".embeddings-batch.safetensors" if args.save_embeddings and kind == "date" else None
            extra = {} if args.negative_prompt is None else {"negative_prompt": [args.negative_prompt] * len(batch)}
            if cfg is not None:
                extra.update(reward_decoder=decoder, gradient_checkpointing=args.gradient_checkpointing)
            res = pipe(
                prompt=[p for _, p, _ in batch],
                height=args.height,
                width=args.width,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance,
                generator=gens,
                date=cfg,
                reward=reward if cfg is not None else None,
                save_embeddings=emb_path,
                **extra,
            )
            results[kind] = res
            bar.update(len(batch))
        if args.save_embeddings:
            from safetensors.torch import load_file, save_file

            batch_embeddings = load_file(emb_path)
        for j, (idx, prompt, seed) in enumerate(batch):
            stem = f"{idx:03d}-{slug(prompt)}-s{seed}"
            meta = {
                "prompt": prompt,
                "seed": seed,
                "model": model,
                "scheduler": type(pipe.scheduler).__name__,
                "steps": args.steps,
                "guidance_scale": args.guidance,
                "negative_prompt": args.negative_prompt,
                "reward": args.reward,
                "dtype": args.dtype,
                "date": date.to_dict(),
                "reward_decoder": args.reward_decoder,
                "gradient_checkpointing": args.gradient_checkpointing,
                "trace": results["date"].traces[j],
            }
            img = results["date"].images[j]
            img.save(out / f"{stem}.png")
            if args.save_embeddings:
                save_file(
                    {k: v[j : j + 1].contiguous() for k, v in batch_embeddings.items()},
                    out / f"{stem}-embeddings.safetensors",
                )
                meta["embeddings"] = f"{stem}-embeddings.safetensors"
            lines = [f"[{idx}] {prompt!r} seed {seed} -> {out / (stem + '.png')}"]
            if judge is not None:
                meta["evaluator"] = {"date": judge(img, prompt)}
            if args.compare:
                fixed = results["fixed"].images[j]
                fixed.save(out / f"{stem}-fixed.png")
                compare_grid(fixed, img).save(out / f"{stem}-compare.png")
                meta["fixed_image"] = f"{stem}-fixed.png"
                meta["compare_grid"] = f"{stem}-compare.png"
                lines.append(f"    grid (fixed | DATE): {out / (stem + '-compare.png')}")
                if judge is not None:
                    meta["evaluator"]["fixed"] = judge(fixed, prompt)
            lines += describe(meta)
            (out / f"{stem}.json").write_text(json.dumps(meta, indent=1))
            tqdm.write("\n".join(lines))
    bar.close()
    if args.save_embeddings:
        (out / ".embeddings-batch.safetensors").unlink(missing_ok=True)
    return 0


def compare_grid(left, right, min_side: int = 256):
    """Two images side by side; small ones (the toy world's 64 px) are enlarged without smoothing."""
    from PIL import Image

    scale = max(1, -(-min_side // min(left.size)))
    w, h = left.width * scale, left.height * scale
    grid = Image.new("RGB", (2 * w + 4 * scale, h), "white")
    grid.paste(left.resize((w, h), Image.Resampling.NEAREST), (0, 0))
    grid.paste(right.resize((w, h), Image.Resampling.NEAREST), (w + 4 * scale, 0))
    return grid


def describe(meta: dict) -> list[str]:
    lines = []
    for u in meta["trace"]["updates"]:
        after = f" -> {u['reward_after']:.4f}" if "reward_after" in u else ""
        note = " (skipped: zero or non-finite gradient)" if u["skipped"] else ""
        lines.append(
            f"    step {u['step']:3d}: reward {u['reward_before']:.4f}{after}, moved {u['update_norm']:.3f}{note}"
        )
    for kind, verdict in meta.get("evaluator", {}).items():
        lines.append(f"    evaluator ({kind}): {'PASS' if verdict['pass'] else 'FAIL'} {verdict['aspects']}")
    return lines


def toy_judge(model: str):
    """For toy-world models, the exact evaluator as a function (PIL image, prompt) -> verdict dict."""
    if not (Path(model) / "toyworld.json").exists():  # written by `toyworld export`
        return None
    import numpy as np

    from date_diffusion.toyworld.evaluator import evaluate_prompt

    return lambda image, prompt: evaluate_prompt(np.asarray(image), prompt)
