"""DATE's adapted embeddings on disk: safetensors with one tensor per conditioning part and update step.

Keys are `<stage>/<part>`: the stage is `original`, `step_NNNN` (after the update at loop index NNNN) or
`final`; the part is the stock diffusers name of the tensor (`prompt_embeds`, `pooled_prompt_embeds`,
`add_time_ids`, ...), with its own shape and a leading batch dimension. The metadata (strings, as safetensors
stores them) says what made them: `format`, `pipeline`, `parts` (names and per-sample shapes, JSON), and whatever
the writer adds (model, prompt, seed, steps, guidance, DATE settings). A file is enough to re-create the DATE
image without the reward model (`replay_embeddings=` of every DATE pipeline, `generate --replay-embeddings`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from date_diffusion.core.text import quoted
from date_diffusion.outputs import EMBEDDINGS_FORMATS, PNG_SIGNATURE, atomic_path
from date_diffusion.pipelines.conditioning import unpack
from date_diffusion.schemas import EMBEDDINGS, SchemaError, loads, safetensors_problem

FORMAT = f"{EMBEDDINGS_FORMATS}4"  # format 3, always sealed: a file of this format without its seal was edited
FORMAT_3 = f"{EMBEDDINGS_FORMATS}3"  # every metadata value JSON; sealed by later versions only: still read
FORMAT_2 = f"{EMBEDDINGS_FORMATS}2"  # text kept as it was: still read


@dataclass
class SavedEmbeddings:
    stages: dict[str, dict[str, torch.Tensor]]  # stage -> part name -> [B, ...]
    metadata: dict = field(default_factory=dict)  # JSON-decoded values

    @property
    def parts(self) -> list[tuple[str, tuple[int, ...]]]:
        return [(name, tuple(shape)) for name, shape in self.metadata["parts"]]

    def packed(self, stage: str) -> torch.Tensor:
        """The stage's parts flattened and concatenated per sample, `[B, N]` (the sampling loop's layout)."""
        return torch.cat([self.stages[stage][name].flatten(1) for name, _ in self.parts], dim=1)

    def update_steps(self) -> list[int]:
        return sorted(int(s[5:]) for s in self.stages if s.startswith("step_"))

    def history(self) -> dict[int, torch.Tensor]:
        """Loop index -> packed embedding in use from that update step on (what the `Replay` hook replays)."""
        return {i: self.packed(f"step_{i:04d}") for i in self.update_steps()}

    def select(self, index: int) -> SavedEmbeddings:
        """Image `index` of a batch file, as a one-image file."""
        stages = {s: {n: t[index : index + 1] for n, t in parts.items()} for s, parts in self.stages.items()}
        return SavedEmbeddings(stages, dict(self.metadata))

    def save(self, path) -> Path:
        """Write atomically (temporary name, then rename). Each stage is written as its own copy: stages that are
        one tensor (the final embedding of a run no update moved is its original) would be refused by safetensors
        as shared memory."""
        tensors = {
            f"{stage}/{name}": t.detach().cpu().contiguous().clone()
            for stage, parts in self.stages.items()
            for name, t in parts.items()
        }
        # every value as JSON, text too: a prompt that reads as JSON (`[a red circle]`, `123`) is read back as text
        meta = {k: json.dumps(v) for k, v in self.metadata.items() if k not in ("format", "sealed")}
        meta["format"] = FORMAT
        meta["sealed"] = json.dumps(_seal(meta, tensors))
        with atomic_path(Path(path)) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return Path(path)


def _seal(raw_meta: dict, tensors: dict) -> str:
    """The fingerprint of a file's content as written (every metadata text but the seal, every tensor's name, shape,
    type and bytes): a value edited by hand since (a seed, a guidance, a negative prompt) is told apart."""
    import hashlib

    digest = hashlib.sha256()
    for key in sorted(k for k in raw_meta if k != "sealed"):
        digest.update(f"{key}\0{raw_meta[key]}\0".encode())
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        digest.update(f"{key}\0{tuple(t.shape)}\0{t.dtype}\0".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:20]


def from_packed(packed: dict[str, torch.Tensor], names, shapes, metadata: dict) -> SavedEmbeddings:
    """Unpack the loop's `[B, N]` tensors of each stage into their named parts."""
    stages = {stage: dict(zip(names, unpack(t.detach(), shapes))) for stage, t in packed.items()}
    return SavedEmbeddings(stages, {**metadata, "parts": [[n, list(s)] for n, s in zip(names, shapes)]})


