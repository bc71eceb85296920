"""Pieces shared by the CLI's commands: errors, DATE options, rewards, devices."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from date_diffusion.core.settings import (
    DTYPES,
    MAX_BATCH,
    MAX_FRAMES,
    SAMPLING,
    SETTINGS,
    Integer,
    Kind,
    Real,
    Seed,
    SettingError,
    Size,
    Text,
    listed_twice,
    parse_integer,
)
from date_diffusion.core.text import quoted
from date_diffusion.families import FAMILIES, NAMES, PAPER_REWARD
from date_diffusion.schemas import what_is
from date_diffusion.toyworld.world import NAME as TOY

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


def checked(kind: Kind, value, name: str):
    """`kind.value(value, name)`, a bad value a usage error."""
    try:
        return kind.value(value, name)
    except SettingError as err:
        raise CLIError(str(err)) from err


def _once_each(items: list, text: str) -> list:
    """A comma list's items, each at most once: a value listed twice (`single,single`) is refused, never taken as
    one or run twice without a word."""
    twice = listed_twice(items)
    if twice:
        raise argparse.ArgumentTypeError(f"{', '.join(twice)} listed twice in {quoted(text)}: list each value once")
    return items


def int_list(text: str) -> list[int]:
    """`1,2,4` -> [1, 2, 4]: integers as `parse_integer` reads them, each once."""
    try:
        items = [parse_integer(v) for v in text.split(",")]  # a blank item (`1,,2`) is a slip, not nothing
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {quoted(text)}") from err
    return _once_each(items, text)


def str_list(text: str) -> list[str]:
    """`a,b` -> ['a', 'b'], each once; a blank item (`a,,b`, `a,`) is a slip, refused as the setting kinds' lists
    refuse it, not read as one item fewer."""
    items = [v.strip() for v in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"an empty item in {quoted(text)}: separate the items by single commas")
    return _once_each(items, text)


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
        f"file (.safetensors / .ckpt); default: the shipped toy world (`{TOY}`)",
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
        choices=["auto", *DTYPES],
        default="auto",
        help="weights' precision; auto: float16 on CUDA (bfloat16 for "
        + " / ".join(f.title for f in FAMILIES if f.bf16)
        + " where supported), else float32",
    )
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when available)")
    g.add_argument("--scheduler", default=None, help="a scheduler name (default: the model's own)")


def from_namespace(cls, args, **given):
    """A frozen options dataclass `cls` from an argparse namespace: each field the attribute of its name, unless
    `given` (the fields the command builds itself). The one place a command reads its namespace."""
    names = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in given]
    return cls(**given, **{name: getattr(args, name) for name in names})


@dataclass(frozen=True)
class ModelOptions:
    """The model flags (`add_model_arguments`), typed."""

    name: str | None  # --model
    family: str | None
    config: str | None
    loras: tuple[str, ...]  # --lora, each FILE[:SCALE]
    offload: str | None
    dtype: str
    device: str
    scheduler: str | None

    @classmethod
    def from_args(cls, args) -> ModelOptions:
        return from_namespace(cls, args, name=args.model, loras=tuple(args.lora))


@dataclass(frozen=True)
class DateOptions:
    """--paper-defaults, --reward and the DATE flags (`add_date_arguments`), typed; None: not given."""

    paper_defaults: bool
    reward: str | None
    values: tuple[tuple[str, object], ...]  # (DATEConfig field, value or None), one per `SETTINGS`

    @classmethod
    def from_args(cls, args) -> DateOptions:
        return cls(args.paper_defaults, args.reward, tuple((s.field, getattr(args, s.dest)) for s in SETTINGS))

    def overrides(self) -> dict:
        """The DATE settings and reward the flags give (None: not given), as `resolve_settings` takes them."""
        return {**dict(self.values), "reward": self.reward}


def model_kwargs(model: ModelOptions) -> dict:
    """Keyword arguments of `load_date_pipeline` from the model flags (checked: files exist, LoRA scales parse)."""
    from pathlib import Path

    from date_diffusion.pipelines.loading import check_lora_file, check_once_each, is_single_file, parse_lora

    if model.name is not None and is_single_file(model.name) and not Path(model.name).is_file():
        raise CLIError(f"--model {model.name!r}: no such checkpoint file")
    if (model.family or model.config) and not (model.name and is_single_file(model.name)):
        raise CLIError("--family and --config apply to a single checkpoint file given with --model FILE")
    try:
        loras = [parse_lora(spec) for spec in model.loras]
    except SettingError as err:
        raise CLIError(f"--lora: {err}") from err
    for path, _ in loras:
        if not Path(path).is_file():
            what = "a folder, not a file" if Path(path).is_dir() else "no such file"
            raise CLIError(f"--lora {path!r}: {what} (give FILE or FILE:SCALE: a LoRA's .safetensors file)")
        try:
            check_lora_file(path)
        except ValueError as err:
            raise CLIError(f"--lora: {err}") from err
    try:
        check_once_each([path for path, _ in loras])
    except ValueError as err:
        raise CLIError(f"--lora: {err}") from err
    return dict(family=model.family, config=model.config, loras=loras, offload=model.offload)


SAMPLING_FLAGS = {"num_inference_steps": "--steps", "guidance_scale": "--guidance", "reward": "--reward",
                  "scheduler": "--scheduler"}  # fmt: skip
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
        f"{PAPER_RHO}, every {PAPER_UPDATE_EVERY}th step, the plain reward; on SD 1.x/2.x the paper's DDIM sampler "
        "on the model's own training schedule, whatever scheduler it ships) unless flags say otherwise",
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
    except (ValueError, OSError) as err:  # a model whose family cannot be told, or that is not there
        raise CLIError(f"--model {model!r}: {err}") from err


def say_without_effect(command: str, unused: dict) -> None:
    """A note for each DATE setting or reward given that changes no image (`evaluation.methods.settings_without_effect`:
    name -> {value, why}): said, never taken without a word, and listed under the record's `without_effect`."""
    from date_diffusion.core.text import spelled_as_read

    for name, what in unused.items():
        shown = spelled_as_read(what["value"])
        say_unused(command, f"{FLAGS.get(name, name)} {shown}", what["why"], "changes no image")


