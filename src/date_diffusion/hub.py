"""Hub model ids of the paper and of the preference rewards, fetching files, and how loading failures are explained
to the user. (Families live in `families.py`; a model's reward decoder is found by `pipelines.loading`.)"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

# torch, diffusers and huggingface_hub are imported inside the functions: light layers (rewards' names, the
# command line's checks) import this module.

# Checkpoints of the paper (need network once, or a local copy).
PAPER_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
PAPER_CLIP = "openai/clip-vit-large-patch14"


# Preference rewards (need network once, or local copies; see docs/python-api.md).
IMAGEREWARD_REPO = "THUDM/ImageReward"  # files ImageReward.pt, med_config.json
IMAGEREWARD_TOKENIZER = "google-bert/bert-base-uncased"
PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
AESTHETIC_REPO = "camenduru/improved-aesthetic-predictor"  # LAION's sac+logos+ava1-l14-linearMSE.pth
AESTHETIC_FILE = "sac+logos+ava1-l14-linearMSE.pth"


def fetch_file(repo_or_dir, filename: str) -> Path:
    """A file from a local folder, or from the Hugging Face cache / hub (honours HF_HUB_OFFLINE)."""
    local = Path(str(repo_or_dir))
    if local.is_dir():
        if not (local / filename).exists():
            raise ModelNotFoundError(f"{local / filename} not found")
        return local / filename
    if local.is_file():
        return local
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(str(repo_or_dir), filename))
    except Exception as err:  # offline, missing, or no network: one explanation for all
        raise explain_load_error(repo_or_dir, err) from err


def load_state_dict(path: Path) -> dict:
    """Weights from .safetensors, or from a third-party .pt/.pth checkpoint read with weights_only (no code)."""
    import torch

    from date_diffusion.core.text import one_line

    safetensors = str(path).endswith(".safetensors")
    kind = "safetensors file" if safetensors else "PyTorch checkpoint (.pt, .pth, .bin)"
    try:
        if safetensors:
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001  (a text file, a damaged download: pickle, zip and safetensors errors)
        if safetensors:
            from date_diffusion.schemas import safetensors_problem

            raise ValueError(f"{str(path)!r} is not a readable {kind}: it {safetensors_problem(path, err)}") from err
        raise ValueError(f"{str(path)!r} is not a readable {kind} ({type(err).__name__}: "
                         f"{one_line(str(err), 300)})") from err  # fmt: skip
    return state.get("state_dict", state) if isinstance(state, dict) else state


class ModelNotFoundError(OSError):
    pass


def is_offline() -> bool:
    """Whether HF_HUB_OFFLINE forbids the hub (as huggingface_hub reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
HUB_NAME = r"[A-Za-z0-9_][\w.-]*/[\w.-]+"  # how a hub repository is spelled: owner/name
HUB_ID = re.compile(rf"(?:^|[:(+*;=])({HUB_NAME})")  # owner/name, alone or in a spec


# the options whose values may name a hub repository (a model, its configs, a reward, a decoder)
HUB_OPTIONS = ("model", "config", "reward", "reward_decoder", "eval_clip")


def offline_without_network(args, hub_named: bool = False) -> str | None:
    """When a command's `HUB_OPTIONS` (of its parsed arguments `args`) name a hub id that is no local path, and the
    hub's host name does not resolve (no network, no proxy set, HF_HUB_OFFLINE not set): set HF_HUB_OFFLINE=1 before
    huggingface_hub is imported, so that cached models load at once and a missing one is named at once, instead of
    five retries of every request over half a minute; the note saying so, or None. `hub_named`: the command names a
    hub model by another name (a reward such as `clip-l`, the caller knows). Commands that name no hub id (the toy
    world, an output folder like `runs/today`) look nothing up."""
    if is_offline() or any(os.environ.get(k) for k in PROXY_VARIABLES) or "huggingface_hub" in sys.modules:
        return None
    values = [getattr(args, name, None) for name in HUB_OPTIONS]
    ids = [m.group(1) for v in values if isinstance(v, str) for m in HUB_ID.finditer(v)]
    if not hub_named and not any(not Path(i).expanduser().exists() for i in ids):
        return None
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError as err:
        os.environ["HF_HUB_OFFLINE"] = "1"
        return (f"{host} cannot be resolved ({err.strerror or err}): working offline (HF_HUB_OFFLINE=1), from the "
                "Hugging Face cache")  # fmt: skip
    return None


def is_hub_id(text) -> bool:
    """Whether `text` is spelled as a hub repository is (`owner/name`)."""
    return re.fullmatch(HUB_NAME, str(text)) is not None


def is_local_path(id_or_path) -> bool:
    """Whether a model or reward source is a path, never a hub id: written as one (`/...`, `./...`, `~/...`), or
    the name of an entry here, a symbolic link that leads nowhere included. One that does not exist (or leads
    nowhere) is a missing file or folder, not a model to look up on the hub."""
    return str(id_or_path).startswith(("/", ".", "~")) or os.path.lexists(os.path.expanduser(str(id_or_path)))


def hub_could_hold(text) -> bool:
    """Whether `text` is a repository id the hub accepts at all (`huggingface_hub`'s own check: `gpt2` as well as
    `owner/name`; `is_hub_id` asks for the `owner/name` spelling the package's own names use)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(str(text))
    except HFValidationError:
        return False
    return True


def explain_load_error(id_or_path, err: Exception, config_repo: str | None = None) -> ModelNotFoundError:
    """One line that says what `id_or_path` is and how to fix loading it. For a single checkpoint file,
    `config_repo` is the hub repo diffusers reads its configs from (when no `--config` was given)."""
    offline = is_offline()
    path = Path(str(id_or_path)).expanduser()
    why = f"({type(err).__name__}: {(str(err).splitlines() or [''])[0][:300]})"
    if path.is_file():
        where = f"its configs come from the hub repo {config_repo}, " if config_repo else ""
        cached = "which is not in the Hugging Face cache" + (" and HF_HUB_OFFLINE is set" if offline else "")
        hint = (
            f"it is a single checkpoint file; {where}{cached if config_repo else 'it could not be read'} {why}. "
            "Fix: pass --config FOLDER (a diffusers folder of the same model, e.g. saved with save_pretrained)"
            + (f" or run `hf download {config_repo} --exclude '*.safetensors' '*.bin'` once" if config_repo else "")
        )
    elif path.is_dir() and not (path / "model_index.json").exists() and not (path / "config.json").exists():
        hint = (
            "the folder has no model_index.json (nor a model's config.json): give a diffusers folder, one saved "
            "with save_pretrained, or a checkpoint file"
        )
    elif path.is_dir():
        hint = f"the folder exists but is not a complete diffusers checkpoint {why}"
    elif path.is_symlink():  # a link whose target is missing, or a loop of links
        try:
            path.resolve(strict=True)
            loop = False
        except RuntimeError:  # Python before 3.13
            loop = True
        except OSError as problem:
            loop = problem.errno == errno.ELOOP
        what = "that leads back to itself (a loop)" if loop else f"to {os.readlink(path)!r}, which is missing"
        hint = f"it is a symbolic link {what}: point it to the model, or give another path"
    elif is_local_path(id_or_path):
        hint = "no such file or folder: check the path"
    elif not hub_could_hold(id_or_path):  # `toy/`, `a/b/c`, `x y`: nothing the hub could hold, so no download advice
        hint = ("no such file or folder here, and no Hugging Face hub id (an id is NAME or OWNER/NAME, of letters, "
                "digits, '-', '_' and '.'): check the path or the id")  # fmt: skip
    else:
        hint = (
            "it is not a local folder and not in the Hugging Face cache"
            + (" (HF_HUB_OFFLINE is set, so nothing is downloaded)" if offline else " and could not be downloaded")
            + f". Fix: on a machine with network run `hf download {id_or_path}` (or save the model with"
            " save_pretrained) and pass the local folder"
        )
    return ModelNotFoundError(f"could not load {str(id_or_path)!r}: {hint}")


def load_component(cls, id_or_path, **kwargs):
    """`cls.from_pretrained(id_or_path)` with an error that says how to fix a missing or offline model, without the
    libraries' loading progress bars (`quiet.quiet_loading`)."""
    from date_diffusion.quiet import quiet_loading

    why = _other_kind(cls, Path(str(id_or_path)).expanduser())
    if why:  # before the library reads it: its notes on missing and unexpected weights would say it otherwise
        raise ModelNotFoundError(f"could not load {str(id_or_path)!r}: {why}")
    try:
        with quiet_loading():
            component = cls.from_pretrained(str(id_or_path), **kwargs)
    except ModelNotFoundError:  # named already (a component of a model folder: its file)
        raise
    except (OSError, ValueError) as err:
        raise explain_load_error(id_or_path, err) from err
    if hasattr(component, "get_vocab") and len(component) <= MIN_VOCABULARY:
        # transformers 5 builds an empty tokenizer (special tokens only) when no tokenizer file is found
        raise explain_load_error(id_or_path, OSError(f"no tokenizer files: a vocabulary of {len(component)} tokens"))
    return component


MIN_VOCABULARY = 2  # a tokenizer this small was built from no files


def _other_kind(cls, folder: Path) -> str | None:
    """Why the local `folder` holds no model of the transformers class `cls` (its config's `model_type` another, or a
    diffusion pipeline's folder), or None (not a folder, not a transformers model class, or of its kind)."""
    expected = getattr(getattr(cls, "config_class", None), "model_type", None)
    if not expected or not folder.is_dir():
        return None
    config = folder / "config.json"
    if not config.is_file():
        if (folder / "model_index.json").is_file():
            return (f"it is a diffusion pipeline's folder (model_index.json), not a {cls.__name__}: give that "
                    "model's own folder")  # fmt: skip
        return None
    try:
        found = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None  # the library names what is wrong with it
    if isinstance(found, str) and found != expected:
        what = f"a {expected!r} one"
        return f"its config.json is a {found!r} model, and {cls.__name__} is {what}: give a {cls.__name__} folder"
    return None


# OpenCLIP checkpoints carry no tokenizer: OpenCLIP's ViT models tokenize with CLIP's BPE vocabulary (49408 tokens,
# context 77), which the paper's CLIP's tokenizer has.
OPENCLIP_TOKENIZER = PAPER_CLIP
# HPSv2 / HPSv2.1 (Wu et al., 2023): OpenCLIP ViT-H-14 checkpoints, in the hub repo the official `hpsv2` package
# downloads from.
HPS_REPO = "xswu/HPSv2"
HPS_FILES = {"hpsv2": "HPS_v2_compressed.pt", "hpsv2.1": "HPS_v2.1_compressed.pt"}


def fetch_named_file(repo_or_dir, filename: str) -> Path:
    """`fetch_file`, with an error that names the file and the command that fetches it when a hub file is missing
    (offline, not cached, or no network)."""
    local = Path(str(repo_or_dir)).expanduser()
    if local.exists() or str(repo_or_dir).startswith(("/", ".", "~")):
        return fetch_file(local, filename)
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(str(repo_or_dir), filename))
    except Exception as err:  # offline, missing, or no network: one line that says how to get the file
        offline = is_offline()
        first = (str(err).splitlines() or [""])[0][:160]
        why = (
            "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache"
            if offline
            else f"{type(err).__name__}: {first}"
        )
        raise ModelNotFoundError(
            f"could not load {filename!r} from the hub repo {str(repo_or_dir)!r} ({why}). Fix: on a machine with "
            f"network run `hf download {repo_or_dir} {filename}`, or pass the local file"
        ) from err
