"""`date-diffusion edit`: text-guided editing, plain and with DATE, for every model family (`pipe.edit`: edit-friendly
DDPM inversion for SD 1.x/2.x, SDXL and PixArt, FlowEdit for SD3 and FLUX; see docs/editing.md)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from date_diffusion.cli.common import (
    CLIError,
    DateOptions,
    HelpFormatter,
    ModelOptions,
    add_date_arguments,
    add_model_arguments,
    check_negative_prompt,
    check_overwrite,
    from_namespace,
    load_reward,
    model_kwargs,
    output_dir,
    output_stem,
    resolve_device,
    resolve_from_args,
    resolve_model,
    say_unused,
    say_without_effect,
)
from date_diffusion.core.config import CANNOT_ACT
from date_diffusion.core.settings import DEFAULT_SEED
from date_diffusion.core.text import prepare_prompt, spelled_as_read
from date_diffusion.core.trace import moved
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


FLOWEDIT_FAMILIES = ", ".join(name for name, d in EDIT_DEFAULTS.items() if d.editor == "flowedit")


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
        help=f"FlowEdit ({FLOWEDIT_FAMILIES}): the last regenerated steps sampled plainly from the target prompt "
        "(default 0)",
    )
    s.add_argument(
        "--n-avg",
        metavar="N",
        type=int,
        default=None,
        help=f"FlowEdit ({FLOWEDIT_FAMILIES}): noise draws averaged per step (default 1; cost grows with it)",
    )
    s.add_argument("--cfg-src", type=float, default=None, help="guidance of the source branch (the inversion)")
    s.add_argument("--cfg-tar", type=float, default=None, help="guidance of the target branch (the regeneration)")
    s.add_argument("--negative-prompt", default=None, help="families with a negative branch")
    s.add_argument("--height", type=int, default=None, help="edit at this height in pixels (default: the model's)")
    s.add_argument("--width", type=int, default=None, help="edit at this width in pixels (default: the model's)")
    s.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the editor's noise")
    s.add_argument("--out", default="outputs/edit", help="output folder")
    s.add_argument("--overwrite", action="store_true", help="replace files of the same name instead of renaming")
    p.set_defaults(func=run, validate=validate)
    return p


@dataclass(frozen=True)
class EditOptions:
    """`edit`'s options, typed: built once from the namespace (`from_args`) after `cli.main` has checked each value
    through its kind. What the command derives (the prepared prompts, the edit plan's steps, skip, guidance and
    FlowEdit's settings with the family's defaults, the size of the loaded model) is a new object
    (`dataclasses.replace`)."""

    image: str
    source_prompt: str
    target_prompt: str
    model: ModelOptions
    date: DateOptions
    steps: int | None
    skip: int | None
    strength: float | None
    n_min: int | None
    n_avg: int | None
    cfg_src: float | None
    cfg_tar: float | None
    negative_prompt: str | None
    height: int | None
    width: int | None
    seed: int
    out: str
    overwrite: bool
    editor: str | None = None  # "ddpm" or "flowedit", set by `edit_plan` from the family

    @classmethod
    def from_args(cls, args) -> EditOptions:
        given = dict(model=ModelOptions.from_args(args), date=DateOptions.from_args(args), editor=None)
        return from_namespace(cls, args, **given)


def validate(args) -> EditOptions:
    """`check_options` of the namespace's options (the validation layer, `cli.common.validate`)."""
    return check_options(EditOptions.from_args(args))


