"""Open the checkpoints people hold: diffusers folders, hub ids, single files (`.safetensors` / `.ckpt`), LoRAs.

`load_date_pipeline` is what the command line uses; every step is stock diffusers (`from_pretrained`,
`from_single_file`, `load_lora_weights`, `enable_model_cpu_offload`), so `HF_HUB_OFFLINE` and the Hugging Face
cache behave as they do in diffusers.
"""

from __future__ import annotations

import contextvars
import inspect
import json
import re
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

from date_diffusion.core.config import nonzero_in_float32
from date_diffusion.core.settings import Real, SettingError, is_real, parse_real
from date_diffusion.core.text import json_kind, json_spelling, one_line, quoted
from date_diffusion.families import NAMES, by_name, by_pipeline_class, by_single_file_type
from date_diffusion.hub import (
    ModelNotFoundError,
    explain_load_error,
    is_hub_id,
    is_local_path,
    is_offline,
    load_component,
)
from date_diffusion.model_folder import read as read_model_file
from date_diffusion.quiet import held, held_messages

# diffusers is imported inside the functions: the resolver (and so every command's checks) imports this module
# before any model loads.

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


class _Shapes(Mapping):
    """A safetensors file's tensor shapes by key, read from its header only (no weights are loaded)."""

    def __init__(self, path):
        from safetensors import safe_open

        self._file = safe_open(str(path), framework="pt")
        self._keys = list(self._file.keys())
        self._known = set(self._keys)

    def __contains__(self, key):
        return key in self._known

    def __getitem__(self, key):
        import torch

        if key not in self._known:
            raise KeyError(key)

        class _Shape:
            shape = torch.Size(self._file.get_slice(key).get_shape())

        return _Shape()

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)


def is_single_file(model) -> bool:
    return Path(str(model)).suffix.lower() in SINGLE_FILE_SUFFIXES


def check_model_path(model) -> None:
    """A model that cannot load is named as such at once, before diffusers is imported or anything loads: a file
    without a checkpoint's suffix (a README, a text file) is neither a diffusers folder nor a single file; a folder
    without model_index.json is no diffusers folder; a path (/..., ./..., ~/...) that is not there; a hub id that is
    not in the Hugging Face cache while HF_HUB_OFFLINE is set. The messages are `hub.explain_load_error`'s, which
    names the fix. (A single file that is not there is named by its caller; a hub id online is diffusers' to fetch.)"""
    path = Path(str(model)).expanduser()
    if path.is_file() and not is_single_file(path):
        raise ValueError(
            f"{str(model)!r} is a file, not a diffusers folder (one with model_index.json) nor a single checkpoint "
            f"({', '.join(SINGLE_FILE_SUFFIXES)}): pass a model folder, a hub id or a checkpoint file"
        )
    if is_single_file(model):
        return
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise explain_load_error(model, OSError(f"no model_index.json in {path}"))
    elif is_local_path(model):  # written as a path, or a link here that leads nowhere
        raise explain_load_error(model, FileNotFoundError(str(model)))
    elif is_offline() and is_hub_id(model):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(str(model), "model_index.json"), str):
            raise explain_load_error(model, OSError(f"{model} is not in the Hugging Face cache"))


# ---------------------------------------------------------------- a model folder's components, each named when bad


class ComponentError(ModelNotFoundError):
    """A component of a model folder that does not load: one line naming the component's file (its config, its
    tokenizer file, its weights) and what is wrong with it; a usage error (exit code 2) like every unloadable model."""


