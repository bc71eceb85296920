"""`date-diffusion edit`: text-guided editing, plain and with DATE, for every model family (`pipe.edit`: edit-friendly
DDPM inversion for SD 1.x/2.x, SDXL and PixArt, FlowEdit for SD3 and FLUX; see docs/editing.md)."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from date_diffusion.cli.common import (
    CLIError,
    HelpFormatter,
    add_date_arguments,
    add_model_arguments,
    check_output_dir,
    check_seed,
    date_overrides,
    load_reward,
    model_kwargs,
    resolve_device,
    resolve_from_args,
    resolve_model,
    slug,
)
from date_diffusion.core.settings import SAMPLING, SettingError
from date_diffusion.core.text import prepare_prompt
from date_diffusion.editing import EDIT_DEFAULTS

# torch, diffusers and the pipelines are imported inside the functions that need them: see cli/__init__.py


EXAMPLES = """examples:
  date-diffusion edit outputs/a-red-circle-s0.png --source-prompt "a red circle" --target-prompt "a blue circle"
  date-diffusion edit outputs/a-red-circle-s0.png --source-prompt "a red circle" --target-prompt "a red square"
  date-diffusion edit cat.png --source-prompt "a cat" --target-prompt "a dog" --model ./stable-diffusion-v1-5 --skip 20
  date-diffusion edit cat.png --source-prompt "a photo of a cat" --target-prompt "a photo of a dog" \\
      --model stabilityai/stable-diffusion-xl-base-1.0 --offload model
  date-diffusion edit cat.png --source-prompt "a photo of a cat" --target-prompt "a photo of a tiger" \\
      --model black-forest-labs/FLUX.1-dev --dtype bfloat16 --offload model

The first two edit the image `date-diffusion generate "a red circle"` writes (the toy world: about 20 s on a CPU);
a larger --skip keeps more of the input. Each edit writes the input, the reconstruction (source prompt, no DATE),
the plain and the DATE result, a grid comparing them and a record."""


def editor_help() -> str:
    """The editor and its defaults per family, from `editing.EDIT_DEFAULTS`."""
    parts = [
        f"{name}: {'DDPM inversion' if d.editor == 'ddpm' else 'FlowEdit'} {d.steps} steps, skip {d.skip}, "
        f"guidance {d.cfg_src:g} / {d.cfg_tar:g}"
        for name, d in EDIT_DEFAULTS.items()
    ]
    return "Editor and defaults per family (--skip scales with --steps): " + "; ".join(parts) + "."


def add_parser(sub):
    p = sub.add_parser(
        "edit",
        help="edit an image with a target prompt (DDPM inversion or FlowEdit; plain and DATE)",
        description="Edit an image toward a target prompt, plain and with DATE adapting the target prompt's "
        "embedding. " + editor_help(),
        formatter_class=HelpFormatter,
        epilog=EXAMPLES,
    )
    p.add_argument("image", help="the image to edit (any size; resized to the model's resolution or --height/--width)")
    p.add_argument("--source-prompt", required=True, help="describes the image as it is")
    p.add_argument("--target-prompt", required=True, help="describes the image wanted")
    add_model_arguments(p)
    add_date_arguments(p)
    s = p.add_argument_group("editing (defaults: per family, see above)")
    s.add_argument("--steps", type=int, default=None, help="steps of the editor's schedule")
    s.add_argument("--skip", type=int, default=None, help="steps not regenerated (more: closer to the input)")
    s.add_argument(
        "--strength",
        metavar="X",
        type=float,
        default=None,
        help="instead of --skip: the fraction of the steps regenerated, in (0, 1], as diffusers' img2img counts it",
    )
    s.add_argument(
        "--n-min",
        metavar="N",
        type=int,
        default=None,
        help="FlowEdit (sd3, flux): the last regenerated steps sampled plainly from the target prompt (default 0)",
    )
    s.add_argument(
        "--n-avg",
        metavar="N",
        type=int,
        default=None,
        help="FlowEdit (sd3, flux): noise draws averaged per step (default 1; cost grows with it)",
    )
    s.add_argument("--cfg-src", type=float, default=None, help="guidance of the source branch (the inversion)")
    s.add_argument("--cfg-tar", type=float, default=None, help="guidance of the target branch (the regeneration)")
    s.add_argument("--negative-prompt", default=None, help="families with a negative branch")
    s.add_argument("--height", type=int, default=None, help="edit at this height in pixels (default: the model's)")
    s.add_argument("--width", type=int, default=None, help="edit at this width in pixels (default: the model's)")
    s.add_argument("--seed", type=int, default=0, help="seed of the editor's noise")
    s.add_argument("--out", default="outputs/edit", help="output folder")
    s.add_argument("--overwrite", action="store_true", help="replace files of the same name instead of renaming")
    p.set_defaults(func=run)
    return p


def check_args(args) -> None:
    """Everything checkable before the model's family is known."""
    from PIL import Image

    if not Path(args.image).is_file():
        raise CLIError(f"IMAGE {args.image!r} not found")
    try:
        with Image.open(args.image) as probe:
            probe.verify()
    except Exception as err:  # not an image, truncated
        raise CLIError(f"IMAGE {args.image!r} is not a readable image ({err})") from err
    for name in ("source_prompt", "target_prompt"):
        try:  # before any work: refused when empty, cut to what encoders read
            text, note = prepare_prompt(getattr(args, name), f"--{name.replace('_', '-')}")
        except ValueError as err:
            raise CLIError(str(err)) from None
        setattr(args, name, text)
        if note:
            print(f"date-diffusion edit: note: {note}", file=sys.stderr)
    try:  # the sampling settings' kinds: the same ranges as generate's --steps and --guidance
        if args.steps is not None:
            SAMPLING["num_inference_steps"].value(args.steps, "--steps")
        for name in ("cfg_src", "cfg_tar"):
            if getattr(args, name) is not None:
                SAMPLING["guidance_scale"].value(getattr(args, name), "--" + name.replace("_", "-"))
    except SettingError as err:
        raise CLIError(str(err)) from err
    check_seed(args.seed)
    if args.strength is not None and args.skip is not None:
        raise CLIError("--strength and --skip both set how much is regenerated; give one")
    if args.strength is not None and not 0 < args.strength <= 1:
        raise CLIError(f"--strength must be in (0, 1] (the fraction of steps regenerated), got {args.strength:g}")
    for name in ("height", "width"):
        value = getattr(args, name)
        if value is not None and (value < 8 or value % 8):
            raise CLIError(f"--{name} must be a positive multiple of 8, got {value}")
    if args.scheduler is not None:
        raise CLIError("edit runs its editor's own schedule (DDIM steps for DDPM inversion, the model's flow-matching "
                       "Euler steps for FlowEdit): leave --scheduler out")  # fmt: skip