def say_unused(command: str, what: str, why: str, verb: str = "has no effect",
               listed: str = "the record lists it under without_effect") -> None:  # fmt: skip
    """The one note for a setting given that takes no effect (`what`: how it was given, `--guidance 0`): said, never
    taken without a word, with why and where the record lists it (`listed`)."""
    import sys

    print(f"date-diffusion {command}: note: {what} {verb} here: {why}; {listed}", file=sys.stderr)


def check_negative_prompt(pipe, negative_prompt: str | None) -> None:
    """`--negative-prompt` only for a family that samples with a user's negative prompt; one longer than its text
    encoder reads is said, with the words not read (diffusers says it of a prompt, not of a negative prompt)."""
    if negative_prompt is not None and not pipe.supports_negative_prompt:
        raise CLIError(f"--negative-prompt is not supported by {type(pipe).__name__}: its stock pipeline samples "
                       "without a negative prompt of the user's")  # fmt: skip
    tokenizer = getattr(pipe, "tokenizer", None)  # the one text encoder's (a second one may read further: SD3)
    if any(getattr(pipe, name, None) is not None for name in ("tokenizer_2", "tokenizer_3")):
        return
    most = getattr(tokenizer, "model_max_length", None)
    if negative_prompt is None or tokenizer is None or not isinstance(most, int) or most > 10**6:
        return
    ids = tokenizer(negative_prompt, truncation=False, add_special_tokens=True)["input_ids"]
    if len(ids) > most:
        cut = tokenizer.decode(ids[most - 1 : -1], skip_special_tokens=True)
        import warnings

        warnings.warn(
            f"--negative-prompt has {len(ids)} tokens and the text encoder reads {most}: {quoted(cut)} is not read",
            stacklevel=2,
        )  # a note of the command running (`cli.main.notes`)


