"""`date-diffusion toyworld ...`: train the toy world's models."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from date_diffusion.cli.common import HelpFormatter

# torch and the training code are imported inside the functions that need them: see cli/__init__.py

TOYWORLD_EXAMPLES = """examples:
  date-diffusion toyworld train --out runs/toyworld
  date-diffusion toyworld export --from runs/toyworld --guidance 5 --rho 0.5 --update-every 10 --dest my-toyworld
  date-diffusion toyworld audit runs/toy --out audit.json"""
TRAIN_EXAMPLES = """examples:
  date-diffusion toyworld train --out runs/toyworld                   # about 3 CPU-hours; re-run to resume
  date-diffusion toyworld train --out runs/toyworld --device cuda
  date-diffusion toyworld train --out runs/smoke --smoke              # a few steps of each stage: checks the recipe"""
FINALIZE_EXAMPLES = """examples:
  date-diffusion toyworld finalize --out runs/toyworld    # runs/toyworld/pipeline from the latest UNet checkpoint"""
AUDIT_EXAMPLES = """examples:
  date-diffusion toyworld audit runs/toy
  date-diffusion toyworld audit runs/toy --out audit.json"""
EXPORT_EXAMPLES = """examples:
  date-diffusion toyworld export --from runs/toyworld --guidance 5 --rho 0.5 --update-every 10 --dest my-toyworld
  date-diffusion toyworld export --from runs/toyworld --guidance 5 --rho 0.5 --update-every 10 --into-package

Then `date-diffusion generate PROMPT --model my-toyworld/pipeline` samples with the exported world."""