def check_options(opts: EditOptions) -> EditOptions:
    """Everything checkable before the model's family is known (each value's kind was checked by `cli.main`):
    the options with the prompts prepared."""
    from PIL import Image

    if not Path(opts.image).is_file():
        raise CLIError(f"IMAGE {opts.image!r} not found")
    try:
        with Image.open(opts.image) as probe:
            frames = getattr(probe, "n_frames", 1)
            probe.verify()
    except Exception as err:  # not an image, truncated
        raise CLIError(f"IMAGE {opts.image!r} is not a readable image ({err})") from err
    if frames > 1:  # an animation: one image is edited
        print(f"date-diffusion edit: note: IMAGE {opts.image!r} has {frames} frames; its first is edited",
              file=sys.stderr)  # fmt: skip
    from date_diffusion.outputs import transparent_share

    clear = transparent_share(opts.image)
    if clear:  # the model edits colours: what alpha hid is what it sees
        share = "under 1%" if clear < 0.005 else "over 99%" if 0.995 <= clear < 1 else f"{clear:.0%}"  # never 0%
        print(f"date-diffusion edit: note: IMAGE {opts.image!r} is transparent in {share} of its pixels; the "
              "edit reads the colours stored under the transparency (alpha is dropped): flatten it onto a "
              "background first to edit what it shows", file=sys.stderr)  # fmt: skip
    prompts = {}
    for name in ("source_prompt", "target_prompt"):
        try:  # before any work: refused when empty, cut to what encoders read
            prompts[name], note = prepare_prompt(getattr(opts, name), f"--{name.replace('_', '-')}")
        except ValueError as err:
            raise CLIError(str(err)) from None
        if note:
            print(f"date-diffusion edit: note: {note}", file=sys.stderr)
    if opts.strength is not None and opts.skip is not None:
        raise CLIError("--strength and --skip both set how much is regenerated; give one")
    if opts.strength is not None and not 0 < opts.strength <= 1:
        raise CLIError(f"--strength must be in (0, 1] (the fraction of steps regenerated), got {opts.strength}")
    if opts.model.scheduler is not None:
        raise CLIError("edit runs its editor's own schedule (DDIM steps for DDPM inversion, the model's flow-matching "
                       "Euler steps for FlowEdit): leave --scheduler out")  # fmt: skip
    return replace(opts, **prompts)


def edit_plan(opts: EditOptions, family: str) -> EditOptions:
    """--steps, --skip (or --strength), --cfg-src, --cfg-tar and FlowEdit's --n-min and --n-avg, the family's
    defaults where not given (a new `EditOptions`), checked as `pipe.edit` checks them (`editing.plan.edit_plan`)."""
    from date_diffusion.editing.plan import EditArguments
    from date_diffusion.editing.plan import edit_plan as plan_of

    if family not in EDIT_DEFAULTS:
        raise CLIError(f"{family} has no editor; edit runs on {', '.join(EDIT_DEFAULTS)}")
    defaults = EDIT_DEFAULTS[family]
    flow = [flag for flag, value in (("--n-min", opts.n_min), ("--n-avg", opts.n_avg)) if value is not None]
    if flow and defaults.editor != "flowedit":
        raise CLIError(f"{' and '.join(flow)}: FlowEdit's ({FLOWEDIT_FAMILIES}); {family} edits by DDPM inversion: "
                       f"leave {'them' if len(flow) > 1 else 'it'} out")  # fmt: skip
    steps, skip = opts.steps if opts.steps is not None else defaults.steps, opts.skip
    if opts.strength is not None:  # the skip it means, counted as pipe.edit counts it
        try:
            skip = plan_of(defaults, EditArguments(steps, strength=opts.strength)).skip
        except ValueError:
            raise CLIError(f"--strength {opts.strength} regenerates no step of {steps}; give at least "
                           f"{1 / steps:.3g}") from None  # fmt: skip
    opts = replace(opts, editor=defaults.editor, steps=steps,
                   skip=skip if skip is not None else defaults.skip_for(steps),
                   cfg_src=opts.cfg_src if opts.cfg_src is not None else defaults.cfg_src,
                   cfg_tar=opts.cfg_tar if opts.cfg_tar is not None else defaults.cfg_tar)  # fmt: skip
    if not 0 <= opts.skip < opts.steps:
        raise CLIError(f"--skip must be in [0, {opts.steps - 1}], got {opts.skip}")
    if defaults.editor == "flowedit":
        opts = replace(opts, n_min=opts.n_min or 0, n_avg=1 if opts.n_avg is None else opts.n_avg)
        if opts.n_min > opts.steps - opts.skip:
            regenerated = opts.steps - opts.skip
            raise CLIError(f"--n-min must be in [0, {regenerated}] (the regenerated steps), got {opts.n_min}")
    try:  # pipe.edit's own checks, so that it refuses nothing once the model has loaded
        plan_of(defaults, EditArguments(opts.steps, opts.skip, opts.cfg_src, opts.cfg_tar, **flowedit_args(opts)))
    except ValueError as err:
        raise CLIError(str(err)) from err
    return opts


def flowedit_args(opts: EditOptions) -> dict:
    """FlowEdit's `n_min` and `n_avg` for `pipe.edit`; none for the DDPM-inversion families (it refuses them)."""
    return {"n_min": opts.n_min, "n_avg": opts.n_avg} if opts.editor == "flowedit" else {}