def hub_named(args) -> bool:
    """Whether a command's rewards name a model of the hub by a registered name (`clip-l`, `pickscore`:
    `registry.hub_names`), given (`--reward`, `--eval-clip`) or, without `--reward`, the default reward of its
    `--model` (its folder's file's, else the paper's `clip-l`): what `hub.offline_without_network` cannot see."""
    from date_diffusion import model_folder
    from date_diffusion.perf import MODELS as PERF_MODELS
    from date_diffusion.rewards.registry import hub_names

    specs = [getattr(args, name, None) for name in ("reward", "eval_clip")]
    model = getattr(args, "model", None)
    if hasattr(args, "reward") and args.reward is None and isinstance(model, str) and model not in PERF_MODELS:
        try:
            own = model_folder.read(model)
        except (OSError, ValueError):  # a damaged file: the command names it
            own = None
        specs.append((own and (own.recommended.get("reward") or own.reward)) or PAPER_REWARD)
    return any(hub_names(spec) for spec in specs if isinstance(spec, str))


def load_reward(spec: str, device: str, named_by: str = "--reward"):
    """`rewards.registry.reward_from_spec`, with a malformed spec or a source not here reported as a usage error
    naming where the spec was given (`named_by`: the flag, or a model file's key: `Resolved.reward_named_by`)."""
    from date_diffusion.hub import ModelNotFoundError
    from date_diffusion.rewards.registry import RewardSpecError, reward_from_spec

    try:
        return reward_from_spec(spec, device)
    except (RewardSpecError, ModelNotFoundError) as err:
        raise CLIError(f"{named_by} {quoted(spec)}: {err}") from err


def resolve_model(model: str | None) -> str:
    """The model a command's --model names: `toy` is the shipped toy world, as bench-perf's --model takes it (a
    folder of that name is `./toy`); None is the default model."""
    from date_diffusion.resolver import default_model
    from date_diffusion.toyworld import world

    if model == world.NAME:
        if os.path.lexists(world.NAME):  # the name is the shipped world's: said, never taken without a word
            import warnings

            warnings.warn(f"--model {world.NAME} is the shipped toy world; {what_is_here(world.NAME)} named "
                          f"{world.NAME!r} here is not read (give ./{world.NAME} for it)", stacklevel=2)  # fmt: skip
        return str(world.PIPELINE)
    if model is not None:
        return model
    try:
        return default_model()
    except FileNotFoundError as err:
        raise CLIError(f"{err} (--model ID_OR_PATH)") from err


def what_is_here(path) -> str:
    """What the entry at `path` is, for a note (a link that leads nowhere included)."""
    from date_diffusion.schemas import what_is

    try:
        return f"the {what_is(path).removeprefix('a ')}"
    except OSError:
        return "the symbolic link"


def check_outside_runs(out, flag: str = "--out", own: bool = False) -> None:
    """A command's output (a folder or a file) is no bench run's folder nor inside one (`run.json` beside
    `images/`): files written there would be strays its report refuses to count, or would mix with its images or
    replace its records; nor a diffusers model folder nor inside one (`model_index.json`), whose files are the
    model's fingerprint. `own`: `out` is a run's own folder (`bench --out`), which may be one; never inside another.
    Checked by every output option's kind (`OutputPath`) and by `--export`'s folder. A `SettingError`."""
    path = Path(out).resolve()
    for folder in path.parents if own else (path, *path.parents):
        if (folder / "run.json").is_file() and (folder / "images").is_dir():
            raise SettingError(
                f"{flag} {str(out)!r} lies inside the bench run {str(folder)!r} (its run.json): "
                "files written there would be strays its report refuses; give a place outside it"
            )
    for folder in (path, *path.parents):
        if (folder / "model_index.json").is_file():  # a diffusers model: its files are its fingerprint
            raise SettingError(
                f"{flag} {str(out)!r} lies inside the model folder {str(folder)!r} (its model_index.json): files "
                "written there would change the model's files (a bench run on it would no longer resume); give a "
                "place outside it"
            )


@contextlib.contextmanager
def output_dir(out: Path):
    """`check_output_dir(out)` for the work inside the block: a failure (or Ctrl-C) there leaves none of the
    folders it created behind while they are empty (another process's files stay)."""
    made = [p for p in (out, *out.parents) if not p.exists()]
    check_output_dir(out)
    _MADE.append(made)
    try:
        yield out
    except BaseException:
        remove_empty(made)
        raise
    finally:
        _MADE.remove(made)


_MADE: list[list[Path]] = []  # the folders each `output_dir` block in progress created (innermost first)


def remove_empty(folders) -> None:
    """Remove each folder that is empty (another process's files, or this run's finished ones, stay)."""
    with contextlib.suppress(OSError):
        for folder in folders:
            folder.rmdir()  # only when empty


