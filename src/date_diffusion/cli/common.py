"""Pieces shared by the CLI's commands: errors, DATE options, rewards, devices."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written; an option's default shown once, when its help does not say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


class CLIError(Exception):
    """A user error: printed as one line, exit code 2, no traceback."""


MAX_STEPS = 1000  # every supported family is trained on 1000 timesteps; schedulers refuse more


def check_seed(seed: int) -> None:
    """Seeds are what torch generators accept."""
    if not 0 <= seed < 2**63:
        raise CLIError(f"--seed must be in [0, 2**63), got {seed}")


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err


def str_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


FAMILY_HELP = (
    "Per-family defaults (--steps / --guidance / size), from the paper where it ran the family, else the stock "
    "diffusers pipeline: sd 50 / 8 / 512 (768 for SD 2.x), sdxl 50 / 5 / 1024, sd3 28 / 7 / 1024, "
    "flux 28 / 3.5 / 1024, pixart 20 / 4.5 / 1024; the toy world 50 / 5 / 64."
)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=None,
        help="a diffusers folder or hub id (SD 1.x/2.x, SDXL, SD3, FLUX, PixArt-alpha) or a single checkpoint "
        "file (.safetensors / .ckpt); default: the shipped toy world",
    )
    g.add_argument(
        "--family",
        choices=["sd", "sdxl", "sd3", "flux", "pixart"],
        default=None,
        help="the model family of a single checkpoint file (default: detected from its keys)",
    )
    g.add_argument(
        "--config",
        default=None,
        help="single files: the diffusers folder or hub id whose configs and tokenizers complete the file "
        "(default: the family's reference repository, as diffusers picks it)",
    )
    g.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="FILE[:SCALE]",
        help="a LoRA file to apply, with its scale (default 1); repeat for several",
    )
    g.add_argument(
        "--offload",
        choices=["model", "sequential"],
        default=None,
        help="diffusers' CPU offload to fit large models on small GPUs (model: whole models, sequential: layers)",
    )
    g.add_argument(
        "--dtype",
        choices=["auto", "float32", "float16", "bfloat16"],
        default="auto",
        help="weights' precision; auto: float16 on CUDA (bfloat16 for SD3 / FLUX where supported), else float32",
    )
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when available)")
    g.add_argument("--scheduler", default=None, help="a scheduler name (default: the model's own)")


def model_kwargs(args) -> dict:
    """Keyword arguments of `load_date_pipeline` from the model flags (checked: files exist, LoRA scales parse)."""
    from pathlib import Path

    from date_diffusion.pipelines.loading import is_single_file, parse_lora

    if args.model is not None and is_single_file(args.model) and not Path(args.model).is_file():
        raise CLIError(f"--model {args.model!r}: no such checkpoint file")
    if (args.family or args.config) and not (args.model and is_single_file(args.model)):
        raise CLIError("--family and --config apply to a single checkpoint file given with --model FILE")
    loras = [parse_lora(spec) for spec in args.lora]
    for path, _ in loras:
        if not Path(path).is_file():
            raise CLIError(f"--lora {path!r}: no such file (give FILE or FILE:SCALE)")
    return dict(family=args.family, config=args.config, loras=loras, offload=args.offload)


def add_date_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("DATE (defaults: the model's recommended setting, else the paper's)")
    g.add_argument(
        "--paper-defaults",
        action="store_true",
        help="ignore the model's recommended DATE setting: the paper's algorithm (rho 0.5, every 10th step, "
        "the plain reward) unless flags say otherwise",
    )
    g.add_argument(
        "--rho",
        type=float,
        default=None,
        help="update distance per sample (Frobenius norm); default 0.5, or the toy world's tuned value",
    )
    g.add_argument(
        "--rho-relative",
        type=float,
        default=None,
        help="scale-free step instead of --rho: each update moves this fraction of the prompt embedding's norm "
        "(paper's rho 0.5 on SD 1.5 = 0.002)",
    )
    sched = g.add_mutually_exclusive_group()
    sched.add_argument(
        "--update-every",
        type=int,
        default=None,
        help="update at loop indices i %% N == 0 (default 10, or the toy world's tuned value)",
    )
    sched.add_argument("--update-steps", type=int_list, default=None, help="explicit loop indices, e.g. 0,10,20")
    g.add_argument("--grad-steps", type=int, default=None, help="gradient steps per update step (default 1)")
    g.add_argument(
        "--anchor",
        choices=["previous", "original"],
        default="previous",
        help="previous: accumulate updates (reference); original: re-anchor to the prompt embedding",
    )
    g.add_argument("--prior-weight", type=float, default=0.0, help="weight of mean((c - c_org)^2) in the loss")


def date_config_from_args(args, defaults: dict | None = None):
    """DATEConfig from the flags; unset flags take the model's recommended `defaults`, then the paper's."""
    from date_diffusion.core.config import DATEConfig

    defaults = {} if getattr(args, "paper_defaults", False) else (defaults or {})
    relative = getattr(args, "rho_relative", None)
    if relative is not None and args.rho is not None:
        raise CLIError("give only one of --rho and --rho-relative")
    if relative is not None:
        step = dict(rho_relative=relative)
    elif args.rho is None and "rho_relative" in defaults:
        step = dict(rho_relative=defaults["rho_relative"])
    else:
        step = dict(rho=args.rho if args.rho is not None else defaults.get("rho", 0.5))
    grad_steps = args.grad_steps if args.grad_steps is not None else defaults.get("grad_steps", 1)
    kwargs = dict(**step, grad_steps=grad_steps, anchor=args.anchor, prior_weight=args.prior_weight)
    if args.update_steps is not None:
        kwargs["update_steps"] = args.update_steps
    elif args.update_every is not None or "update_every" in defaults:
        kwargs["update_every"] = args.update_every if args.update_every is not None else defaults["update_every"]
    try:
        return DATEConfig(**kwargs)
    except ValueError as err:
        raise flag_error(err) from err


def flag_error(err: ValueError) -> CLIError:
    """A DATEConfig error that names the command-line flag instead of the field."""
    message = str(err)
    for field in ("update_every", "update_steps", "grad_steps", "prior_weight", "rho_relative", "rho"):
        if message.startswith(field):
            message = "--" + field.replace("_", "-") + message[len(field) :]
    return CLIError(message)


def check_reward(spec: str) -> None:
    """A malformed reward spec is a usage error, found before any model loads."""
    from date_diffusion.rewards.registry import RewardSpecError, check_spec

    try:
        check_spec(spec)
    except RewardSpecError as err:
        raise CLIError(f"--reward {spec!r}: {err}") from err


def load_reward(spec: str, device: str):
    """`rewards.registry.reward_from_spec`, with a malformed spec reported as a usage error."""
    from date_diffusion.rewards.registry import RewardSpecError, reward_from_spec

    try:
        return reward_from_spec(spec, device)
    except RewardSpecError as err:
        raise CLIError(str(err)) from err


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CLIError(f"--device {name} requested but no CUDA device is available; use --device cpu")
    try:
        torch.device(name)
    except RuntimeError as err:
        raise CLIError(f"--device {name!r} is not a device name; use cpu, cuda, cuda:N or auto") from err
    return name