def edit_plan(args, family: str) -> None:
    """--steps, --skip (or --strength), --cfg-src, --cfg-tar and FlowEdit's --n-min and --n-avg, the family's
    defaults where not given (on `args`), checked as `pipe.edit` checks them (`editing.plan.edit_plan`)."""
    from date_diffusion.editing.plan import EditArguments
    from date_diffusion.editing.plan import edit_plan as plan_of

    defaults = EDIT_DEFAULTS[family]
    args.editor = defaults.editor
    flow = [flag for flag, value in (("--n-min", args.n_min), ("--n-avg", args.n_avg)) if value is not None]
    if flow and defaults.editor != "flowedit":
        raise CLIError(f"{' and '.join(flow)}: FlowEdit's (sd3, flux); {family} edits by DDPM inversion: leave "
                       f"{'them' if len(flow) > 1 else 'it'} out")  # fmt: skip
    args.steps = args.steps if args.steps is not None else defaults.steps
    if args.strength is not None:  # the skip it means, counted as pipe.edit counts it
        try:
            args.skip = plan_of(defaults, EditArguments(args.steps, strength=args.strength)).skip
        except ValueError:
            raise CLIError(f"--strength {args.strength:g} regenerates no step of {args.steps}; give at least "
                           f"{1 / args.steps:.3g}") from None  # fmt: skip
    args.skip = args.skip if args.skip is not None else defaults.skip_for(args.steps)
    args.cfg_src = args.cfg_src if args.cfg_src is not None else defaults.cfg_src
    args.cfg_tar = args.cfg_tar if args.cfg_tar is not None else defaults.cfg_tar
    if not 0 <= args.skip < args.steps:
        raise CLIError(f"--skip must be in [0, {args.steps - 1}], got {args.skip}")
    if defaults.editor == "flowedit":
        args.n_min = 0 if args.n_min is None else args.n_min
        args.n_avg = 1 if args.n_avg is None else args.n_avg
        if args.n_min > args.steps - args.skip:
            regenerated = args.steps - args.skip
            raise CLIError(f"--n-min must be in [0, {regenerated}] (the regenerated steps), got {args.n_min}")
    try:  # pipe.edit's own checks, so that it refuses nothing once the model has loaded
        plan_of(defaults, EditArguments(args.steps, args.skip, args.cfg_src, args.cfg_tar, **flowedit_args(args)))
    except ValueError as err:
        raise CLIError(str(err)) from err


def flowedit_args(args) -> dict:
    """FlowEdit's `n_min` and `n_avg` for `pipe.edit`; none for the DDPM-inversion families (it refuses them)."""
    return {"n_min": args.n_min, "n_avg": args.n_avg} if args.editor == "flowedit" else {}