@contextlib.contextmanager
def temporary_folder(prefix: str):
    """A temporary folder of the command (the web page's files), removed at the end of the block, and by
    `remove_made` when the process is ended from outside before the block ends."""
    import shutil

    folder = Path(tempfile.mkdtemp(prefix=prefix))
    _TEMPORARY.append(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        _TEMPORARY.remove(folder)


_TEMPORARY: list[Path] = []  # the `temporary_folder` blocks in progress


def remove_made() -> None:
    """What a process ended from outside (SIGTERM inside a library call) still does: the empty folders its
    commands created go, as they go when a command fails, and so do its temporary folders, whole."""
    import shutil

    for made in list(_MADE):
        remove_empty(made)
    for folder in list(_TEMPORARY):
        shutil.rmtree(folder, ignore_errors=True)


def check_output_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as err:
        raise CLIError(f"--out {str(out)!r} is not writable ({err.strerror or err}); choose another folder") from err


def slug(text: str, n: int = 60) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:n] or "prompt"


def output_stem(prompt: str, seed: int) -> str:
    """The name `generate` and `edit` give an image's files (before `-2`, `-3`, ... when taken)."""
    return f"{slug(prompt)}-s{seed}"


def check_overwrite(out, groups, suffixes, writes, instead: str) -> None:
    """With `--overwrite`, each name an output group would replace or remove (`out / (stem + suffix)` for each
    `(stem, prompt, seed)` of `groups` and each of `suffixes`; `writes`: the suffixes this run writes, the others an
    earlier group's members it removes) is absent or a file date-diffusion wrote (`outputs.package_output`) for the
    same prompt and seed. A folder, device or pipe of that name, a user's file or link that only has the name, and
    the image of another prompt whose file name is the same are each named before any work. `instead`: what the
    outputs are named without --overwrite."""
    from date_diffusion.outputs import overwrite_blocker, package_output

    for stem, prompt, seed in groups:
        paths = [Path(out) / f"{stem}{suffix}" for suffix in suffixes]
        blocker = overwrite_blocker(paths)
        if blocker is not None:
            raise CLIError(
                f"--overwrite would replace {str(blocker)!r}, which is {what_is(blocker)}, not a file: move it "
                f"away, give another --out, or leave out --overwrite ({instead})"
            )
        _check_same_image(Path(out) / f"{stem}.json", prompt, seed, instead)
        for path, suffix in zip(paths, suffixes):
            if os.path.lexists(path) and not package_output(path):
                verb = "replace" if suffix in writes else "remove"
                raise CLIError(f"--overwrite would {verb} {str(path)!r}, which is no earlier output of date-diffusion "
                               f"(a file or link of its own that only has an output's name): move it, or leave out "
                               f"--overwrite ({instead})")  # fmt: skip


def _check_same_image(record: Path, prompt: str, seed: int, instead: str) -> None:
    """The earlier output a name holds (its record, `record`) is replaced only when it is of the same prompt and
    seed: prompts whose file names are one (`a red circle!` and `a red circle` both give `a-red-circle-s0`) never
    replace each other's images."""
    from date_diffusion.schemas import loads, read_small_text

    try:
        made = loads(read_small_text(record)) if record.is_file() else None
    except (OSError, ValueError, UnicodeDecodeError):
        return  # no record of ours: `check_overwrite` names it
    if isinstance(made, dict) and "prompt" in made and (made.get("prompt"), made.get("seed")) != (prompt, seed):
        raise CLIError(f"--overwrite would replace {str(record.with_suffix(''))!r}*, the image of another prompt "
                       f"({quoted(made.get('prompt'))}, seed {made.get('seed')}) whose file name is the same: give "
                       f"another --out, or leave out --overwrite ({instead})")  # fmt: skip