def load_embeddings(path) -> SavedEmbeddings:
    """Read a file written by `SavedEmbeddings.save` (raises ValueError, naming the file, for anything else)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # missing, truncated, not safetensors
        try:
            with path.open("rb") as f:
                image = f.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
        except OSError:
            image = False
        if image:  # the image beside it, given for its embeddings
            raise ValueError(f"{path} is a PNG image, not an embeddings file: give the NAME-embeddings.safetensors "
                             "that `generate --save-embeddings` wrote beside it") from err  # fmt: skip
        raise ValueError(f"{path} is not a readable embeddings file: it {safetensors_problem(path, err)}") from err
    found = raw_meta.get("format")
    if found not in (FORMAT, FORMAT_3, FORMAT_2):
        said = "it has no metadata" if not raw_meta else "its metadata has no format" if found is None else None
        raise ValueError(f"{path} is not a date-diffusion embeddings file of format {FORMAT!r} "
                         f"({said or f'its format is {quoted(found)}'})")  # fmt: skip
    if found == FORMAT and "sealed" not in raw_meta:  # written sealed, always: the seal was removed by hand
        raise SchemaError(f"{path}: its seal is missing (every file of its format is sealed when written: its "
                          f"metadata was edited by hand); {EMBEDDINGS.fix}")  # fmt: skip
    if "sealed" in raw_meta and raw_meta["sealed"] != json.dumps(_seal(raw_meta, tensors)):
        raise SchemaError(f"{path}: its content was changed since it was written (a setting or an embedding edited "
                          f"by hand: its seal no longer matches); {EMBEDDINGS.fix}")  # fmt: skip
    meta = {"format": found}
    for k, v in raw_meta.items():
        if k == "format":
            continue
        try:
            meta[k] = loads(v)
        except json.JSONDecodeError as err:  # format 2 stored text (a prompt) as it is, an object or a list as JSON
            if found != FORMAT_2 or v.lstrip()[:1] in ("{", "["):
                raise SchemaError(
                    f"{path}: its metadata {k!r} is not readable JSON ({err}); {EMBEDDINGS.fix}"
                ) from None
            meta[k] = v
    stages: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        stage, _, name = key.partition("/")
        stages.setdefault(stage, {})[name] = t
    EMBEDDINGS.check(meta, path)
    _check_parts(path, meta["parts"], stages)
    _check_history(path, stages)
    return SavedEmbeddings(stages, meta)


def _check_history(path, stages: dict) -> None:
    """The stages tell one story: the `final` embedding is the one its last update left (`step_NNNN`), or the
    original where no update ran. A step removed or added by hand (which would replay another image under the
    file's name) breaks it, and is named."""
    steps = sorted(s for s in stages if s.startswith("step_"))
    last = steps[-1] if steps else "original"
    if "final" in stages and any(not torch.equal(t, stages[last][name]) for name, t in stages["final"].items()):
        what = f"its last update's ({last})" if steps else "its original (it holds no update)"
        raise SchemaError(f"{path}: its 'final' embedding is not {what}: an update stage was removed or added "
                          f"since it was written; {EMBEDDINGS.fix}")  # fmt: skip


def _check_parts(path, parts, stages: dict) -> None:
    """Every stage holds every part the metadata lists, one shape for all images, finite values."""
    fix = EMBEDDINGS.fix
    if not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], list) for p in parts):
        raise SchemaError(f"{path} is not a valid {EMBEDDINGS.what}: field 'parts' must list [name, shape]; {fix}")
    if "original" not in stages:
        raise SchemaError(f"{path} lacks its 'original' embeddings; {fix}")
    bad = [s for s in stages if s not in ("original", "final") and not re.fullmatch(r"step_\d{4}", s)]
    if bad:
        raise SchemaError(f"{path} holds stages {bad} of no known kind (original, final, step_NNNN); {fix}")
    batch = {t.shape[0] for parts_ in stages.values() for t in parts_.values()}
    for stage, tensors in stages.items():
        for name, shape in parts:
            t = tensors.get(name)
            if t is None or list(t.shape[1:]) != list(shape) or len(batch) != 1:
                got = None if t is None else list(t.shape)
                raise SchemaError(f"{path}: part {name!r} of stage {stage!r} has shape {got}, its metadata says "
                                  f"[batch, {', '.join(map(str, shape))}] for every stage; {fix}")  # fmt: skip
            if not torch.isfinite(t).all():
                raise SchemaError(f"{path}: part {name!r} of stage {stage!r} holds NaN or infinite values; {fix}")


def load_packed(path) -> dict[str, torch.Tensor]:
    """Every stage of an embeddings file in the sampling loop's packed `[B, N]` layout (stage name -> tensor)."""
    saved = load_embeddings(path)
    return {stage: saved.packed(stage) for stage in saved.stages}


def as_saved(replay) -> SavedEmbeddings:
    """A `replay_embeddings=` argument (a file path or a loaded `SavedEmbeddings`) as `SavedEmbeddings`."""
    return replay if isinstance(replay, SavedEmbeddings) else load_embeddings(replay)


