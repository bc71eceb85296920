"""`date-diffusion edit`: text-guided editing by edit-friendly DDPM inversion, plain and with DATE."""

from __future__ import annotations

import json
from pathlib import Path

from date_diffusion.cli.common import (
    CLIError,
    HelpFormatter,
    add_date_arguments,
    check_output_dir,
    check_seed,
    date_overrides,
    load_reward,
    resolve_device,
    resolve_from_args,
    resolve_model,
    slug,
)
from date_diffusion.core.settings import SAMPLING, SettingError
from date_diffusion.editing import CFG_SRC, CFG_TAR, EDIT_SKIP, EDIT_STEPS

# torch, diffusers and the pipelines are imported inside the functions that need them: see cli/__init__.py


EXAMPLES = """examples:
  date-diffusion edit outputs/a-red-circle-s0.png --source-prompt "a red circle" --target-prompt "a blue circle"
  date-diffusion edit outputs/a-red-circle-s0.png --source-prompt "a red circle" --target-prompt "a red square"
  date-diffusion edit cat.png --source-prompt "a cat" --target-prompt "a dog" --model ./stable-diffusion-v1-5 --skip 20

The first two edit the image `date-diffusion generate "a red circle"` writes (the toy world: about 20 s on a CPU);
a larger --skip keeps more of the input. Each edit writes the plain and the DATE result and a grid comparing them."""