def check_loaded(opts: EditOptions, pipe) -> None:
    """What depends on the loaded model, before any folder or file is made: the step count the editor's scheduler
    takes (DDPM inversion: DDIM steps on the model's training schedule; FlowEdit: the model's own scheduler)."""
    from date_diffusion.schedulers import check_steps_fit

    scheduler = None  # FlowEdit: the model's own
    if opts.editor == "ddpm":
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # as editing/ddpm_inversion.py builds it
    try:
        check_steps_fit(pipe, opts.steps, "--steps", opts.height, opts.width, scheduler=scheduler)
    except ValueError as err:
        raise CLIError(str(err)) from err


def run(args) -> int:
    opts = check_options(EditOptions.from_args(args))  # the one read of the namespace
    loading = model_kwargs(opts.model)
    model = resolve_model(opts.model.name)
    family = resolve_from_args(model, opts.date.overrides(), opts.model.family, opts.date.paper_defaults).family
    typed_cfg = [name for name in ("cfg_src", "cfg_tar") if getattr(opts, name) is not None]  # the family's otherwise
    opts = edit_plan(opts, family)
    # DATE acts on the regenerated steps: steps - skip loop indices
    flags = {**opts.date.overrides(), "num_inference_steps": opts.steps - opts.skip}
    settings = resolve_from_args(model, flags, opts.model.family, paper_defaults=opts.date.paper_defaults)
    out = Path(opts.out)
    if not settings.active:  # as generate says it: never an edit labelled DATE that DATE did not touch
        print(f"date-diffusion edit: note: DATE cannot move the embedding with these settings ({CANNOT_ACT}); the "
              "DATE edit is the plain edit and is recorded as method 'fixed'", file=sys.stderr)  # fmt: skip
    from date_diffusion.evaluation.methods import settings_without_effect

    unused = settings_without_effect(settings)  # DATE settings given that change no edit: said, as generate says them
    say_without_effect("edit", unused)
    _check_input_kept(opts)
    opts, pipe, image, reward = load(opts, settings, loading)
    check_loaded(opts, pipe)
    # a negative prompt neither guidance reads (both at 1 or less): said and recorded, as generate does
    unread = pipe.applied_settings(max(opts.cfg_src, opts.cfg_tar), opts.negative_prompt).get("without_effect", {})
    unread = {k: v for k, v in unread.items() if k == "negative_prompt"}
    if unread:
        say_unused("edit", "--negative-prompt", unread["negative_prompt"]["why"])
    for name in typed_cfg:  # a guidance of 1 or less typed: no guidance runs on that branch (as generate says it)
        why = pipe.settings_without_effect(getattr(opts, name)).get("guidance_scale")
        if why:
            unread[name] = {"value": getattr(opts, name), "why": why}
            say_unused("edit", f"--{name.replace('_', '-')} {spelled_as_read(getattr(opts, name))}", why)
    with output_dir(out):  # created once the model has loaded and every check has passed
        files, dated = edit_three(opts, pipe, image, settings.date, reward)
    meta = record(opts, settings, files, dated.traces[0])
    for name in unread:  # a setting without effect is not stated as applied: null, named under without_effect
        meta[name] = None
        if name == "cfg_tar":
            meta["guidance_scale"] = None
    if unread or unused:
        meta.update(without_effect={**unread, **unused})
    # an edit DATE did not move (a step size of 0, every gradient zero) is the plain edit, recorded as such
    meta["method"] = "date" if settings.active and moved(meta["trace"]) else "fixed"
    from date_diffusion.grids import date_label, final_rewards, knows_line, shown_verdicts, verdict_lines

    edits = {"plain": files["plain"], "date": files["date"]}
    meta["final_reward"] = final_rewards(reward, edits, opts.target_prompt)  # the same quantity for both edits
    written = write_edit(out, opts, files, meta)
    for label, path in written:
        print(f"{label}: {path}")
    final, label = meta["final_reward"], date_label(meta["method"])
    print(f"  reward of the finished edits ({settings.reward}): plain {final['plain']:.4f}, {label} "
          f"{final['date']:.4f} ({final['date'] - final['plain']:+.4f} vs plain edit)")  # fmt: skip
    knows = knows_line(meta.get("evaluator", {}))
    for line in [*verdict_lines(shown_verdicts(meta, meta.get("evaluator", {}))), *([knows] if knows else [])]:
        print(f"  {line}")
    return 0


