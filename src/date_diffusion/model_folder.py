"""What a model folder may say about itself: one JSON file beside `model_index.json`, in one format any model folder
may ship (docs/python-api.md, "A model's own recommendations"):

    {
      "recommended": {"guidance_scale": 5.0, "rho_relative": 0.005, "update_every": 10, "reward": "aug8(clip-l)"},
      "reward": "clip-l",
      "reward_decoder": "tiny-decoder"
    }

- `recommended`: the settings the model recommends, by `resolve_settings`' names (every `DATEConfig` field,
  `reward`, `scheduler`, `num_inference_steps`, `guidance_scale`); the resolver checks each through its setting's
  kind and names the file and the key on error. `--paper-defaults` ignores its DATE settings and reward.
- `reward`: the model's own plain reward (the paper's kind of reward, in the model's world), used where neither the
  caller nor `recommended` names one, and under `--paper-defaults`; default: the family's.
- `reward_decoder`: the tiny decoder of the approximate reward path (`--reward-decoder tiny`): a folder inside the
  model folder, another folder or a hub id; default: the family's TAESD.

Other keys are the model's own notes and are not read. The file is `date_diffusion.json`; a plugin may register
another name for its models (`register_file`, as the toy world's plugin does), with the values its folders have
where the file does not say them. A plugin may also name the default model of every command
(`register_default_model`). This module imports nothing heavy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from date_diffusion import plugins
from date_diffusion.core.text import json_kind, quoted
from date_diffusion.schemas import loads

FILE = "date_diffusion.json"


@dataclass(frozen=True)
class FolderFile:
    """A file name a model folder may hold its recommendations in, and what a folder holding it has where the file
    does not say (`reward`, `reward_decoder`); `origin` is where a broken file is restored from."""

    name: str
    reward: str | None = None
    reward_decoder: str | None = None
    origin: str = "wherever the model came from"


@dataclass(frozen=True)
class ModelFile:
    """One model folder's file, read: `recommended` holds the values as written (the resolver checks them)."""

    path: Path
    recommended: dict = field(default_factory=dict)
    reward: str | None = None
    reward_decoder: str | None = None


_FILES: list[FolderFile] = [FolderFile(FILE)]
_DEFAULT: list[tuple[Path, str]] = []  # (path, who named it)


def register_file(name: str, *, reward: str | None = None, reward_decoder=None, origin: str | None = None) -> None:
    """Let model folders hold their recommendations in `name` (this module's format), and give the folders that do
    a plain reward and a reward decoder where the file names none."""
    entry = FolderFile(name, reward, None if reward_decoder is None else str(reward_decoder),
                       origin or FolderFile.origin)  # fmt: skip
    if entry in _FILES:
        return
    if any(f.name == name for f in _FILES):
        raise ValueError(f"model-folder file {name!r} is registered already")
    _FILES.append(entry)


def register_default_model(path, owner: str) -> None:
    """Name the default model of every command (one plugin may; a second, other path is refused)."""
    path = Path(path)
    if _DEFAULT and _DEFAULT[0][0] != path:
        raise ValueError(f"{owner} names {path} the default model, but {_DEFAULT[0][1]} named {_DEFAULT[0][0]}")
    if not _DEFAULT:
        _DEFAULT.append((path, owner))


def default_model() -> Path | None:
    """The default model a plugin named, or None."""
    plugins.load()
    return _DEFAULT[0][0] if _DEFAULT else None


def file_names() -> tuple[str, ...]:
    plugins.load()
    return tuple(f.name for f in _FILES)


def read(model) -> ModelFile | None:
    """The model folder's file, or None (no such file, not a folder). A folder holding two of the registered names
    is refused (ValueError): which one speaks for the model would be a guess, and the other's settings ignored."""
    if model is None:
        return None
    plugins.load()
    held = [(Path(str(model)) / entry.name, entry) for entry in _FILES if (Path(str(model)) / entry.name).is_file()]
    if len(held) > 1:
        names = " and ".join(path.name for path, _ in held)
        raise ValueError(f"{model} holds both {names}: a model folder says its recommendations in one file; remove "
                         "the one that is not the model's")  # fmt: skip
    return _parse(*held[0]) if held else None


READ_KEYS = ("recommended", "reward", "reward_decoder")  # the keys of a model's file that are read


def _parse(path: Path, entry: FolderFile) -> ModelFile:
    restore = f"restore it from {entry.origin}"
    try:
        meta = loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not readable JSON ({err}): {restore}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} must hold a JSON object (with its 'recommended' settings), it holds "
                         f"{json_kind(meta)}: {restore}")  # fmt: skip
    import difflib

    for key in meta:  # a note is free text; a key one slip from a key that is read is a slip, never a note
        near = difflib.get_close_matches(key, READ_KEYS, n=1, cutoff=0.8) if key not in READ_KEYS else []
        if near:
            raise ValueError(f"{path}: its key {quoted(key)} is not read: {quoted(near[0])} was meant? (other keys are "
                             f"notes, not read; this one is too close to {quoted(near[0])} to be one): "
                             "rename it")  # fmt: skip
    advice = meta.get("recommended", {})
    if not isinstance(advice, dict):
        raise ValueError(f"{path}: 'recommended' must be an object of settings, it is {json_kind(advice)}: "
                         f"{restore}")  # fmt: skip
    own = {}
    for key in ("reward", "reward_decoder"):
        value = meta.get(key, getattr(entry, key))
        if value is not None and not (isinstance(value, str) and value.strip()):
            raise ValueError(f"{path}: {key} must be text (a reward spec, a folder or a hub id), got {quoted(value)}")
        own[key] = value
    decoder = own["reward_decoder"]
    if decoder is not None and (path.parent / decoder).is_dir():
        decoder = str(path.parent / decoder)
    return ModelFile(path, advice, own["reward"], decoder)


_SAMPLED = 1 << 20  # bytes read from each end of a weights file for its fingerprint


def fingerprint(model, whole: bool = False) -> str | None:
    """A fingerprint of a local model's files (a folder's, or a single checkpoint's or LoRA's, whatever its name):
    every small text file (the configs, tokenizers, `model_index.json`) whole, and each other file by its size and
    its first and last MiB, so that retrained weights or an edited config change it in a second or so whatever the
    model's size; `whole`: every file read whole (a change anywhere in the weights, such as one layer fine-tuned,
    changes it; it takes as long as reading the model). None for a hub id (its files are the hub's). What a bench
    run records (`model_files`, and `model_content` whole), so that a resume over a changed model is named, and an
    embeddings file (`model_content`), so that a replay over a changed model is."""
    import hashlib

    root = Path(str(model)).expanduser()
    if not root.exists():
        return None
    digest = hashlib.sha256()
    files = sorted(p for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(root if root.is_dir() else root.parent).parts))  # fmt: skip
    for path in files:
        size = path.stat().st_size
        digest.update(
            f"{path.relative_to(root) if root.is_dir() else ''}\0{size}\0".encode()
        )  # a file's own name aside
        with open(path, "rb") as f:
            if whole or (path.suffix in (".json", ".txt", ".model") and size <= 64 * _SAMPLED):
                while chunk := f.read(16 * _SAMPLED):  # in pieces: an interrupt ends it between two
                    digest.update(chunk)
            else:
                digest.update(f.read(_SAMPLED))
                f.seek(max(0, size - _SAMPLED))
                digest.update(f.read(_SAMPLED))
    return digest.hexdigest()[:20]