def resolve_device(name: str, flag: str = "--device") -> str:
    """The device a command samples on: `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N` of a GPU present,
    or `mps` where PyTorch has it; anything else (`meta`, `cpu:1`, a device this PyTorch lacks) is a usage error
    naming `flag`, before any model loads."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    if re.fullmatch(r"cuda(:\d+)?", name):
        if not torch.cuda.is_available():
            raise CLIError(f"{flag} {name} requested but no CUDA device is available; use {flag} cpu")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise CLIError(f"{flag} {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                           f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")  # fmt: skip
        return name
    if name == "mps" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return name
    raise CLIError(f"{flag} {name!r} is not a device this machine samples on; use cpu, cuda, cuda:N or auto")


# ---------------------------------------------------------------- the validation layer
#
# Every option that takes a value has one kind (`core.settings.Kind`), declared once by its flag in `OPTION_KINDS`
# (`COMMAND_KINDS` where one command's flag means something else); `attach_kinds` gives each command its options'
# kinds, `check_kinds` checks the values given before the command does anything, and `validate` adds the command's
# own checks of values together (`validate=` of its parser). tests/test_generated_inputs.py walks the parser: an
# option without a kind fails it.

MAX_IMAGES = 100_000  # images one command makes per prompt; far beyond any run, never an unbounded loop
MAX_SIDE = 4096  # px; beyond it no supported model works and memory runs out long before


class Prompt(Kind):
    """Text an encoder reads (a negative, source or target prompt): `core.text.check_prompt`'s rules, the prompt
    argument's, on every command that takes it (`empty`: a negative prompt may be empty)."""

    def __init__(self, empty: bool = False):
        self.empty = empty

    def check(self, value, name):
        from date_diffusion.core.text import check_prompt

        Text(self.empty, prose=True).check(value, name)
        try:
            check_prompt(value, name, empty=self.empty)
        except ValueError as err:
            raise SettingError(str(err)) from None
        return value


class Each(Kind):
    """A list (a repeated option, or one split by the option's type) of at least `least` items of `kind`."""

    def __init__(self, kind: Kind, least: int = 1):
        self.kind, self.least = kind, least

    def check(self, value, name):
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(items) < self.least:
            raise SettingError(f"{name} needs at least {self.least} value(s), got {quoted(value)}")
        checked = [self.kind.value(v, name) for v in items]
        if isinstance(self.kind, ExistingPath):  # one file or folder given twice, under one name or two
            import os

            seen = {}
            for item in checked:
                info = os.stat(item)
                first = seen.setdefault((info.st_dev, info.st_ino), item)
                if first is not item:
                    raise SettingError(f"{name} names {quoted(first)} twice (also as {quoted(item)}): give it once")
        return checked


class Shard(Kind):
    """`I/N`: worker I of N (0 <= I < N <= `high`), read and checked whole, so that a refusal quotes the pair as
    typed (`0/1000001`), never one number of it."""

    metavar = "I/N"

    def __init__(self, high: int):
        self.high = high

    def parse(self, text, name):
        try:
            i, n = (parse_integer(v) for v in str(text).split("/"))
        except ValueError:
            raise SettingError(f"{name} expects I/N (e.g. 0/2), got {quoted(text)}") from None
        if not 0 <= i < n <= self.high:
            raise SettingError(f"{name} I/N needs 0 <= I < N <= {self.high}, got {quoted(text)}")
        return i, n

    def check(self, value, name):
        return self.parse(value if isinstance(value, str) else "/".join(map(str, value)), name)


def check_file_name(value: str, name: str) -> None:
    """A name this process can hand the operating system: under a locale whose file names are ASCII (LANG=C
    without Python's UTF-8 mode) a name with another character can be neither opened nor made."""
    import os
    import sys

    try:
        os.fsencode(value)
    except UnicodeEncodeError as err:
        raise SettingError(f"{name} {value!r}: file names here are {sys.getfilesystemencoding()} (a C locale without "
                           f"UTF-8 mode), so Python cannot name a file with {value[err.start]!r}; run it with "
                           "PYTHONUTF8=1 (or LANG=C.UTF-8)") from None  # fmt: skip


class ExistingPath(Kind):
    """A file (`folder=False`) or folder that must exist and be readable."""

    def __init__(self, folder: bool = False):
        self.folder = folder

    def check(self, value, name):
        import os

        what = "folder" if self.folder else "file"
        Text().check(value, name)
        check_file_name(value, name)
        path = Path(value)
        if path.is_dir() and not self.folder:
            raise SettingError(f"{name} {value!r} is a folder: give a file")
        if path.exists() and self.folder and not path.is_dir():
            raise SettingError(f"{name} {value!r} is {what_is(path)}: give a folder")
        if path.exists() and not (path.is_dir() or path.is_file()):
            raise SettingError(f"{name} {value!r} is {what_is(path)}, not a regular file: give a file")
        if not (path.is_dir() if self.folder else path.is_file()) or not os.access(path, os.R_OK):
            raise SettingError(f"{name} {value!r}: no such readable {what}")
        return value