CONFIG_FILES = ("config.json", "scheduler_config.json", "tokenizer_config.json", "preprocessor_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".msgpack", ".onnx", ".gguf")
_FIX = "repair it, or save the model again with save_pretrained"


def _first_line(err: Exception) -> str:
    """The library's words in one line: its first sentence, at most 300 characters."""
    text = " ".join(str(err).split())
    return re.split(r"(?<=[.!?])\s", text)[0][:300] or type(err).__name__


WEIGHTS_NAMES = {"diffusers": "diffusion_pytorch_model.safetensors", "transformers": "model.safetensors"}


MAX_TRAIN_TIMESTEPS = 100_000  # a scheduler's training schedule (SD: 1000): beyond it, a damaged config

# the files a tokenizer's words are read from, one set of which a tokenizer folder holds (fast tokenizers'
# `tokenizer.json`, CLIP's and GPT-2's BPE files, BERT's word pieces, sentencepiece models: T5, Llama, Qwen's)
VOCABULARIES = (("tokenizer.json",), ("vocab.json", "merges.txt"), ("vocab.txt",), ("spiece.model",),
                ("tokenizer.model",), ("sentencepiece.bpe.model",))  # fmt: skip


def check_component(folder, name: str, library: str | None = None, class_name: str | None = None) -> None:
    """The files of component `name` of the model folder `folder` (a local folder or a hub id's cached folder), read
    before diffusers builds it: the folder is there; each JSON file (configs, `tokenizer.json`, vocabularies) is
    readable JSON through `schemas.loads` (a key given twice refused) and an object; a model (a component with a
    `config.json`) has a weights file. `ComponentError` names the file and what is wrong. A config whose
    `_class_name` is not `class_name` (the class `model_index.json` names, which diffusers builds) is a warning
    naming both files: the config's values go to the other class, which may read them otherwise."""
    import warnings

    from date_diffusion.schemas import loads, not_a_file, unreadable_safetensors

    where = Path(str(folder)) / name
    if not where.is_dir():
        raise ComponentError(f"{where}: no such folder, and model_index.json names the component {name!r}: {_FIX}")
    for path in sorted(where.iterdir()):  # each file the library would read is one (a FIFO would block the reader)
        why = not_a_file(path, limit=1 << 50) if path.suffix in (".json", *WEIGHT_SUFFIXES) else None
        if why:
            raise ComponentError(f"{path}: {why}; {_FIX}")
        why = unreadable_safetensors(path) if path.suffix == ".safetensors" else None
        if why:  # empty, cut short (an interrupted copy) or no safetensors file: the weights named, not the config
            raise ComponentError(f"{path}: it {why}; {_FIX}")
    for path in sorted(where.glob("*.json")):
        try:
            data = loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
            raise ComponentError(f"{path}: not readable JSON ({_first_line(err)}); {_FIX}") from None
        if not isinstance(data, dict):
            raise ComponentError(f"{path}: holds {json_kind(data)}, not an object of settings; {_FIX}")
        if path.name == "tokenizer.json":  # a fast tokenizer's words: read as the tokenizers library reads them
            _check_tokenizer_file(path)
        if library == "diffusers" and class_name and path.name in CONFIG_FILES:  # before the library reads it
            import diffusers

            for key, why in kind_problems(getattr(diffusers, class_name, None), data):
                raise ComponentError(f"{path}: its {key} {why}; {_FIX}")
        if path.name in CONFIG_FILES:  # values the library would build something from, then fail or mislead
            for key, why in value_problems(name, data):
                raise ComponentError(f"{path}: its {key} {why}; {_FIX}")
        named = data.get("_class_name") if path.name in CONFIG_FILES else None
        if class_name and isinstance(named, str) and named != class_name:
            warnings.warn(f"{path} names the class {named}, and model_index.json {class_name} for {name!r}: "
                          f"{class_name} is built from this config (as diffusers does); make the two agree if "
                          f"{named} was meant", stacklevel=2)  # fmt: skip
    if (where / "config.json").is_file() and not any(p.suffix in WEIGHT_SUFFIXES for p in where.iterdir()):
        weights = where / WEIGHTS_NAMES.get(library, "diffusion_pytorch_model.safetensors")
        raise ComponentError(f"{weights}: missing (the folder has a config.json but no weights file); copy the "
                             f"model's weights there, or {_FIX}")  # fmt: skip
    if (where / "tokenizer_config.json").is_file() and not any(
            all((where / f).is_file() for f in files) for files in VOCABULARIES):  # fmt: skip
        # transformers builds a tokenizer of no words from its config alone: every prompt would read as unknowns
        raise ComponentError(
            f"{where}: a tokenizer without its vocabulary (none of "
            f"{', '.join(' + '.join(f) for f in VOCABULARIES)}); copy them there, or {_FIX}"
        )


def _check_tokenizer_file(path: Path) -> None:
    """A `tokenizer.json` the tokenizers library builds a tokenizer from: `ComponentError` naming the file and what
    the library misses in it (transformers would say only a missing key, `'added_tokens'`, of the folder)."""
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(str(path))
    except Exception as err:  # noqa: BLE001  (the library raises a bare Exception)
        raise ComponentError(f"{path}: not a tokenizer file the tokenizers library reads ({_first_line(err)}); "
                             f"{_FIX}") from None  # fmt: skip


def _component_error(folder, name: str, err: Exception) -> ComponentError:
    """Component `name` failed to build with `err`: the file it is about, its config (a value the library refuses),
    or its weights when they do not fit the config (shapes), with the library's words."""
    where = Path(str(folder)) / name
    # a model's or a scheduler's one config; a tokenizer's refusal may be about any of its files: its folder
    config = next((where / f for f in ("config.json", "scheduler_config.json") if (where / f).is_file()), where)
    why = _first_line(err)
    weights = next((p for p in sorted(where.iterdir()) if p.suffix in WEIGHT_SUFFIXES), where)
    # the line that names the tensor and its shapes, wherever the library's message puts it (transformers: inside)
    said = [str(err), *held_messages()]  # transformers logs which tensor did not fit before it raises
    mismatch = next((re.sub(r"\s*\|\s*", " ", line).strip() for text in said for line in text.splitlines()
                     if re.search(r"shape|size mismatch", line, re.IGNORECASE)), None)  # fmt: skip
    if mismatch is not None:
        return ComponentError(f"{weights}: its tensors do not fit {config.name} ({one_line(mismatch, 300)}); {_FIX}")
    field = re.search(r"Field '(\w+)' with value (.+?) doesn't match any type in \(([^)]*)\)", str(err))
    if field:  # transformers' strict check of a config's value kinds: said in the words of JSON
        key, value, types = field.groups()
        takes = [_PYTHON_KINDS.get(t, t) for t in re.findall(r"<class '(\w+)'>", types)]
        return ComponentError(f"{config}: its {key} is {value}, which the library refuses: it takes "
                              f"{' or '.join(takes)}; {_FIX}")  # fmt: skip
    if "has no class" in why:  # the class model_index.json names for the component
        return ComponentError(f"{Path(str(folder)) / 'model_index.json'}: its class for {name!r} does not load "
                              f"({why}); {_FIX}")  # fmt: skip
    damaged = r"deseriali[sz]|header|unpickl|pickle data|end of file|EOF|truncated|invalid load key"
    if "Safetensor" in type(err).__name__ or re.search(damaged, why, re.IGNORECASE):  # the weights file is damaged
        return ComponentError(f"{weights}: not a readable weights file ({why}); {_FIX}")
    return ComponentError(f"{config}: the library refuses it ({why}); {_FIX}")


# Python's types as a JSON file writes their values (transformers names the types a config field takes)
_PYTHON_KINDS = {"float": "a number with a decimal point (1.0, 1e-05)", "int": "a whole number",
                 "bool": "true or false", "str": "text", "NoneType": "null", "list": "an array",
                 "dict": "an object"}  # fmt: skip


def _without_weights(module) -> list[str]:
    """The parameters and buffers of a built model that no weights file gave (left on the meta device)."""
    named = getattr(module, "named_parameters", None)
    if named is None:
        return []
    tensors = [*module.named_parameters(), *module.named_buffers()]
    return [name for name, tensor in tensors if getattr(tensor, "is_meta", False)]


# on while `component_errors` is: the (folder, component) pairs whose files it has checked already
_ATTRIBUTING = contextvars.ContextVar("attributing_components", default=None)


def _attributing(load_sub_model):
    """diffusers' `load_sub_model` (which builds each component of a pipeline folder), naming the component's files
    when one does not build (`check_component` first, then `_component_error`), while `component_errors` is on."""

    def load(*args, **kwargs):
        name, folder, checked = kwargs.get("name"), kwargs.get("cached_folder"), _ATTRIBUTING.get()
        if checked is None or name is None or folder is None:
            return load_sub_model(*args, **kwargs)
        if (Path(str(folder)).resolve(), name) not in checked:  # a hub id's cached folder: not read before
            check_component(folder, name, kwargs.get("library_name"))
        try:
            built = load_sub_model(*args, **kwargs)
        except (MemoryError, ComponentError):
            raise
        except Exception as err:  # a config the library refuses, weights that do not fit it, a damaged file
            if "OutOfMemory" in type(err).__name__:  # a runtime failure, not the file's
                raise
            raise _component_error(folder, name, err) from err
        missing = _without_weights(built)
        if missing:  # the library leaves what the weights file lacks on the meta device: it fails when moved
            where = Path(str(folder)) / name
            weights = next((p for p in sorted(where.iterdir()) if p.suffix in WEIGHT_SUFFIXES), where)
            raise ComponentError(f"{weights}: its tensors do not fit config.json ({len(missing)} missing, e.g. "
                                 f"{', '.join(missing[:3])}); {_FIX}")  # fmt: skip
        return built

    load.date_diffusion_attributing = True
    return load


@contextmanager
def component_errors(model):
    """While loading a pipeline folder or hub id: every component's files checked before the folder's weights load
    (a local folder), and any component that does not build named by its file (`ComponentError`)."""
    from diffusers.pipelines import pipeline_utils

    original = getattr(pipeline_utils, "load_sub_model", None)
    if original is not None and not getattr(original, "date_diffusion_attributing", False):
        pipeline_utils.load_sub_model = _attributing(original)  # once per process; transparent when off
    local, checked = Path(str(model)).expanduser(), set()
    if local.is_dir() and (local / "model_index.json").is_file():
        from date_diffusion.pipelines import model_index

        index = model_index(local)
        for name, entry in index.items():
            if not name.startswith("_") and isinstance(entry, list) and len(entry) == 2 and None not in entry:
                _check_component_class(local, index.get("_class_name"), name, entry)
                check_component(local, name, entry[0], entry[1])
                checked.add((local.resolve(), name))
    token = _ATTRIBUTING.set(frozenset(checked))
    try:
        yield
    finally:
        _ATTRIBUTING.reset(token)


def _check_component_class(folder: Path, pipeline: str | None, name: str, entry: list) -> None:
    """The class `model_index.json` names for a model component (a torch module: denoiser, VAE, text encoder) is
    one its pipeline takes there (a subclass of its `__init__`'s annotation, as diffusers reads it), and a scheduler
    for a pipeline of noise-predicting schedulers (`KarrasDiffusionSchedulers`) is not a flow-matching one; else
    `ComponentError` naming model_index.json, the component and both classes, before any weight loads. Tokenizers
    and other schedulers are left to diffusers (pipelines take more than their annotations name); so is a class
    the check cannot resolve."""
    import enum
    import importlib

    import diffusers
    import torch

    library, class_name = entry
    owner = getattr(diffusers, str(pipeline), None)
    try:
        cls = getattr(importlib.import_module(str(library)), str(class_name), None)
        expected = owner._get_signature_types().get(name) if hasattr(owner, "_get_signature_types") else None
    except Exception:  # a library that is not installed, a class the library lacks: diffusers says so
        return
    if not isinstance(cls, type) or not expected:
        return
    kinds = [k for k in expected if k is not type(None)]
    if any(k is inspect.Signature.empty or not isinstance(k, type) for k in kinds):
        return  # unannotated, or a typing construct: nothing to compare with
    scheduler_kinds = [k for k in kinds if issubclass(k, enum.Enum)]
    if scheduler_kinds:  # `KarrasDiffusionSchedulers`: a flow-matching scheduler takes no noise prediction
        if class_name.startswith("FlowMatch"):
            fits = f"a scheduler of {scheduler_kinds[0].__name__}"
        else:
            return
    elif issubclass(cls, torch.nn.Module) and not any(issubclass(cls, k) for k in kinds):
        fits = " or ".join(k.__name__ for k in kinds)
    else:
        return
    raise ComponentError(f"{folder / 'model_index.json'}: its class for {name!r} is {class_name}, which "
                         f"{pipeline} does not take there (it takes {fits}); {_FIX}")  # fmt: skip


def detect_family(path) -> str:
    """The family of a single-file checkpoint, from its key names and shapes (as diffusers infers its type)."""
    from diffusers.loaders.single_file_utils import (
        LDM_UNET_KEY,
        infer_diffusers_model_type,
        load_single_file_checkpoint,
    )

    from date_diffusion.schemas import unreadable_safetensors

    path = Path(path)
    why = unreadable_safetensors(path) if path.suffix == ".safetensors" else None
    if why is None and path.is_file() and path.stat().st_size == 0:
        why = "is empty (0 bytes)"
    if why:  # empty, cut short or no safetensors file: in words, never the library's
        raise ValueError(f"could not read {path} as a checkpoint: it {why}")
    try:
        checkpoint = _Shapes(path) if path.suffix == ".safetensors" else load_single_file_checkpoint(str(path))
        model_type = infer_diffusers_model_type(checkpoint)
    except Exception as err:  # truncated, not a checkpoint, unknown layout
        raise ValueError(f"could not read {path} as a checkpoint ({type(err).__name__}: {err})") from err
    if model_type == "v1" and not any(str(k).startswith(LDM_UNET_KEY) for k in checkpoint):
        # diffusers' answer when no model's keys match: the file holds no diffusion model at all
        first = next(iter(checkpoint), None)
        raise ValueError(
            f"{path.name} is not a diffusion checkpoint: none of its {len(checkpoint)} tensors belongs to a "
            f"diffusion model (the first is {first!r}; a text encoder, a VAE or a LoRA file looks like this). Pass a "
            "whole-model checkpoint, a diffusers folder or a hub id; a LoRA goes to --lora"
        )
    family = by_single_file_type(model_type)
    if family is None:
        raise ValueError(
            f"{path.name} looks like a {model_type!r} checkpoint, which has no DATE pipeline; if it is one of "
            f"{', '.join(NAMES)}, say so with family=... (--family)"
        )
    return family.name


def family_of(model, family: str | None = None) -> str:
    """`family` when given, else the family of a single file (from its keys) or a folder / hub id (its
    `model_index.json`)."""
    if family is not None:
        by_name(family)  # an unknown name is refused with the known ones
    check_model_path(model)
    if is_single_file(model):
        try:
            detected = detect_family(model)
        except ValueError:
            if family is None:
                raise
            return family  # an unusual layout: the caller's word
        if family is not None and family != detected:
            raise ValueError(f"{Path(str(model)).name} is a {detected!r} checkpoint by its keys, not {family!r}")
        return detected
    if family is not None:
        return family
    from date_diffusion.pipelines import pipeline_class_name

    return by_pipeline_class(pipeline_class_name(model)).name


def resolve_dtype(dtype, family: str, device: str):
    """`auto`: float16 on CUDA (bfloat16 for the families released in it, `Family.bf16`, where the GPU has it),
    float32 elsewhere."""
    import torch

    if not isinstance(dtype, str):
        return dtype
    if dtype != "auto":
        return getattr(torch, dtype)
    if not str(device).startswith("cuda"):
        return torch.float32
    if by_name(family).bf16 and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


LORA_SCALE = Real(-100.0, 100.0)  # a LoRA's weight: finite (nan or inf would turn every image black)


def check_lora_file(path) -> None:
    """A LoRA file that cannot add anything is refused before any model loads: a .safetensors file that holds no
    tensor, or whose keys name no low-rank weights (`lora_A`/`lora_B`, `lora_down`/`lora_up`, ...)."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:  # any format: nothing to read
        raise ValueError(f"LoRA file {str(path)!r} is empty (0 bytes)")
    if path.suffix.lower() != ".safetensors":
        return  # other formats are read by diffusers itself
    from date_diffusion.outputs import saved_embeddings
    from date_diffusion.schemas import unreadable_safetensors

    why = unreadable_safetensors(path)
    if why:  # empty, cut short, or no safetensors file at all: in words, never the library's
        raise ValueError(f"LoRA file {str(path)!r} {why}")
    keys = list(_Shapes(path))
    if not keys:
        raise ValueError(f"LoRA file {str(path)!r} holds no tensors: it adds nothing to a model")
    lora = any("lora" in k.lower() for k in keys)
    if not lora and saved_embeddings(path):
        raise ValueError(f"LoRA file {str(path)!r} is prompt embeddings saved by --save-embeddings, no LoRA: replay "
                         "them with --replay-embeddings FILE")  # fmt: skip
    if not lora:
        raise ValueError(f"LoRA file {str(path)!r} holds no LoRA weights (its first tensor is {keys[0]!r}): is it a "
                         "whole model? pass that with --model")  # fmt: skip
    bad = _non_finite_tensor(path)
    if bad is not None:  # it would turn every image black (or every reward NaN) without naming the file
        raise ValueError(f"LoRA file {str(path)!r}: its tensor {bad!r} holds NaN or infinite values (a damaged or "
                         "diverged training run): it cannot be applied")  # fmt: skip
    integer = _integer_tensor(path)
    if integer is not None:  # torch refuses them deep inside the adapter's loading, in 35,000 characters
        raise ValueError(f"LoRA file {str(path)!r}: its tensor {integer[0]!r} holds integers ({integer[1]}), not "
                         "numbers with fractions: no LoRA is saved so (a damaged or converted file)")  # fmt: skip
    pairs = {"lora_a": "lora_b", "lora_down": "lora_up", "lora_b": "lora_a", "lora_up": "lora_down"}
    lowered = {k.lower() for k in keys}
    alone = [k for k in keys for half, other in pairs.items() if f".{half}." in k.lower()
             and k.lower().replace(f".{half}.", f".{other}.") not in lowered]  # fmt: skip
    if alone:  # half of a low-rank pair: the loader fails on an index, without naming the file
        raise ValueError(f"LoRA file {str(path)!r}: {len(alone)} of its low-rank weights lack their other half (the "
                         f"first: {alone[0]!r}); a LoRA holds both halves of each pair (down and up, A and B): a "
                         "damaged or cut file")  # fmt: skip


def _integer_tensor(path) -> tuple[str, str] | None:
    """The first tensor of a .safetensors file of an integer or boolean type, and that type, or None (its header
    alone is read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118  (safe_open is no dict)
            dtype = f.get_slice(key).get_dtype()
            if dtype.startswith(("I", "U")) or dtype == "BOOL":  # I8 ... I64, U8 ...; BF16 is a float
                return key, dtype
    return None


def _non_finite_tensor(path) -> str | None:
    """The first tensor of a .safetensors file holding a NaN or an infinity, or None (read tensor by tensor)."""
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118  (safe_open is no dict)
            tensor = f.get_tensor(key)
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                return key
    return None


def parse_lora(spec: str) -> tuple[str, float]:
    """`FILE[:SCALE]` -> (file, scale); the scale defaults to 1 and must be a finite number (`LORA_SCALE`)."""
    path, colon, scale = str(spec).rpartition(":")
    if colon and path and Path(spec).exists() and Path(path).is_file() and is_real(scale):
        raise SettingError(f"{spec!r} reads two ways: the file {spec!r} at scale 1, or the file {path!r} at "
                           f"scale {scale}; rename one of the two files")  # fmt: skip
    if colon and path and not Path(spec).exists():
        try:
            parse_real(scale)
        except ValueError:
            if Path(path).is_file():  # FILE:SCALE with a scale that is no number: the scale named, not "no such file"
                LORA_SCALE.value(scale, f"the scale of LoRA {path!r}")
            return str(spec), 1.0
        weight = LORA_SCALE.value(scale, f"the scale of LoRA {path!r}")  # a refusal quotes the scale as typed
        if not nonzero_in_float32(abs(weight)):  # the weights times 0: the image would be the one without it
            raise SettingError(f"the scale of LoRA {path!r} is {quoted(scale)}, 0 in 32-bit floats: the LoRA would "
                               "do nothing; leave it out, or give a scale that acts")  # fmt: skip
        return path, weight
    return str(spec), 1.0


def load_date_pipeline(
    model,
    dtype="auto",
    device="cpu",
    scheduler: str | None = None,
    family: str | None = None,
    config: str | None = None,
    loras=(),
    offload: str | None = None,
):
    """A DATE pipeline for `model`: a diffusers folder, a hub id, or a single checkpoint file (its family detected
    from its keys, or given as `family`; `config` is the folder or hub id of the matching diffusers pipeline whose
    configs complete the file, as diffusers' `from_single_file(config=...)`). `dtype` may be `auto`; `scheduler`
    a name from `date_diffusion.schedulers.SCHEDULERS`; `loras` (file, scale) pairs; `offload` `model` or
    `sequential` (diffusers' CPU offload; needs an accelerator)."""
    from date_diffusion.pipelines import DATEPipeline
    from date_diffusion.schedulers import make_scheduler

    fam = family_of(model, family)
    torch_dtype = resolve_dtype(dtype, fam, device)
    with held(*MODEL_LOGGERS):  # the libraries' notices on the way to a load error: the error says it, in one line
        if is_single_file(model):
            cls = by_name(fam).date_pipeline()
            try:
                pipe = cls.from_single_file(str(model), config=config, dtype=torch_dtype)
            except (OSError, ValueError) as err:
                raise explain_load_error(model, err, None if config is not None else _config_repo(model)) from err
        else:
            try:
                if family is None:
                    pipe = DATEPipeline.from_pretrained(model, dtype=torch_dtype)
                else:  # the caller's word: a folder whose index names another pipeline with this family's parts
                    pipe = load_component(by_name(fam).date_pipeline(), model, dtype=torch_dtype)
            except (IndexError, KeyError, TypeError, AttributeError, ZeroDivisionError) as err:  # a config that
                raise explain_load_error(model, err) from err  # diffusers builds nothing from (train timesteps 0)
        check_built(pipe, model)
    if scheduler is not None:
        pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    add_loras(pipe, loras)
    if offload is None:
        return pipe.to(device)
    if offload not in ("model", "sequential"):
        raise ValueError(f"offload must be 'model' or 'sequential', got {offload!r}")
    enable = pipe.enable_model_cpu_offload if offload == "model" else pipe.enable_sequential_cpu_offload
    enable(device=device)
    return pipe


def check_built(pipe, model) -> None:
    """What a model's configs decide together, checked once it is built and before any work: the default image size
    (the denoiser's sample_size times the VAE's scale) within the largest side any supported model samples, and a
    CLIP tokenizer's length (what the stock pipelines pad every prompt to) within its text encoder's positions. Either
    out of bounds (a damaged or hand-edited config) would be found only by an allocation of terabytes, which ends the
    process without a word: `ComponentError` naming the config instead."""
    from date_diffusion.core.settings import Size

    folder = Path(str(model))

    def config(component: str, name: str) -> str:
        return str(folder / component / name) if folder.is_dir() else f"{model} (its {component}'s {name})"

    denoiser = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
    sample_size = getattr(getattr(pipe.components.get(denoiser), "config", None), "sample_size", None)
    sizes = sample_size if isinstance(sample_size, (list, tuple)) else [sample_size]
    where = f"{config(denoiser, 'config.json')}: its sample_size {json_spelling(sample_size)}"
    if sample_size is not None and not all(type(v) is int and v >= 1 for v in sizes):
        raise ComponentError(f"{where} is not a positive whole number of latent pixels; {_FIX}")
    try:
        shape = pipe.default_image_shape()
    except TypeError:  # the pipeline's default size multiplies a sample_size that is null (or absent)
        raise ComponentError(f"{where} is no number, and {type(pipe).__name__} reads its default image size from "
                             f"it; {_FIX}") from None  # fmt: skip
    if not all(type(v) is int for v in shape):  # a (height, width) list where the pipeline reads one side
        raise ComponentError(
            f"{where} is not a whole number of latent pixels, which {type(pipe).__name__} reads as one side; {_FIX}"
        )
    side, high = max(shape), Size().high
    if side > high:
        raise ComponentError(f"{config(denoiser, 'config.json')}: its sample_size makes a default image of {side} px "
                             f"a side, more than the {high} px any supported model samples; {_FIX}")  # fmt: skip
    for component, key, why in _config_problems(pipe):
        raise ComponentError(f"{config(component, _CONFIG_FILES.get(component, 'config.json'))}: its {key} {why}; "
                             f"{_FIX}")  # fmt: skip
    for name, tokenizer in pipe.components.items():
        if not name.startswith("tokenizer") or not hasattr(tokenizer, "model_max_length"):
            continue
        length = tokenizer.model_max_length  # what prompts are padded and cut to
        if type(length) is not int or length < 1:
            raise ComponentError(f"{config(name, 'tokenizer_config.json')}: model_max_length {length!r} is not a "
                                 f"positive whole number of tokens; {_FIX}")  # fmt: skip
        if not type(tokenizer).__name__.startswith("CLIPTokenizer"):
            continue
        encoder = name.replace("tokenizer", "text_encoder")
        positions = getattr(getattr(pipe.components.get(encoder), "config", None), "max_position_embeddings", None)
        if isinstance(positions, int) and length > positions:
            raise ComponentError(f"{config(name, 'tokenizer_config.json')}: model_max_length {length} is more than "
                                 f"the {positions} positions {encoder} reads; {_FIX}")  # fmt: skip


def check_once_each(paths) -> None:
    """LoRA files given twice, under one name or two (`x.safetensors`, `./x.safetensors`), or as two copies of the
    same bytes, are refused: the weights would be added twice."""
    for k, path in enumerate(paths):
        twin = next((p for p in paths[:k] if _same_file(path, p)), None)
        if twin is not None:
            raise ValueError(f"LoRA file {path!r} is given twice (also as {twin!r}, the same weights): give each LoRA "
                             "once, with the scale it should have")  # fmt: skip


def _same_file(a, b) -> bool:
    """The same file, or two files of the same bytes (compared only where their sizes agree)."""
    import filecmp

    try:
        return Path(a).samefile(b) or filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


_CONFIG_FILES = {"scheduler": "scheduler_config.json"}
# the values diffusers' schedulers take for these keys (a config may omit them); any other is found only when
# sampling starts (an error that blames the step count), or never (an unknown prediction type)
SCHEDULER_CHOICES = {
    "prediction_type": ("epsilon", "v_prediction", "sample", "flow_prediction"),
    "timestep_spacing": ("leading", "trailing", "linspace"),
}


# (the kind a component's parameter defaults to, the kinds a config value of it may not be): text where a truth
# value, a number or an array is meant (`"clip_sample": "false"` acts as true), true or false where a number, text or
# an array is (`True` acts as 1); a number beside an array stays (`attention_head_dim`: 8 or one per block)
_WRONG_KINDS = {"true or false": {"text"}, "a number": {"text", "true or false"}, "text": {"true or false"},
                "an array": {"text", "true or false"}}  # fmt: skip


def kind_problems(cls, config: Mapping):
    """(key, why) of each value of `config` of another JSON kind than the parameter of class `cls` it sets takes
    (compared with the parameter's default); nothing for a class that is not a diffusers `ConfigMixin`."""
    from diffusers.configuration_utils import ConfigMixin

    if not (isinstance(cls, type) and issubclass(cls, ConfigMixin)):
        return
    params = inspect.signature(cls.__init__).parameters
    for key, value in config.items():
        default = params[key].default if key in params else None
        if default is None or default is inspect.Parameter.empty or value is None:
            continue
        want, got = json_kind(default), json_kind(value)
        if got in _WRONG_KINDS.get(want, ()):
            yield key, (f"is {got}, {json.dumps(value)}, where {cls.__name__} takes {want} (its default: "
                        f"{json.dumps(default)})")  # fmt: skip


def _type_problems(pipe):
    """`kind_problems` of each component a pipeline was built with, by the config it was built from."""
    for name, component in pipe.components.items():
        for key, why in kind_problems(type(component), getattr(component, "config", None) or {}):
            yield name, key, why


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


MAX_LATENT_SCALE = 100.0  # a VAE's scaling_factor and |shift_factor| (SD 0.18215, SD3 1.5305, FLUX 0.3611)


def value_problems(component: str, config: Mapping):
    """(key, why) of each value of a component's config that no sampler can use, read from the config file before
    the library builds anything from it (`check_component`) and again from what was built (`check_built`, a
    scheduler given with --scheduler too): a scheduler's prediction type or timestep spacing of no known kind, a
    training schedule of no whole length or beyond any model's (the scheduler allocates it first), a linear beta
    schedule that is not a rising one in [0, 1] (a negative end gives complex square roots), `trained_betas` of
    another length than the schedule; a VAE latent scale that is not a positive finite number up to
    `MAX_LATENT_SCALE`, or a shift beyond it."""
    import math

    if component.startswith("scheduler"):
        for key, choices in SCHEDULER_CHOICES.items():
            value = config.get(key)
            if value is not None and value not in choices:
                yield key, f"{value!r} is none of {', '.join(choices)}"
        steps = config.get("num_train_timesteps")
        if _number(steps) and not (type(steps) is int and 1 <= steps <= MAX_TRAIN_TIMESTEPS):
            # a float gives the schedule's linspace a fraction of a step; a huge one allocates gigabytes first
            yield "num_train_timesteps", (f"{json.dumps(steps)} is no whole number of training steps from 1 to "
                                          f"{MAX_TRAIN_TIMESTEPS:,} (SD: 1000)")  # fmt: skip
        start, end = config.get("beta_start"), config.get("beta_end")
        linear = config.get("beta_schedule", "linear") in ("linear", "scaled_linear")
        if linear and all(_number(v) for v in (start, end)) and not 0 <= start < end <= 1:
            yield "beta_start/beta_end", f"{start!r}/{end!r} is no rising noise schedule in [0, 1]"
        betas = config.get("trained_betas")
        if isinstance(betas, list) and type(steps) is int and len(betas) != steps:
            yield "trained_betas", (f"holds {len(betas):,} values, and num_train_timesteps is {steps:,}: the "
                                    "schedule has one beta per training step")  # fmt: skip
    if component == "vae":
        scale, shift = config.get("scaling_factor"), config.get("shift_factor")
        if _number(scale) and not (math.isfinite(scale) and 0 < scale <= MAX_LATENT_SCALE):
            yield "scaling_factor", (f"{scale!r} is not a positive finite number up to {MAX_LATENT_SCALE:g} (SD "
                                     "0.18215): latents scaled by it decode from noise or from nothing")  # fmt: skip
        if _number(shift) and not (math.isfinite(shift) and abs(shift) <= MAX_LATENT_SCALE):
            yield "shift_factor", f"{shift!r} is beyond any latent space's shift (|x| <= {MAX_LATENT_SCALE:g})"


def _config_problems(pipe):
    """(component, key, why) of each config value a model's components were built from that no sampler can use
    (`kind_problems`, `value_problems`)."""
    yield from _type_problems(pipe)
    for name in ("scheduler", "vae"):
        config = getattr(getattr(pipe, name, None), "config", None) or {}
        for key, why in value_problems(name, config):
            yield name, key, why


def _config_repo(path) -> str | None:
    """The hub repo whose configs diffusers completes a single file with when no `config` is given."""
    from diffusers.loaders.single_file_utils import fetch_diffusers_config

    try:
        checkpoint = _Shapes(path) if Path(path).suffix == ".safetensors" else None
        return fetch_diffusers_config(checkpoint)["pretrained_model_name_or_path"] if checkpoint else None
    except Exception:  # an unusual layout: the message then names --config alone
        return None


# what diffusers and transformers say while a model loads (weights not used or newly initialized, a fetch that failed)
MODEL_LOGGERS = ("diffusers.models.modeling_utils", "diffusers.models.auto_model", "diffusers.pipelines.pipeline_utils",
                 "diffusers.loaders.single_file_model", "transformers.modeling_utils",
                 "transformers.utils.loading_report")  # fmt: skip
LORA_LOGGERS = ("diffusers.loaders.peft", "diffusers.loaders.lora_base")  # what diffusers says on loading a LoRA


def add_loras(pipe, loras) -> None:
    """Load each (file, scale) LoRA as its own adapter and activate them all with their scales."""
    if not loras:
        return
    check_once_each([path for path, _ in loras])
    names = []
    for k, (path, scale) in enumerate(loras):
        LORA_SCALE.check(scale, f"the scale of LoRA {path!r}")
        if not Path(path).is_file():
            raise ValueError(f"LoRA file {path!r} not found")
        check_lora_file(path)
        name = f"lora_{k}"
        with held(*LORA_LOGGERS):  # diffusers' notices of a LoRA that does not load: the error below says it
            try:
                pipe.load_lora_weights(str(path), adapter_name=name)
            except Exception as err:  # not a LoRA, or one for another model
                if "not found in the base model" in str(err):  # peft: its keys name modules this model lacks
                    raise ValueError(f"LoRA {path!r} matches no module of {type(pipe).__name__}: its keys name "
                                     "modules this model lacks (made for another model, or its keys renamed)"
                                     ) from err  # fmt: skip
                raise ValueError(f"could not load LoRA {path!r} into {type(pipe).__name__}: {err}") from err
            if name not in {a for adapters in pipe.get_list_adapters().values() for a in adapters}:
                raise ValueError(f"LoRA {path!r} matches no module of {type(pipe).__name__}: it was made for another "
                                 "model family (or holds no weights diffusers can place)")  # fmt: skip
        names.append(name)
    pipe.set_adapters(names, adapter_weights=[scale for _, scale in loras])


def stock_defaults(family: str) -> dict:
    """`num_inference_steps` and `guidance_scale` of the family's stock diffusers pipeline (its `__call__`). A stock
    guidance scale of None (Qwen-Image's: an input of guidance-distilled transformers only, its guidance being
    `true_cfg_scale`) is 1, no guidance: the settings need a number, and such a transformer does not read it."""
    params = inspect.signature(by_name(family).date_pipeline().__call__).parameters
    defaults = {k: params[k].default for k in ("num_inference_steps", "guidance_scale")}
    return {**defaults, "guidance_scale": 1.0 if defaults["guidance_scale"] is None else defaults["guidance_scale"]}


def family_defaults(family: str) -> dict:
    """Sampling defaults per family: the paper's where the paper ran the family, else the stock pipeline's."""
    return {**stock_defaults(family), **by_name(family).sampling}


def reward_decoder(model) -> str:
    """Where the tiny decoder of `model`'s approximate reward path is (`--reward-decoder tiny`): the one its folder
    names (`model_folder`: `reward_decoder`), else its family's TAESD (ModelNotFoundError where it has none)."""
    own = read_model_file(model)
    if own is not None and own.reward_decoder is not None:
        return own.reward_decoder
    family = by_name(family_of(model))
    if not family.tiny_decoder:  # a family whose record names none (none is published for its latents)
        raise ModelNotFoundError(f"{family.title} has no published tiny decoder (AutoencoderTiny) for its latents: "
                                 "name a decoder folder or hub id, or use --reward-resolution")  # fmt: skip
    return family.tiny_decoder


def tiny_decoder_for(model, spec: str = "tiny"):
    """An `AutoencoderTiny` for the approximate reward path: `tiny` picks the model's own (`reward_decoder`: the
    family's TAESD, or the one its folder names, e.g. the toy world's distilled decoder); anything else is a folder
    or hub id."""
    from diffusers import AutoencoderTiny

    return load_component(AutoencoderTiny, reward_decoder(model) if spec == "tiny" else spec)


def check_tiny_decoder(model, spec: str = "tiny") -> None:
    """That `tiny_decoder_for(model, spec)` finds its decoder, without loading it (ModelNotFoundError naming the
    spec otherwise): a folder must hold a `config.json`; a hub id must be cached when offline."""
    where = reward_decoder(model) if spec == "tiny" else spec
    local = Path(str(where)).expanduser()
    if local.is_symlink() and not local.exists():  # a link that leads nowhere (or loops): named as such
        raise ModelNotFoundError(f"reward decoder {spec!r}: {explain_load_error(where, FileNotFoundError())}")
    if local.exists() or not is_hub_id(where):
        own = read_model_file(model) if spec == "tiny" else None
        given = f"{own.path}: reward_decoder" if own is not None and own.reward_decoder else "reward decoder"
        named = f"{given} {spec if given == 'reward decoder' else where!r}"
        if not (local / "config.json").is_file():
            raise ModelNotFoundError(f"{named}: {str(local)!r} is not a decoder folder (no config.json)")
        from date_diffusion.schemas import loads

        try:
            kind = loads((local / "config.json").read_text(encoding="utf-8")).get("_class_name")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            kind = None  # the library's reading names a damaged config
        if isinstance(kind, str) and kind != "AutoencoderTiny":  # a VAE, a UNet: read by its config, never loaded
            raise ModelNotFoundError(f"{named}: {str(local)!r} holds the model class {kind} (its config.json), not a "
                                     "tiny decoder (AutoencoderTiny, such as madebyollin/taesd)")  # fmt: skip
        return
    if is_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(str(where), "config.json"), str):
            raise ModelNotFoundError(
                f"reward decoder {spec!r}: {where} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
                f"fetch it once with `hf download {where}`"
            )