def add_parser(sub):
    p = sub.add_parser(
        "toyworld",
        help="the toy world: train, audit and export its models and judges",
        epilog=TOYWORLD_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    tsub = p.add_subparsers(dest="toy_command", required=True)
    t = tsub.add_parser(
        "train", help="train every toy-world model (resumable)", epilog=TRAIN_EXAMPLES, formatter_class=HelpFormatter
    )
    t.add_argument("--out", required=True, help="output folder (re-running resumes from its checkpoints)")
    t.add_argument("--seed", type=int, default=0, help="seed of the training data and initial weights")
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    t.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    t.add_argument("--smoke", action="store_true", help="a few steps of each stage on a few images (CI)")
    t.add_argument(
        "--unet-stop-at",
        type=int,
        default=None,
        help="stop the UNet at this step (the shipped model: see toyworld.json); the LR schedule stays "
        "that of the full run",
    )
    fz = tsub.add_parser(
        "finalize",
        help="assemble the pipeline from the UNet's latest checkpoint (EMA weights)",
        epilog=FINALIZE_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    fz.add_argument("--out", required=True, help="the --out folder of `toyworld train`")
    fz.set_defaults(func=run_finalize)
    t.set_defaults(func=run_train)

    a = tsub.add_parser(
        "audit",
        help="compare the exact evaluator with an independent second reader on a bench run's images",
        epilog=AUDIT_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    a.add_argument("run_dir", help="a `bench` run directory on the toy world")
    a.add_argument("--out", default=None, help="write the full audit (every disagreement) as JSON here")
    a.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    a.set_defaults(func=run_audit)

    _add_export_parser(tsub)
    from date_diffusion.cli.toyworld_judge import add_judge_parser

    add_judge_parser(tsub)
    return p


def _add_export_parser(tsub):
    x = tsub.add_parser(
        "export",
        help="copy a finished training run into the package as the shipped toy world",
        epilog=EXPORT_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    x.add_argument("--from", dest="run_dir", required=True, help="the --out folder of `toyworld train`")
    x.add_argument("--guidance", type=float, required=True, help="recommended guidance scale (chosen by a sweep)")
    x.add_argument("--rho", type=float, required=True, help="recommended rho (chosen on validation prompts)")
    x.add_argument("--update-every", type=int, required=True, help="recommended update_every")
    where = x.add_mutually_exclusive_group(required=True)
    where.add_argument("--dest", default=None, help="the folder to write the toy world's models into")
    where.add_argument(
        "--into-package",
        action="store_true",
        help="replace the toy world shipped inside the installed package (the current one is kept as a backup)",
    )
    x.set_defaults(func=run_export)


def run_train(args) -> int:
    import torch

    from date_diffusion.cli.common import CLIError, resolve_device
    from date_diffusion.schemas import SchemaError
    from date_diffusion.toyworld.training.config import TrainConfig
    from date_diffusion.toyworld.training.recipe import train_all

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cfg = (TrainConfig.smoke if args.smoke else TrainConfig)(out=args.out, seed=args.seed, device=device)
    cfg.unet_stop_at = args.unet_stop_at
    if cfg.unet_stop_at is not None and cfg.unet_stop_at >= cfg.unet_steps:  # the run ends there anyway
        raise CLIError(f"--unet-stop-at {cfg.unet_stop_at} is not before the UNet's last step ({cfg.unet_steps} "
                       "steps): it would stop nothing; give a smaller step, or leave it out")  # fmt: skip
    try:
        timings = train_all(cfg)
    except SchemaError as err:  # a folder trained with other settings, a damaged checkpoint: named, nothing trained
        raise CLIError(str(err)) from err
    print(json.dumps(timings, indent=1))
    return 0


def run_export(args) -> int:
    from date_diffusion.cli.common import CLIError
    from date_diffusion.core.config import DATEConfig
    from date_diffusion.toyworld import world
    from date_diffusion.toyworld.training.export import export

    try:
        DATEConfig(rho=args.rho, update_every=args.update_every)  # validates both
    except ValueError as err:
        raise CLIError(str(err)) from err
    recommended = {"guidance_scale": args.guidance, "rho": args.rho, "update_every": args.update_every}
    dest = world.ASSETS if args.into_package else Path(args.dest)
    try:
        export(Path(args.run_dir), dest, recommended, backup=args.into_package)
    except (ValueError, FileNotFoundError) as err:
        raise CLIError(f"nothing exported: {err}") from err
    print(f"exported {args.run_dir} -> {dest} with {recommended}")
    return 0


def run_finalize(args) -> int:
    from date_diffusion.cli.common import CLIError
    from date_diffusion.toyworld.training.assemble import finalize_from_checkpoint
    from date_diffusion.toyworld.training.config import trained_config

    if not (Path(args.out) / "work" / "config.json").is_file():  # its checkpoints and models live under work/
        raise CLIError(f"--out {args.out!r} is not a `toyworld train` folder (no work/config.json): give the --out "
                       "folder of `date-diffusion toyworld train`")  # fmt: skip
    finalize_from_checkpoint(trained_config(args.out))  # the folder's own settings: its stages are checked as its
    print(f"assembled {Path(args.out) / 'pipeline'} from the latest UNet checkpoint")
    return 0


def run_audit(args) -> int:
    import numpy as np
    from PIL import Image

    from date_diffusion.bench.runner import PNG_LIMIT, SettingsMismatch, audited_images
    from date_diffusion.cli.common import CLIError
    from date_diffusion.schemas import not_a_file
    from date_diffusion.toyworld import evaluator
    from date_diffusion.toyworld.scene import PromptSpec
    from date_diffusion.toyworld.second_reader import audit

    run = Path(args.run_dir)
    if args.out and os.path.lexists(args.out) and not args.overwrite:  # an earlier audit is never replaced silently
        raise CLIError(f"--out {args.out!r} exists: give another file, or --overwrite to replace it")
    if not (run / "run.json").exists() and not (run / "run.json").is_symlink():
        raise CLIError(f"{run} is not a bench run (no run.json): give a `bench --suite toy...` run directory")
    try:
        trusted, damaged = audited_images(run)  # the images the report trusts; every other file named, skipped
    except (SettingsMismatch, ValueError) as err:
        raise CLIError(str(err)) from err
    cases = []
    for png, rec in trusted:
        if rec.get("spec") is None:
            continue
        try:
            why = not_a_file(png, PNG_LIMIT)  # never a FIFO or a device read as an image (replaced since the check)
            if why:
                raise OSError(f"{png} is {why}")
            image = np.asarray(Image.open(png).convert("RGB"))
        except OSError as err:
            damaged.append(str(err))
            continue
        cases.append((image, PromptSpec.from_json(rec["spec"]), str(png.relative_to(run).with_suffix(""))))
    for line in damaged:
        print(f"date-diffusion toyworld audit: skipped: {line}", file=sys.stderr)
    if not cases:
        raise CLIError(f"{run} holds no toy-world images (a `bench --suite toy...` run directory is needed)")
    result = {**audit(cases, evaluator.detect, evaluator.evaluate), "damaged": damaged}
    if args.out:
        from date_diffusion.outputs import atomic_write

        atomic_write(Path(args.out), json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("disagreements", "damaged")}, indent=1))
    print(f"{len(result['disagreements'])} images where the readers differ" + (f": {args.out}" if args.out else ""))
    return 0