def _check_input_kept(opts: EditOptions) -> None:
    """`--overwrite` never replaces the image being edited (an output of the same name in --out), nor a name that
    is not a file (a folder of that name would fail the write once the edit is done)."""
    if not opts.overwrite:
        return  # a taken name gets -2, -3, ...
    stem = output_stem(opts.target_prompt, opts.seed)
    paths = [Path(opts.out) / f"{stem}{name}" for name in EDIT_SUFFIXES]
    for path in paths:
        if path.exists() and os.path.samefile(path, opts.image):
            raise CLIError(f"--overwrite would replace {str(path)!r}, the image being edited: give another --out, "
                           "or leave out --overwrite (the edit's files then get a name of their own)")  # fmt: skip
    check_overwrite(opts.out, [(stem, opts.target_prompt, opts.seed)], EDIT_SUFFIXES, EDIT_SUFFIXES,
                    "the edit's files then get a name of their own")  # fmt: skip


def load(opts: EditOptions, settings, loading: dict):
    """The options at the edit's size (--height and --width, else the model's), the pipeline (dtype, LoRAs, offload
    as generate loads it), the input image at that size, the reward."""
    from diffusers.utils import logging as diffusers_logging
    from PIL import Image

    from date_diffusion.outputs import open_rgb
    from date_diffusion.pipelines import load_date_pipeline

    diffusers_logging.disable_progress_bar()  # the command prints its own lines, as generate
    device = resolve_device(opts.model.device)
    if opts.model.offload and device == "cpu":
        raise CLIError("--offload moves models between the CPU and an accelerator; with --device cpu leave it out")
    try:
        pipe = load_date_pipeline(settings.model, opts.model.dtype, device, None, **loading)
    except ValueError as err:  # unreadable single file, LoRA for another model, ...
        raise CLIError(str(err)) from err
    check_negative_prompt(pipe, opts.negative_prompt)
    pipe.set_progress_bar_config(disable=True)
    size = pipe.default_image_size()
    opts = replace(opts, height=opts.height or size, width=opts.width or size)
    given = open_rgb(opts.image)
    (w, h), (tw, th) = given.size, (opts.width, opts.height)
    if abs(w / h - tw / th) > 0.01 * tw / th or max(tw / w, th / h) > 2:  # said, never done without a word
        how = "stretched to another aspect ratio" if abs(w / h - tw / th) > 0.01 * tw / th else "enlarged"
        print(f"date-diffusion edit: note: IMAGE {str(opts.image)!r} is {w}x{h}; the edit reads it resized to "
              f"{tw}x{th} ({how}, up to {max(tw / w, th / h):.3g} times a side); give --height/--width to "
              "choose the size", file=sys.stderr)  # fmt: skip
    image = given.resize((tw, th), Image.Resampling.BICUBIC)  # any mode, bit depth
    return opts, pipe, image, load_reward(settings.reward, device, settings.reward_named_by)


def edit_three(opts: EditOptions, pipe, image, date, reward):
    """The reconstruction (source prompt, no DATE), the plain edit and the DATE edit, from one seed."""
    import torch

    def run_edit(target, cfg_tar, cfg):
        return pipe.edit(
            image,
            opts.source_prompt,
            target,
            num_inference_steps=opts.steps,
            skip=opts.skip,
            cfg_src=opts.cfg_src,
            cfg_tar=cfg_tar,
            negative_prompt=opts.negative_prompt,
            generator=torch.Generator().manual_seed(opts.seed),
            date=cfg,
            reward=reward if cfg is not None else None,
            **flowedit_args(opts),
        )

    recon = run_edit(opts.source_prompt, opts.cfg_src, None).images[0]
    plain = run_edit(opts.target_prompt, opts.cfg_tar, None).images[0]
    dated = run_edit(opts.target_prompt, opts.cfg_tar, date)
    return {"input": image, "reconstruction": recon, "plain": plain, "date": dated.images[0]}, dated