def check_loaded(args, pipe) -> None:
    """What depends on the loaded model, before any folder or file is made: the step count the editor's scheduler
    takes (DDPM inversion: DDIM steps on the model's training schedule; FlowEdit: the model's own scheduler)."""
    from date_diffusion.schedulers import check_steps_fit

    scheduler = None  # FlowEdit: the model's own
    if args.editor == "ddpm":
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # as editing/ddpm_inversion.py builds it
    try:
        check_steps_fit(pipe, args.steps, "--steps", args.height, args.width, scheduler=scheduler)
    except ValueError as err:
        raise CLIError(str(err)) from err


def run(args) -> int:
    check_args(args)
    loading = model_kwargs(args)
    model = resolve_model(args.model)
    family = resolve_from_args(model, date_overrides(args), args.family, args.paper_defaults).family
    edit_plan(args, family)
    # DATE acts on the regenerated steps: steps - skip loop indices
    flags = {**date_overrides(args), "num_inference_steps": args.steps - args.skip}
    settings = resolve_from_args(model, flags, args.family, paper_defaults=args.paper_defaults)
    out = Path(args.out)
    pipe, image, reward = load(args, settings, loading)
    check_loaded(args, pipe)
    made = [p for p in (out, *out.parents) if not p.exists()]  # the folders check_output_dir creates
    check_output_dir(out)  # created once the model has loaded and every check has passed
    try:
        files, dated = edit_three(args, pipe, image, settings.date, reward)
    except BaseException:  # a failure (or Ctrl-C) while editing leaves no empty folder of its own
        with contextlib.suppress(OSError):
            for folder in made:
                folder.rmdir()  # only when empty: another process's files stay
        raise
    meta = record(args, settings, files, dated.traces[0])
    from date_diffusion.grids import final_rewards, knows_line, verdict_lines

    edits = {"plain": files["plain"], "date": files["date"]}
    meta["final_reward"] = final_rewards(reward, edits, args.target_prompt)  # the same quantity for both edits
    written = write_edit(out, args, files, meta)
    for label, path in written:
        print(f"{label}: {path}")
    final = meta["final_reward"]
    print(f"  reward of the finished edits ({settings.reward}): plain {final['plain']:.4f}, DATE "
          f"{final['date']:.4f} ({final['date'] - final['plain']:+.4f} vs plain edit)")  # fmt: skip
    knows = knows_line(meta.get("evaluator", {}))
    for line in [*verdict_lines(meta.get("evaluator", {})), *([knows] if knows else [])]:
        print(f"  {line}")
    return 0


def load(args, settings, loading: dict):
    """The pipeline (dtype, LoRAs, offload as generate loads it), the input image at the edit's size, the reward."""
    from diffusers.utils import logging as diffusers_logging
    from PIL import Image

    from date_diffusion.outputs import open_rgb
    from date_diffusion.pipelines import load_date_pipeline

    diffusers_logging.disable_progress_bar()  # the command prints its own lines, as generate
    device = resolve_device(args.device)
    if args.offload and device == "cpu":
        raise CLIError("--offload moves models between the CPU and an accelerator; with --device cpu leave it out")
    try:
        pipe = load_date_pipeline(settings.model, args.dtype, device, None, **loading)
    except ValueError as err:  # unreadable single file, LoRA for another model, ...
        raise CLIError(str(err)) from err
    if args.negative_prompt is not None and not pipe.supports_negative_prompt:
        raise CLIError(f"--negative-prompt is not supported by {type(pipe).__name__} (no negative branch)")
    pipe.set_progress_bar_config(disable=True)
    size = pipe.default_image_size()
    args.height, args.width = args.height or size, args.width or size
    image = open_rgb(args.image).resize((args.width, args.height), Image.Resampling.BICUBIC)  # any mode, bit depth
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
            negative_prompt=args.negative_prompt,
            generator=torch.Generator().manual_seed(args.seed),
            date=cfg,
            reward=reward if cfg is not None else None,
            **flowedit_args(args),
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
        "negative_prompt": args.negative_prompt,
        "model": settings.model,
        "family": settings.family,
        "editor": args.editor,
        "dtype": args.dtype,
        "loras": list(args.lora),
        "height": args.height,
        "width": args.width,
        "steps": args.steps,
        "skip": args.skip,
        "strength": args.strength,
        **flowedit_args(args),
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
    """(grid, panel records): input | plain edit | DATE edit under headers (verdicts on the target prompt, each
    edit's reward, the DATE edit's with its difference to the plain one, the distance moved), with their amplified
    difference where the two edits differ little."""
    from date_diffusion.grids import compare_grid, panel

    verdicts, rewards = meta.get("evaluator", {}), meta.get("final_reward") or {}
    shown = [
        panel(files["input"], "input"),
        panel(files["plain"], "plain edit", verdicts.get("plain"), reward=rewards.get("plain")),
        panel(files["date"], "DATE edit", verdicts.get("date"), meta["trace"], rewards.get("date")),
    ]
    return compare_grid(shown, difference_of=(1, 2))