class OutputPath(Kind):
    """A folder (or, `file=True`, a file) to write: not an existing entry of the other type, and inside a writable
    folder; nothing is created (the command creates it once every check has passed)."""

    def __init__(self, file: bool = False, run: bool = False):
        self.file, self.run = file, run  # run: a bench run's own folder (`check_outside_runs`)

    def check(self, value, name):
        import unicodedata

        from date_diffusion.core.text import is_control
        from date_diffusion.outputs import unwritable

        Text().check(value, name)
        check_file_name(value, name)
        # a line break or an escape breaks every line that shows the path; a format character (zero-width, a
        # byte-order mark, a tag) or a line separator shows a name that is not the folder's
        at = next((k for k, ch in enumerate(value) if is_control(ch) or unicodedata.category(ch) in ("Cf", "Zl", "Zp")),
                  None)  # fmt: skip
        if at is not None:
            what = "control" if is_control(value[at]) else "invisible"
            raise SettingError(f"{name} {value!r} holds the {what} character U+{ord(value[at]):04X} at character "
                               f"{at + 1}: choose a name without it")  # fmt: skip
        missing = _missing_before_parent(value)
        if missing is not None:  # creating the path would create that folder too, and leave it empty
            raise SettingError(f"{name} {value!r} goes up (..) out of {missing!r}, which does not exist: write the "
                               "path without it")  # fmt: skip
        why = unwritable(value, folder=not self.file)
        if why:
            raise SettingError(f"{name} {value!r} is not writable ({why}); choose another")
        check_outside_runs(value, name, own=self.run)
        return value


def _missing_before_parent(value: str) -> str | None:
    """The first folder of the path `value` that a `..` right after it leaves and that does not exist, or None:
    `x/../out` with no `x` (making the path would make `x`, empty, beside it)."""
    parts = Path(value).expanduser().parts
    for k in range(1, len(parts)):
        if parts[k] == ".." and parts[k - 1] != ".." and not Path(*parts[:k]).exists():
            return str(Path(*parts[:k]))
    return None


class Device(Kind):
    """A device name torch knows, available here (`auto`: CUDA when available)."""

    def check(self, value, name):
        Text().check(value, name)
        if value == "auto":  # always valid: what it means is decided when the command runs (no torch import here)
            return value
        try:
            resolve_device(value, name)
        except CLIError as err:
            raise SettingError(str(err)) from None
        return value


