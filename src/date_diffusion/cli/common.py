"""Pieces shared by the CLI's commands: errors, DATE options, rewards, devices."""

from __future__ import annotations

import argparse


class CLIError(Exception):
    """A user error: printed as one line, exit code 2, no traceback."""


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err


def str_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def add_date_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("DATE (paper defaults)")
    g.add_argument(
        "--rho",
        type=float,
        default=None,
        help="update distance per sample (Frobenius norm); default 0.5, or the toy world's tuned value",
    )
    sched = g.add_mutually_exclusive_group()
    sched.add_argument(
        "--update-every",
        type=int,
        default=None,
        help="update at loop indices i %% N == 0 (default 10, or the toy world's tuned value)",
    )
    sched.add_argument("--update-steps", type=int_list, default=None, help="explicit loop indices, e.g. 0,10,20")
    g.add_argument("--grad-steps", type=int, default=1, help="gradient steps per update step")
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

    defaults = defaults or {}
    rho = args.rho if args.rho is not None else defaults.get("rho", 0.5)
    kwargs = dict(rho=rho, grad_steps=args.grad_steps, anchor=args.anchor, prior_weight=args.prior_weight)
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
    for field in ("update_every", "update_steps", "grad_steps", "prior_weight", "rho"):
        if message.startswith(field):
            message = "--" + field.replace("_", "-") + message[len(field) :]
    return CLIError(message)


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
    return name
