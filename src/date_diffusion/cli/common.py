"""Pieces shared by the CLI's commands: errors, DATE options, rewards, devices."""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from date_diffusion.core.settings import SETTINGS, SettingError
from date_diffusion.families import FAMILIES, NAMES, PAPER_REWARD

# torch, the resolver and the rewards are imported inside the functions that need them: see cli/__init__.py


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written; an option's default shown once, when its help does not say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


class CLIError(Exception):
    """A user error: printed as one line, exit code 2, no traceback."""


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


def family_help() -> str:
    """The per-family defaults, from the family table."""
    from date_diffusion.families import FAMILIES

    paper = [f"{f.name} {f.sampling['num_inference_steps']} steps / guidance {f.sampling['guidance_scale']:g}"
             for f in FAMILIES if f.sampling]  # fmt: skip
    stock = [f.name for f in FAMILIES if not f.sampling]
    return (
        "Steps and guidance default to the model's recommendation (the toy world's), else the paper's where the "
        f"paper ran the family ({', '.join(paper)}), else the stock diffusers pipeline's ({', '.join(stock)}); "
        "the size to the model's own."
    )


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=None,
        help=f"a diffusers folder or hub id ({', '.join(f.title for f in FAMILIES)}) or a single checkpoint "
        "file (.safetensors / .ckpt); default: the shipped toy world",
    )
    g.add_argument(
        "--family",
        choices=NAMES,
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
        help="weights' precision; auto: float16 on CUDA (bfloat16 for "
        + " / ".join(f.title for f in FAMILIES if f.bf16)
        + " where supported), else float32",
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
    try:
        loras = [parse_lora(spec) for spec in args.lora]
    except SettingError as err:
        raise CLIError(f"--lora: {err}") from err
    for path, _ in loras:
        if not Path(path).is_file():
            raise CLIError(f"--lora {path!r}: no such file (give FILE or FILE:SCALE)")
    return dict(family=args.family, config=args.config, loras=loras, offload=args.offload)


SAMPLING_FLAGS = {"num_inference_steps": "--steps", "guidance_scale": "--guidance", "reward": "--reward"}
FLAGS = {**{s.field: s.flag for s in SETTINGS}, **SAMPLING_FLAGS}  # setting -> the flag errors name


def add_date_arguments(p: argparse.ArgumentParser, reward_help: str = "what DATE raises") -> None:
    """--paper-defaults, --reward and one flag per DATE setting (`core/settings.py`); unset flags resolve to the
    model's recommendation, else the paper's (`resolver.resolve_settings`)."""
    from date_diffusion.core.config import PAPER_RHO, PAPER_UPDATE_EVERY, DATEConfig
    from date_diffusion.rewards.registry import SPEC_HELP
    from date_diffusion.toyworld import world

    g = p.add_argument_group("DATE (defaults: the model's recommended setting, else the paper's)")
    g.add_argument(
        "--paper-defaults",
        action="store_true",
        help="ignore the model's recommended DATE setting and reward: the paper's algorithm (rho "
        f"{PAPER_RHO}, every {PAPER_UPDATE_EVERY}th step, the plain reward) unless flags say otherwise",
    )
    g.add_argument(
        "--reward",
        default=None,
        help=f"{reward_help}: {SPEC_HELP} (default: the model's recommended reward, else the toy world's "
        f"{world.PLAIN_REWARD} on the toy world and the paper's {PAPER_REWARD} elsewhere)",
    )
    for setting in SETTINGS:
        paper = DATEConfig.__dataclass_fields__[setting.field].default
        shown = "" if paper is None else f"paper: {setting.kind.format(paper)}"
        g.add_argument(
            setting.flag,
            default=None,
            metavar=setting.kind.metavar,
            help=f"{setting.help} ({'; '.join(filter(None, [setting.kind.describe(), shown]))})".replace("%", "%%"),
        )


def date_overrides(args) -> dict:
    """The DATE settings and reward the flags give (None: not given), as `resolve_settings` takes them."""
    return {**{s.field: getattr(args, s.dest) for s in SETTINGS}, "reward": args.reward}


def resolve_from_args(model: str, overrides: dict, family=None, paper_defaults=False, check_reward=True):
    """`resolver.resolve_settings` for what the flags give (`overrides`, None = not given); a bad value is a usage
    error naming its flag."""
    from date_diffusion.resolver import resolve_settings

    try:
        return resolve_settings(
            model, family=family, paper_defaults=paper_defaults, names=FLAGS, check_reward=check_reward, **overrides
        )
    except (SettingError, FileNotFoundError) as err:  # a value out of range, a malformed reward: named already
        raise CLIError(str(err)) from err
    except ValueError as err:  # a model whose family cannot be told
        raise CLIError(f"--model {model!r}: {err}") from err


def load_reward(spec: str, device: str):
    """`rewards.registry.reward_from_spec`, with a malformed spec reported as a usage error."""
    from date_diffusion.rewards.registry import RewardSpecError, reward_from_spec

    try:
        return reward_from_spec(spec, device)
    except RewardSpecError as err:
        raise CLIError(str(err)) from err


def resolve_model(model: str | None) -> str:
    from date_diffusion.resolver import default_model

    if model is not None:
        return model
    try:
        return default_model()
    except FileNotFoundError as err:
        raise CLIError(f"{err} (--model ID_OR_PATH)") from err


def check_output_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as err:
        raise CLIError(f"--out {str(out)!r} is not writable ({err.strerror or err}); choose another folder") from err


def slug(text: str, n: int = 60) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:n] or "prompt"


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