def record(opts: EditOptions, settings, files: dict, trace: dict) -> dict:
    """What the edit's record and PNGs state (with the exact evaluator's verdicts on the toy world)."""
    import numpy as np

    from date_diffusion import __version__
    from date_diffusion.toyworld import world

    recon, image = (np.asarray(files[k], float) for k in ("reconstruction", "input"))
    meta = {
        "image": str(opts.image),
        "source_prompt": opts.source_prompt,
        "target_prompt": opts.target_prompt,
        "prompt": opts.target_prompt,
        "negative_prompt": opts.negative_prompt,
        "model": settings.model,
        "family": settings.family,
        "editor": opts.editor,
        "dtype": opts.model.dtype,
        "loras": list(opts.model.loras),
        "height": opts.height,
        "width": opts.width,
        "steps": opts.steps,
        "skip": opts.skip,
        "strength": opts.strength,
        **flowedit_args(opts),
        "cfg_src": opts.cfg_src,
        "cfg_tar": opts.cfg_tar,
        "guidance_scale": opts.cfg_tar,
        "seed": opts.seed,
        "reward": settings.reward,
        "date": settings.date.to_dict(),
        "sources": {k: v for k, v in settings.sources.items() if k not in ("num_inference_steps", "guidance_scale")},
        "trace": trace,
        "reconstruction_max_abs_diff": float(np.abs(recon - image).max() / 255),
        "date_diffusion_version": __version__,
    }
    judge = world.judge_for(settings.model)
    if judge is not None:
        meta["evaluator"] = {k: judge(files[k], opts.target_prompt) for k in ("plain", "date")}
    return meta


# what each image `edit` writes is (its record's `image`, which `info` shows); only the DATE edit's record holds
# DATE's settings and updates, the reconstruction's its source prompt and guidance
EDIT_IMAGES = {
    "input": "the picture given to edit, at the edit's size",
    "reconstruction": "the picture regenerated from its inversion with the source prompt, without DATE",
    "plain": "the edit without DATE",
    "date": "the edit with DATE",
    "grid": "the grid of the edit's images",
}
EDIT_SUFFIXES = (".json", *(f"-{name}.png" for name in EDIT_IMAGES))  # the files of one edit, after its stem
_NO_DATE = {"date": None, "trace": None, "reward": None, "final_reward": None, "evaluator": None}


def image_record(meta: dict, name: str, opts: EditOptions) -> dict:
    """The record of the edit's image `name` (`EDIT_IMAGES`): the edit's, with what that image is and was made
    with; DATE's settings and updates only on the DATE edit (and the grid, which shows it)."""
    rec = {**meta, "method": {"plain": "fixed", "date": meta["method"]}.get(name, name), "image": name}
    if name in ("input", "reconstruction"):
        rec.update(_NO_DATE, prompt=opts.source_prompt, guidance_scale=meta["cfg_src"])
    elif name == "plain":
        rec.update(_NO_DATE)
    return rec


def write_edit(out: Path, opts: EditOptions, files: dict, meta: dict) -> list[tuple[str, Path]]:
    """Every image, the grid and the record under a name not taken yet (unless --overwrite), as one group
    (`outputs.file_group`: all appear together, the record last, or none); returns (what, path) of every file."""
    from date_diffusion.grids import grid_label
    from date_diffusion.outputs import claimed_stem, file_group, png_bytes

    names = tuple(EDIT_IMAGES)
    with (
        claimed_stem(out, output_stem(opts.target_prompt, opts.seed), EDIT_SUFFIXES, opts.overwrite) as stem,
        file_group(own_only=True) as group,
    ):  # fmt: skip
        grid, panels = edit_grid(files, meta)
        written = []
        for name, img in {**files, "grid": grid}.items():
            rec = image_record(meta, name, opts)
            rec.update({"panels": panels} if name == "grid" else {})
            label = f"grid ({grid_label(panels)})" if name == "grid" else f"{name} image"
            group.write(out / f"{stem}-{name}.png", png_bytes(img, rec))
            written.append((label, out / f"{stem}-{name}.png"))
        group.write(out / f"{stem}.json", json.dumps({**meta, "files": [f"{stem}-{n}.png" for n in names]}, indent=1))
    return [*written, ("record", out / f"{stem}.json")]


def edit_grid(files: dict, meta: dict):
    """(grid, panel records): input | plain edit | DATE edit under headers (verdicts on the target prompt, each
    edit's reward, the DATE edit's with its difference to the plain one, the distance moved), with their amplified
    difference where the two edits differ little."""
    from date_diffusion.grids import compare_grid, date_label, panel

    verdicts, rewards = meta.get("evaluator", {}), meta.get("final_reward") or {}
    shown = [
        panel(files["input"], "input"),
        panel(files["plain"], "plain edit", verdicts.get("plain"), reward=rewards.get("plain")),
        panel(
            files["date"],
            f"{date_label(meta.get('method', 'date'))} edit",
            verdicts.get("date"),
            meta["trace"],
            rewards.get("date"),
        ),
    ]
    return compare_grid(shown, difference_of=(1, 2))