FILE, FOLDER, OUT = ExistingPath(), ExistingPath(folder=True), OutputPath()
OPTION_KINDS: dict[str, Kind] = {
    **{s.flag: s.kind for s in SETTINGS},  # DATE's settings, as `core/settings.py` declares them
    "--steps": SAMPLING["num_inference_steps"],
    **dict.fromkeys(("--guidance", "--cfg-src", "--cfg-tar"), SAMPLING["guidance_scale"]),
    **dict.fromkeys(("--seed", "--seed-base"), Seed()),
    **dict.fromkeys(("--height", "--width", "--reward-resolution"), Size(MAX_SIDE)),
    **dict.fromkeys(("--images-per-prompt", "--seeds"), Integer(1, MAX_IMAGES)),
    "--frames": Integer(1, MAX_FRAMES),  # generate, video models: frames per video
    "--reward-frames": Integer(1, 1000),  # generate, video models: frames the reward scores
    "--limit": Integer(1, 10**7),
    "--batch-size": Integer(1, MAX_BATCH),
    "--repeats": Integer(1, 1000),
    "--threads": Integer(1, 1024),
    "--concurrency": Integer(1, 64),
    "--max-work": Integer(1, 10**6),
    "--port": Integer(1, 65535),
    **dict.fromkeys(("--skip", "--edit-skip"), Integer(0, SAMPLING["num_inference_steps"].high - 1)),
    "--unet-stop-at": Integer(1, 10**8),
    "--strength": Real(0, 1),  # edit: (0, 1], the zero refused by edit's own check
    "--n-min": Integer(0, SAMPLING["num_inference_steps"].high),  # edit (FlowEdit): at most the regenerated steps
    "--n-avg": Integer(1, 64),  # edit (FlowEdit): noise draws per step, each a model call
    **dict.fromkeys(("--out", "--dest"), OUT),
    **dict.fromkeys(("--prompts-file", "--captions", "--replay-embeddings", "--inception-weights", "image"), FILE),
    **dict.fromkeys(("--fid-real", "--from", "--run", "dir", "run_dir"), FOLDER),
    "images": Each(FILE),
    "--allow-path": Each(FOLDER, least=0),  # ui: folders the page's reward field may read
    "--export": Each(Text(), least=2),  # bench, report: KIND DIR (nargs=2), checked together by cli/bench.py
    "--geneval-metadata": FILE,  # bench, report: GenEval's evaluation_metadata.jsonl
    "--lora": Each(Text(), least=0),
    "--negative-prompt": Prompt(empty=True),
    **dict.fromkeys(("--source-prompt", "--target-prompt"), Prompt()),
    "--eval-clip": Text(empty=True),  # empty: no held-out CLIP metric
    "prompts": Each(Text(empty=True, prose=True), least=0),  # generate says which prompt is empty, and where
    **dict.fromkeys(("--categories", "--variants"), Each(Text())),
    "--device": Device(),
    **dict.fromkeys(("--model", "--config", "--host", "--scheduler", "--reward", "--reward-decoder",
                     "--tiny-decoder", "--methods"), Text()),
}  # fmt: skip
COMMAND_KINDS: dict[str, Kind] = {
    "bench-perf --batch-size": Each(Integer(1, MAX_BATCH)),
    "toyworld finalize --out": FOLDER,
    "toyworld audit --out": OutputPath(file=True),
    "bench --out": OutputPath(run=True),  # a run's own folder, resumed; never one inside another run
    "toyworld train-judge --worker": Shard(10**6),  # (I, N); its type is this kind's parse
}


def takes_value(action: argparse.Action) -> bool:
    """Whether the user types a value for this action that no `choices` already restrict."""
    return action.nargs != 0 and not action.choices and action.dest not in ("help", "version")


def command_parsers(parser: argparse.ArgumentParser, prefix: str = ""):
    """(command name, parser) of every command, nested ones (`toyworld train`) included."""
    for action in parser._actions:  # noqa: SLF001  (argparse keeps its subcommands there)
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from command_parsers(sub, f"{prefix}{name} ")


def kind_of(command: str, action: argparse.Action) -> Kind | None:
    name = action.option_strings[-1] if action.option_strings else action.dest
    return COMMAND_KINDS.get(f"{command} {name}", OPTION_KINDS.get(name))


def attach_kinds(parser: argparse.ArgumentParser) -> None:
    """Give every command the kinds of its options (`option_kinds`: (dest, name, kind) each), for `check_kinds`, and
    its full name (`command_prog`: `date-diffusion toyworld train`), which its messages start with."""
    for command, sub in command_parsers(parser):
        kinds = tuple((a.dest, a.option_strings[-1] if a.option_strings else a.dest.upper(), kind_of(command, a))
                      for a in sub._actions if takes_value(a) and kind_of(command, a))  # noqa: SLF001  # fmt: skip
        # the innermost command's name (its messages' prefix) and parser (its usage errors)
        sub.set_defaults(option_kinds=kinds, command_prog=sub.prog, command_parser=sub)


def check_kinds(args) -> None:
    """Every value given (defaults that are None are not given) through its option's kind: the text typed where the
    parser kept it (`typed_texts`: a number's, so that a refusal quotes it as typed), else the value."""
    typed = getattr(args, "typed_texts", None) or {}
    for dest, name, kind in getattr(args, "option_kinds", ()):
        value = getattr(args, dest, None)
        if value is not None:
            checked(kind, typed.get(dest, value), name)


def validate(args):
    """Every check of a command before any work: its options' kinds, then its own checks together (`validate=` of
    its parser, which returns what the command needs to run). A refusal is a `CLIError`; nothing is written."""
    check_kinds(args)
    own = getattr(args, "validate", None)
    return own(args) if own is not None else None