def replay_schedule(saved: SavedEmbeddings, pipeline_name: str, cond, n_steps: int, texts=None) -> dict:
    """The saved per-update embeddings as the loop's replay schedule (`sampling.date_step.Replay`), after checking
    they fit this call: the same pipeline, conditioning parts and shapes, original embedding (`texts`: the call's
    prompts, for the message), and update steps inside its `n_steps` loop steps."""
    if saved.metadata.get("pipeline") != pipeline_name:
        raise ValueError(f"replay_embeddings were saved by {saved.metadata.get('pipeline')!r}, not {pipeline_name!r}")
    names = [n for n, _ in saved.parts]
    if names != list(cond.names) or [tuple(s) for _, s in saved.parts] != [tuple(s) for s in cond.shapes]:
        raise ValueError(
            f"replay_embeddings have parts {saved.parts}, this call has {list(zip(cond.names, cond.shapes))}"
        )
    original = saved.packed("original").to(cond.cond.device, cond.cond.dtype)
    if original.shape[0] != cond.cond.shape[0]:
        raise ValueError(f"replay_embeddings hold {original.shape[0]} images, this call makes {cond.cond.shape[0]}")
    if not torch.allclose(original, cond.cond, rtol=1e-4, atol=1e-5):
        raise ValueError(_start_mismatch(saved.metadata, texts))
    outside = [i for i in saved.update_steps() if i >= n_steps]
    if outside:
        saved_steps = saved.metadata.get("steps")
        raise ValueError(
            f"replay_embeddings update at loop indices {outside}, outside this call's {n_steps} steps "
            f"(0..{n_steps - 1}): use the step count they were saved with ({saved_steps})"
        )
    _check_schedule(saved, n_steps)
    return {i: e.to(cond.cond.device, cond.cond.dtype) for i, e in saved.history().items()}


def _check_schedule(saved: SavedEmbeddings, n_steps: int) -> None:
    """The DATE settings a file states (`date`, which a replay's record repeats) are those its stages were made
    with: a run of `n_steps` loop steps under them updates at exactly the file's update steps (every update step
    writes one, skipped or not). A file whose settings were edited since is named."""
    from date_diffusion.core.config import DATEConfig
    from date_diffusion.core.settings import SettingError
    from date_diffusion.sampling.date_step import update_steps

    if saved.metadata.get("date") is None:
        return
    try:
        expected = update_steps(DATEConfig.from_dict(saved.metadata["date"]), n_steps)
    except (SettingError, ValueError) as err:
        raise ValueError(
            f"replay_embeddings: its 'date' settings are no DATE setting ({err}); {EMBEDDINGS.fix}"
        ) from None
    if expected != saved.update_steps():
        raise ValueError(f"replay_embeddings: its 'date' settings update at steps {expected} of {n_steps}, and it "
                         f"holds the updates of steps {saved.update_steps()} (its settings were changed since it "
                         f"was written); {EMBEDDINGS.fix}")  # fmt: skip


def _start_mismatch(meta: dict, texts) -> str:
    """Why a replay's original embedding is not this call's: another prompt, else another model or settings."""
    theirs = meta.get("prompts") or ([meta["prompt"]] if "prompt" in meta else None)
    ours = list(dict.fromkeys(texts)) if texts else None
    if theirs is not None and ours is not None and list(dict.fromkeys(theirs)) != ours:
        return f"replay_embeddings were saved for the prompt {theirs}, this call has {ours}: use the saved prompt"
    model = meta.get("model_arg") or meta.get("model")
    return (
        "replay_embeddings start from another embedding than this call's, for the same prompt: use the model "
        f"({model!r}), negative prompt and dtype they were saved with"
    )


def save_run(path, cond, result, metadata: dict) -> None:
    """A run's original, final and per-update conditioning (`result`: the loop's `SampleResult`), each part under
    its stock name (`cond`: the call's `PackedConditioning`), with `metadata`."""
    packed = {"original": cond.cond, "final": result.embeds}
    packed.update({f"step_{i:04d}": e for i, e in (result.embeds_history or {}).items()})
    from_packed(packed, cond.names, cond.shapes, metadata).save(path)


REPLAY_KEYS = ("prompt", "negative_prompt", "seed", "model", "family", "scheduler", "scheduler_name", "steps",
               "guidance_scale", "height", "width", "num_frames", "dtype", "loras", "reward", "date",
               "date_diffusion_version", "model_files", "model_content", "lora_files", "batch_size")  # fmt: skip


def save_replayable(path, one: SavedEmbeddings, record: dict, model_arg: str | None) -> None:
    """One image's embeddings with what re-creates its DATE image from its record (`generate --replay-embeddings`
    reads it: `schemas.REPLAY`): the one writer of a replayable file, for `generate --save-embeddings` and the web
    page's download alike. `model_arg` is the model as it was given (a hub id, a folder), else the record's."""
    one.metadata.update({k: record[k] for k in REPLAY_KEYS if record.get(k) is not None})
    one.metadata["model_arg"] = model_arg or record["model"]
    one.metadata.pop("prompts", None)
    one.save(path)