def add_parser(sub):
    p = sub.add_parser(
        "edit",
        help="edit an image with a target prompt (DDPM inversion; plain and DATE)",
        formatter_class=HelpFormatter,
        epilog=EXAMPLES,
    )
    p.add_argument("image", help="the image to edit (any size; resized to the model's resolution)")
    p.add_argument("--source-prompt", required=True, help="describes the image as it is")
    p.add_argument("--target-prompt", required=True, help="describes the image wanted")
    p.add_argument("--model", default=None, help="Stable Diffusion 1.x/2.x folder or hub id (default: the toy world)")
    add_date_arguments(p)
    p.add_argument("--steps", type=int, default=EDIT_STEPS, help="DDPM steps of inversion and regeneration")
    p.add_argument("--skip", type=int, default=EDIT_SKIP, help="steps not regenerated (more: closer to the input)")
    p.add_argument("--cfg-src", type=float, default=CFG_SRC, help="guidance of the inversion")
    p.add_argument("--cfg-tar", type=float, default=CFG_TAR, help="guidance of the regeneration")
    p.add_argument("--seed", type=int, default=0, help="seed of the inversion's noise")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when available)")
    p.add_argument("--out", default="outputs/edit", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace files of the same name instead of renaming")
    p.set_defaults(func=run)
    return p


def check_args(args) -> None:
    """Everything checkable before a model loads."""
    from PIL import Image

    if not Path(args.image).is_file():
        raise CLIError(f"IMAGE {args.image!r} not found")
    try:
        with Image.open(args.image) as probe:
            probe.verify()
    except Exception as err:  # not an image, truncated
        raise CLIError(f"IMAGE {args.image!r} is not a readable image ({err})") from err
    for name in ("source_prompt", "target_prompt"):
        if not getattr(args, name).strip():
            raise CLIError(f"--{name.replace('_', '-')} is empty")
    try:  # the sampling settings' kinds: the same ranges as generate's --steps and --guidance
        SAMPLING["num_inference_steps"].value(args.steps, "--steps")
        for name in ("cfg_src", "cfg_tar"):
            SAMPLING["guidance_scale"].value(getattr(args, name), "--" + name.replace("_", "-"))
    except SettingError as err:
        raise CLIError(str(err)) from err
    check_seed(args.seed)
    if not 0 <= args.skip < args.steps:
        raise CLIError(f"--skip must be in [0, {args.steps - 1}], got {args.skip}")


def run(args) -> int:
    check_args(args)
    model = resolve_model(args.model)
    # DATE acts on the regenerated steps: steps - skip loop indices
    flags = {**date_overrides(args), "num_inference_steps": args.steps - args.skip}
    settings = resolve_from_args(model, flags, paper_defaults=args.paper_defaults)
    out = Path(args.out)
    check_output_dir(out)  # last: a refused command leaves no new folder
    pipe, image, reward = load(args, settings)
    files, dated = edit_three(args, pipe, image, settings.date, reward)
    meta = record(args, settings, files, dated.traces[0])
    from date_diffusion.grids import verdict_lines

    for label, path in write_edit(out, args, files, meta):
        print(f"{label}: {path}")
    for line in verdict_lines(meta.get("evaluator", {})):
        print(f"  {line}")
    return 0


def load(args, settings):
    """The pipeline, the input image at the model's size, and the reward."""
    from PIL import Image

    from date_diffusion.outputs import open_rgb
    from date_diffusion.pipelines import load_date_pipeline

    device = resolve_device(args.device)
    pipe = load_date_pipeline(settings.model, "float32", device, None)
    if not hasattr(pipe, "edit"):
        raise CLIError(f"editing supports Stable Diffusion 1.x/2.x models; {type(pipe).__name__} has no inversion yet")
    pipe.set_progress_bar_config(disable=True)
    size = pipe.default_image_size()
    image = open_rgb(args.image).resize((size, size), Image.Resampling.BICUBIC)  # any mode and bit depth
    return pipe, image, load_reward(settings.reward, device)


def edit_three(args, pipe, image, date, reward):
    """The reconstruction (source prompt, no DATE), the plain edit and the DATE edit, from one seed."""
    import torch

    def run_edit(target, cfg_tar, cfg):
        return pipe.edit(
            image,
            args.source_prompt,
            target,
            num_inference_steps=args.steps,
            skip=args.skip,
            cfg_src=args.cfg_src,
            cfg_tar=cfg_tar,
            generator=torch.Generator().manual_seed(args.seed),
            date=cfg,
            reward=reward if cfg is not None else None,
        )

    recon = run_edit(args.source_prompt, args.cfg_src, None).images[0]
    plain = run_edit(args.target_prompt, args.cfg_tar, None).images[0]
    dated = run_edit(args.target_prompt, args.cfg_tar, date)
    return {"input": image, "reconstruction": recon, "plain": plain, "date": dated.images[0]}, dated


def record(args, settings, files: dict, trace: dict) -> dict:
    """What the edit's record and PNGs state (with the exact evaluator's verdicts on the toy world)."""
    import numpy as np

    from date_diffusion.toyworld import world

    recon, image = (np.asarray(files[k], float) for k in ("reconstruction", "input"))
    meta = {
        "image": str(args.image),
        "source_prompt": args.source_prompt,
        "target_prompt": args.target_prompt,
        "prompt": args.target_prompt,
        "model": settings.model,
        "steps": args.steps,
        "skip": args.skip,
        "cfg_src": args.cfg_src,
        "cfg_tar": args.cfg_tar,
        "guidance_scale": args.cfg_tar,
        "seed": args.seed,
        "reward": settings.reward,
        "date": settings.date.to_dict(),
        "sources": {k: v for k, v in settings.sources.items() if k not in ("num_inference_steps", "guidance_scale")},
        "trace": trace,
        "reconstruction_max_abs_diff": float(np.abs(recon - image).max() / 255),
    }
    judge = world.judge_for(settings.model)
    if judge is not None:
        meta["evaluator"] = {k: judge(files[k], args.target_prompt) for k in ("plain", "date")}
    return meta


def write_edit(out: Path, args, files: dict, meta: dict) -> list[tuple[str, Path]]:
    """Every image, the grid and the record under a name not taken yet (unless --overwrite), each written
    atomically; returns (what, path) of every file written."""
    from date_diffusion.grids import grid_label
    from date_diffusion.outputs import atomic_write, claimed_stem, save_png

    names = ("input", "reconstruction", "plain", "date", "grid")
    with claimed_stem(
        out, f"{slug(args.target_prompt)}-s{args.seed}", (".json", *(f"-{n}.png" for n in names)), args.overwrite
    ) as stem:
        grid, panels = edit_grid(files, meta)
        written = []
        for name, img in {**files, "grid": grid}.items():
            rec = {**meta, "method": {"plain": "fixed", "date": "date"}.get(name, name), "image": name}
            rec.update({"panels": panels} if name == "grid" else {})
            label = f"grid ({grid_label(panels)})" if name == "grid" else f"{name} image"
            written.append((label, save_png(out / f"{stem}-{name}.png", img, rec)))
        atomic_write(out / f"{stem}.json", json.dumps({**meta, "files": [f"{stem}-{n}.png" for n in names]}, indent=1))
    return [*written, ("record", out / f"{stem}.json")]


def edit_grid(files: dict, meta: dict):
    """(grid, panel records): input | plain edit | DATE edit under headers (verdicts on the target prompt, DATE's
    reward and distance moved), with their amplified difference where the two edits differ little."""
    from date_diffusion.grids import compare_grid, panel

    verdicts = meta.get("evaluator", {})
    shown = [
        panel(files["input"], "input"),
        panel(files["plain"], "plain edit", verdicts.get("plain")),
        panel(files["date"], "DATE edit", verdicts.get("date"), meta["trace"]),
    ]
    return compare_grid(shown, difference_of=(1, 2))
