"""Generate and score every (method, prompt, seed) of a benchmark run: resumable, atomic, shardable.

Layout of a run directory:
  run.json                                    settings (a rerun with other settings is refused)
  images/<method>/<index:05d>/prompt.json     the run's record of the prompt: {"prompt", "tag", "spec", "source"}
  images/<method>/<index:05d>/metadata.jsonl  only for prompts read from GenEval's evaluation_metadata.jsonl: that
                                              line, GenEval's full record (so GenEval's evaluator reads a run folder
                                              with the real records, or not at all; `bench/export.py`)
  images/<method>/<index:05d>/samples/<seed:05d>.png   the image
  images/<method>/<index:05d>/samples/<seed:05d>.json  its record (written last: marks the image done)
An image depends only on (method, prompt, seed): one generator per image, whatever the batch or process count.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import time
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from date_diffusion.bench.export import GENEVAL_RECORD, PROMPT_RECORD, read_prompt_record, write_prompt_records
from date_diffusion.bench.suites import FILE_SUITES, SUITES, Item, UnknownCategories, load_suite, run_seeds
from date_diffusion.core.settings import DTYPES, is_integer, parse_integer
from date_diffusion.core.text import json_spelling, name_of, one_line, quoted
from date_diffusion.editing import CFG_SRC, SKIP_FRACTION
from date_diffusion.evaluation.methods import BEST_OF_STRIDE, Method, upgrade_reward
from date_diffusion.evaluation.suite_words import is_editing_suite
from date_diffusion.outputs import (
    PNG_PARAMETERS_KEY,
    PNG_RECORD_KEY,
    PNG_SIGNATURE,
    atomic_write,
    check_reader,
    check_seal,
    file_group,
    open_rgb,
    parameters_changed,
    pixels_digest,
    png_bytes,
    png_layout_problem,
    shown_digest,
)
from date_diffusion.pipelines.loading import tiny_decoder_for
from date_diffusion.rewards.registry import reward_from_spec
from date_diffusion.rewards.subjects import subject_prompts
from date_diffusion.schemas import (
    RECORD,
    RUN,
    SchemaError,
    loads,
    not_a_file,
    plain_numbers,
    read_json,
    read_small_bytes,
    read_small_text,
    sealed,
    what_is,
)
from date_diffusion.toyworld.edits import EditCase, score_edit, source_scene
from date_diffusion.toyworld.evaluator import EVALUATOR_VERSION, evaluate
from date_diffusion.toyworld.scene import PromptSpec, render


class SettingsMismatch(ValueError):
    pass


@dataclass
class RunSettings:
    suite: str
    captions: str | None
    limit: int | None
    seeds: list[int]
    steps: int
    guidance: float
    model: str
    reward: str
    eval_clip: str | None
    scheduler: str | None = None
    dtype: str = "float32"
    model_files: str | None = None  # `model_folder.fingerprint` of a local model: its files as the run made images
    model_content: str | None = None  # the same, of every file whole (a run.json of an earlier version lacks it)
    # the batches the run's images are made in (its first command's --batch-size), the processes that share its
    # images and, on a CPU, the threads each computes with (a float sum's order depends on them): a resume without
    # --batch-size makes its images in the same (`MADE_IN`); None in a run.json of an earlier version (unknown)
    batch_size: int | None = None
    processes: int | None = None
    threads: int | None = None
    fid_real: str | None = None  # folder of real images for FID (coco); the toy suite renders its own
    edit_skip: int | None = None  # editing suites: steps not regenerated
    cfg_src: float = CFG_SRC  # editing suites: guidance of the inversion (the regeneration uses `guidance`)
    inception_weights: str | None = None  # torch-fidelity Inception weights file, for Inception FID
    categories: list[str] | None = None  # only these prompt categories
    methods: dict = field(default_factory=dict)  # label -> `Method.record()`


def read_run(out: Path) -> dict:
    """A run's run.json as this version writes it (files of earlier versions converted: `upgrade_run`)."""
    path = Path(out) / "run.json"
    try:
        run = read_json(path, RUN)
    except SchemaError as err:
        raise SettingsMismatch(str(err)) from err
    try:
        run = upgrade_run(run)
    except (ValueError, KeyError, TypeError) as err:  # a method entry of no known layout
        raise SettingsMismatch(f"{path} is not a valid {RUN.what}: field 'methods': {err}; {RUN.fix}") from err
    why = _value_problem(run)
    if why:
        raise SettingsMismatch(f"{path} is not a valid {RUN.what}: {why}; {RUN.fix}")
    return plain_numbers(run)  # the values that ran, as the report and every reader state them


def _value_problem(run: dict) -> str | None:
    """A setting of run.json that no bench command writes (a precision, suite or scheduler of no known name, a
    reward spec that does not parse), named as the file's fault: the run's images are never blamed for a setting
    their run could not have had."""
    from date_diffusion.rewards.registry import RewardSpecError, UnknownReward, check_spec
    from date_diffusion.schedulers import SCHEDULERS

    known = {"dtype": DTYPES, "suite": SUITES, "scheduler": tuple(SCHEDULERS)}
    for name, names in known.items():
        if run.get(name) is not None and run[name] not in names:
            return f"field {name!r} must be one of {', '.join(names)}, got {json_spelling(run[name]):.60}"
    seeds = run["seeds"]  # as bench writes them (the order its batches follow)
    if seeds and seeds != run_seeds(seeds[0], len(seeds)):
        return f"field 'seeds' must be consecutive and ascending, as bench writes them, got {json_spelling(seeds):.60}"
    if run["suite"] in FILE_SUITES and not run.get("captions"):  # (a suite with its own prompts reads none: null)
        given = json_spelling(run.get("captions"))
        return f"field 'captions' must name suite {run['suite']!r}'s prompts file, got {given:.60}"
    for name in ("reward", "eval_clip"):
        try:
            if run.get(name):  # `"eval_clip": ""`: no held-out CLIP
                check_spec(run[name])
        except UnknownReward:  # well formed: a plugin's reward not installed here (a report reads no reward)
            continue
        except RewardSpecError as err:
            return f"field {name!r} is no reward spec ({str(err).split('; use ')[0]})"
    return None


def upgrade_run(run: dict) -> dict:
    """run.json of any version in this version's layout: each method entry through its method (`Method.from_record`
    reads earlier layouts), the toy world's rewards under their new names."""
    methods = {}
    for label, rec in run["methods"].items():
        try:
            methods[label] = Method.from_record(label, rec).record()
        except KeyError as err:  # an earlier layout's entry without a key it needs
            raise ValueError(f"method {quoted(label)}: lacks the key {quoted(err.args[0])}") from err
        except (ValueError, TypeError) as err:  # named down to the entry's key (`date.rho`) where known
            key = f", key {quoted(err.setting)}" if getattr(err, "setting", None) else ""
            raise ValueError(f"method {quoted(label)}{key}: {err}") from err
    rewards = {k: upgrade_reward(run[k]) for k in ("reward", "eval_clip") if k in run}
    added = {f.name: None for f in fields(RunSettings) if f.default is None}  # settings a later version added
    return {**added, **run, **rewards, **_unread_by_suite(run.get("suite")), "methods": methods}


def _unread_by_suite(suite) -> dict:
    """run.json's settings `suite` never reads, as bench records them for it (whatever a file of an earlier version,
    or a hand, wrote there: they decide none of its images): a prompts file where the suite has its own prompts
    (earlier versions recorded `--captions` given to one), the editing settings where it samples."""
    unread = {"captions": None} if suite not in FILE_SUITES else {}
    if not is_editing_suite(suite):
        unread |= {"edit_skip": None, "cfg_src": CFG_SRC}
    return unread


def run_methods(run: dict) -> list[Method]:
    """The methods of a run.json (as `read_run` returns it), in the order they were added."""
    return [Method.from_record(label, rec) for label, rec in run["methods"].items()]


# settings that decide no image (the FID reference): a rerun may correct them, e.g. a --fid-real folder fixed
METRIC_ONLY = ("fid_real", "inception_weights")


PATH_SETTINGS = ("model", "captions", "fid_real", "inception_weights")  # spelled in more than one way


def _spelling(value):
    """A path setting as compared: `runs/model/` and `runs/./model` are `runs/model` (a hub id is left as it is)."""
    return os.path.normpath(value) if isinstance(value, str) and value else value


def as_the_run_spells_it(out: Path, settings: RunSettings) -> RunSettings:
    """`settings` with each path setting that names the same path as `out`'s run.json in the run's spelling (the
    run's record is the source of truth: its images' fingerprints hold that spelling); other settings unchanged."""
    try:
        old = read_run(out) if (out / "run.json").is_file() else {}
    except SettingsMismatch:
        return settings  # compare_settings names it
    same = {k: old[k] for k in PATH_SETTINGS
            if isinstance(old.get(k), str) and _spelling(old[k]) == _spelling(getattr(settings, k))}  # fmt: skip
    return replace(settings, **same)


def compare_settings(out: Path, settings: RunSettings) -> dict:
    """The run.json `settings` give `out` (nothing written), or `SettingsMismatch` if `out` holds another run: same
    run settings (those in `METRIC_ONLY` may change); a method label may be added, never redefined."""
    path = out / "run.json"
    new = asdict(settings)
    # the folder's entries listed before run.json is looked for: another process of this run writes run.json before
    # any other file, so entries seen then mean run.json is there now, unless the folder is another's
    others = out.is_dir() and any(p for p in out.iterdir() if not p.name.startswith("."))
    if not path.exists():
        if others:
            raise SettingsMismatch(f"{out} holds files but no bench run (no run.json): a run never writes into "
                                   "another folder's files; use a new or empty --out")  # fmt: skip
        return new
    old = read_run(out)
    diff = {k: (old.get(k), v) for k, v in new.items() if k not in ("methods", *METRIC_ONLY, *MADE_IN)
            and old.get(k) != v and not (k in CHECKED_FROM_NOW and old.get(k) is None)}  # fmt: skip
    if diff and set(diff) <= {"limit", "categories"} and _same_selection(old, new):  # `--limit 1000000` and
        diff = {}  # `--limit 24` of 24; `--categories single --limit 1` and `--limit 1` (the same first prompt)
    if diff:
        detail = "; ".join(f"{k}: {json_spelling(a)} -> {json_spelling(b)}" for k, (a, b) in diff.items())
        changed = " (the model's configs or weights changed since the run)" * any(k in diff for k in CHECKED_FROM_NOW)
        raise SettingsMismatch(
            f"{out} holds a run with other settings ({detail}){changed}; use another --out or the same settings"
        )
    for label, rec in new["methods"].items():
        if label in old["methods"] and not _same_settings(old["methods"][label], rec):
            raise SettingsMismatch(
                f"method {label!r} in {out} was run with other settings; rename it or use another --out"
            )
    # how the run's first images were made, whatever a resume runs at (none made yet: this command's)
    kept = {k: old[k] for k in MADE_IN if old.get(k) is not None} if made_any(out) else {}
    return {**new, **kept, "methods": {**old["methods"], **new["methods"]}}


def _same_selection(old: dict, new: dict) -> bool:
    """Whether two settings of one suite select the same prompts with their `--limit` and `--categories`, as those
    decide which images a run makes (settings are compared by what they decide); False where the suite cannot be
    read here."""

    def selected(run: dict) -> list[int]:
        return [
            it.index for it in load_suite(run["suite"], run.get("captions"), run.get("limit"), run.get("categories"))
        ]

    try:
        return selected(old) == selected(new)
    except (OSError, ValueError, KeyError):
        return False


def check_settings(out: Path, settings: RunSettings) -> None:
    """Write run.json once `compare_settings` allows it, unless it states these settings already (a file whose
    values are spelled otherwise, `"guidance": 5`, is left as it is)."""
    merged = compare_settings(out, settings)
    if not (out / "run.json").exists() or merged != read_json(out / "run.json", RUN):  # an earlier layout: upgraded
        atomic_write(out / "run.json", json.dumps(merged, indent=1))


def _same_settings(old, new) -> bool:
    """Equal, where a setting added by a later version (absent from `old`) counts as equal at its default None."""
    if isinstance(old, dict) and isinstance(new, dict):
        return all(_same_settings(old.get(k), new.get(k)) for k in set(old) | set(new))
    return old == new


# settings a run.json of an earlier version lacks, checked from the first resume by this version on: the model's
# files, the same for every image of a run (so no image's fingerprint holds them: an earlier run's images stay
# trusted), compared at the run's level by `compare_settings`
CHECKED_FROM_NOW = ("model_files", "model_content")
# how a run makes its images, recorded by its first command and kept: never compared (a resume may run otherwise,
# with a note), never part of an image's fingerprint
MADE_IN = ("batch_size", "processes", "threads")
# settings that decide which images a run makes, not what any one image is
NOT_PER_IMAGE = ("methods", "limit", "categories", "seeds", "captions", *METRIC_ONLY, *CHECKED_FROM_NOW, *MADE_IN)


def made_with(settings: RunSettings, method: Method, prompt: str, seed: int) -> str:
    """The fingerprint of everything that decides one image and its record: the run's settings that act on every
    image, the method's own, the prompt and the seed. Each record carries it; a resume checks it."""
    decided = {k: v for k, v in asdict(settings).items() if k not in NOT_PER_IMAGE}
    payload = {"run": decided, "method": method.record(), "prompt": prompt, "seed": seed}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def prompt_record(it) -> dict:
    """A prompt folder's own record (`prompt.json`) of the suite item `it`."""
    return {"prompt": it.prompt, "tag": it.category, "spec": it.spec, "source": it.source}


LOCK_NAME = ".bench.lock"  # a run folder's lock file (hidden: no reader of the run counts it)


@contextmanager
def run_lock(out: Path, exclusive: bool = False, must: bool = False):
    """Yield whether this process holds the run folder `out`'s lock: shared by every bench process that makes its
    images (several may work on one run), exclusive for a report, which is refused (False) while any bench holds
    it: a report read mid-run would write a partial state over the run's final results. Where the system has no
    advisory locks (Windows), True, nothing held; where the folder takes no new file (read-only, or not made yet),
    True, nothing held, unless `must` (a bench about to write images there: the OSError is raised)."""
    try:
        import fcntl
    except ImportError:
        yield True
        return
    path = Path(out) / LOCK_NAME
    if path.is_symlink() or (os.path.lexists(path) and not path.is_file()):  # what no bench makes there
        what = "a symbolic link" if path.is_symlink() else what_is(path)
        raise SchemaError(f"{path} is {what}, not the lock file bench keeps in a run folder: move it out of the "
                          "folder (bench makes it again)")  # fmt: skip
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError:  # a folder that takes no new file (read-only): nothing to hold, and no bench writes there
        if must:
            raise
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


PNG_LIMIT = 1 << 30  # bytes: far above any image a run writes (a 4096 px RGB PNG is under 100 MB)
# what a killed writer leaves beside a file (`outputs.atomic_path`, `file_group`, `claimed_stem`): never read
_LEFTOVER_SUFFIXES = (".tmp", ".staged", ".claim")


class UntrustedRun(ValueError):
    """A run folder holding files its readers cannot trust; the message is one line naming them and the fix."""


def describe_untrusted(out: Path, problems: list[str], fix: str) -> str:
    """One line: how many files of `out` cannot be trusted, the first two with why, and `fix`."""
    shown = "; ".join(problems[:2]) + (f"; and {len(problems) - 2} more" if len(problems) > 2 else "")
    return f"{out} holds {len(problems)} file(s) that cannot be counted as this run's: {shown}; {fix}"


@dataclass(frozen=True)
class PngFacts:
    """What a run's PNG holds that its record fingerprints: the file's first bytes, its pixels' digest (with its
    alpha, where a copy made transparent has one) and the record embedded in it (None when it has none)."""

    signature: bytes
    pixels: str
    embedded: str | None
    parameters: str | None = None  # its `parameters` text (what other tools read of its settings)
    layout: str | None = None  # why it is not laid out as `png_bytes` writes a PNG (`png_layout_problem`), or None


def png_facts(data: bytes) -> PngFacts:
    """`PngFacts` of a PNG file's bytes, read once (any exception: they do not open as an image)."""
    with Image.open(io.BytesIO(data)) as image:
        text = dict(getattr(image, "text", {}) or {})  # read with the pixels
        return PngFacts(data[: len(PNG_SIGNATURE)], shown_digest(image), text.get(PNG_RECORD_KEY),
                        text.get(PNG_PARAMETERS_KEY), png_layout_problem(data))  # fmt: skip


def png_format_problem(png: Path, facts: PngFacts) -> str | None:
    """Why `png` is no PNG file as bench writes one though it opens as an image (exports would hand another format,
    an animation or another program's chunks on), or None."""
    if facts.signature != PNG_SIGNATURE:
        return f"{png} is not a PNG file (an image of another format under its name)"
    if facts.layout:
        return f"{png} is not a PNG as bench writes it: {facts.layout}"
    return None


def png_record_problem(png: Path, facts: PngFacts, record: dict, where: str) -> str | None:
    """Why the PNG with `facts` is not the image its sealed `record` (already checked for this run) fingerprints, or
    None: other pixels, or a record inside it that is missing, changed, or another image's."""
    if record["pixels"] != facts.pixels:
        return f"{where}: its PNG was changed after it was made"
    try:  # the settings the PNG itself carries (what an export hands on): this record's, sealed over these pixels
        inside = loads(facts.embedded) if facts.embedded else None
        check_seal(inside, facts.pixels, png)
    except ValueError:  # not JSON, or a seal that no longer matches (a `SchemaError`)
        inside = "changed"
    if not isinstance(inside, dict):  # (a record of a version before PNG records were sealed: its fields checked)
        what = "changed since it was written" if inside == "changed" else "missing (stripped)"
        return f"{where}: the record inside its PNG is {what}"
    if any(inside.get(k) != record[k] for k in ("made_with", "pixels", "seed", "index")):
        return f"{where}: the record inside its PNG is another image's (copied in)"
    if parameters_changed(facts.parameters, inside):  # the settings other tools read of it
        return f"{where}: the `parameters` text inside its PNG is not what its record says (changed since written)"
    return None


def _where(method: Method, index: int, seed: int, png: Path) -> str:
    """One image of a run, as a message names it."""
    return f"{method.label} prompt {index} seed {seed} ({png})"


def verified_copy(out: Path, method: Method, record: dict, into: Path) -> Path:
    """A copy under the folder `into` (at the PNG's place in the run) of a trusted image's PNG (a record
    `read_trusted` returned): the bytes read are checked against the record before they are written, so a reader
    showing the copy shows the image that was verified, whatever happens to the run folder afterwards.
    `UntrustedRun` naming the PNG when it changed since it was verified; an error writing the copy is `into`'s."""
    png = image_paths(out, method, record["index"], record["seed"])[0]
    try:
        data = read_small_bytes(png, PNG_LIMIT)  # once: the bytes checked are the bytes written
        facts = png_facts(data)
        why = png_format_problem(png, facts) or png_record_problem(
            png, facts, record, _where(method, record["index"], record["seed"], png)
        )
    except Exception as err:  # noqa: BLE001 - removed, or replaced by something that does not open
        why = f"{png} no longer opens as the image verified ({one_line(err, 200)})"
    if why:
        raise UntrustedRun(f"{why}: the run folder changed while it was being read; read it again once nothing "
                           "writes to it")  # fmt: skip
    to = into / png.relative_to(out)
    to.parent.mkdir(parents=True, exist_ok=True)
    to.write_bytes(data)
    return to


def image_state(out: Path, settings: RunSettings, method: Method, it, seed: int) -> tuple[str, object]:
    """What the run folder holds for one (method, prompt, seed) of the run, as every reader sees it: ("missing",
    None), ("unfinished", why) (a record that does not pass its schema, or a PNG that does not open: `bench` makes
    it again), ("untrusted", why) (something a run never writes, or a record whose fingerprints do not match: made
    with other settings, a PNG or record changed after it was written, no fingerprints) or ("trusted", record)."""
    png, rec_path = image_paths(out, method, it.index, seed)
    where = _where(method, it.index, seed, png)
    if not rec_path.exists() and not rec_path.is_symlink():
        return "missing", None
    link = next((p for p in (png, rec_path) if p.is_symlink()), None)
    if link is not None:  # its file lives elsewhere: the run would change when that file moves
        return "untrusted", f"{link} is a symbolic link, not a file a run writes"
    why = not_a_file(rec_path)
    if why and why != "missing":
        return "untrusted", f"{rec_path} is {why}"
    try:
        record = read_json(rec_path, RECORD)
    except SchemaError as err:  # unfinished (a full disk, `{}`), unless a sealed record was edited since
        why = str(err).removesuffix(f"; {RECORD.fix}")
        try:
            written = loads(read_small_text(rec_path))
        except (OSError, UnicodeDecodeError, ValueError):
            written = None
        if isinstance(written, dict) and "sealed" in written:
            changed = " (changed after it was written)" if written["sealed"] != sealed(written) else ""
            return "untrusted", f"{why}{changed}"
        return "unfinished", why
    why = not_a_file(png, PNG_LIMIT)
    if why and not why.startswith("missing"):
        return "untrusted", f"{png} is {why}"
    if why:  # its record is there, its image is not (an interrupted run, or an image moved out): made again
        return "unfinished", f"{png} is missing beside its record {rec_path.name} (re-run the bench command to make it)"
    try:
        facts = png_facts(read_small_bytes(png, PNG_LIMIT))
    except Exception as err:  # noqa: BLE001 - a PNG that does not open (a full disk): unfinished
        return "unfinished", f"{png} does not open as an image ({one_line(err, 200)})"
    problem = png_format_problem(png, facts)
    if problem:
        return "untrusted", problem
    if "made_with" not in record or "pixels" not in record or "sealed" not in record:
        return "untrusted", f"{where}: its record has no fingerprint (an earlier version made it)"
    if record["sealed"] != sealed(record):
        return "untrusted", f"{where}: its record was changed after it was written"
    own = {"index": it.index, "seed": seed, "method": method.label, "prompt": it.prompt, "category": it.category,
           "spec": it.spec}  # fmt: skip
    other = [k for k, v in own.items() if record.get(k, v) != v]
    if other:
        return "untrusted", f"{where}: its record's {other[0]} is not this image's (written for another image)"
    if record["made_with"] != made_with(settings, method, it.prompt, seed):
        return "untrusted", f"{where}: made with other settings than this run's"
    problem = png_record_problem(png, facts, record, where)
    if problem:
        return "untrusted", problem
    return "trusted", record


def prompt_folder_problem(folder: Path, it, prompts_file: str | None = None) -> str | None:
    """Why a prompt folder's `prompt.json` is not the run's record of prompt `it` (the export and report read it),
    or None (also when it is absent: it is written again from the run's record). Where `it` was read again from
    the run's `prompts_file` and an image's sealed record there agrees with prompt.json, the records are the run's
    and the file is what changed: it is named as such."""
    path = folder / PROMPT_RECORD
    if not path.exists() and not path.is_symlink():
        return None
    why = not_a_file(path)
    if why:
        return f"{path} is {why}"
    recorded = read_prompt_record(folder)
    if recorded != prompt_record(it):
        if prompts_file is not None and _sealed_prompt(folder, recorded):
            return FileChanged(
                f"prompts file {prompts_file!r} no longer gives prompt {it.index} as the run made it "
                f"({recorded.get('prompt')!r:.60} then, {it.prompt!r:.60} now): the file changed since the run; "
                "restore it"
            )
        return f"{path}: not this run's record of prompt {it.index} (changed after it was written)"
    return None


class FileChanged(str):
    """A `prompt_folder_problem` that blames the run's prompts file, not its records."""


def _sealed_prompt(folder: Path, recorded) -> bool:
    """Whether an image record in `folder`/samples is sealed (unchanged since written) and states `recorded`'s
    prompt: then prompt.json is the run's own record."""
    if not isinstance(recorded, dict):
        return False
    for path in sorted((folder / "samples").glob("*.json")) if (folder / "samples").is_dir() else []:
        try:
            record = read_json(path, RECORD)
        except SchemaError:
            continue
        if record.get("sealed") == sealed(record) and record.get("prompt") == recorded.get("prompt"):
            return True
    return False


def stray_entries(out: Path, methods, items, seeds) -> list[str]:
    """Each file or folder under `out/images/` that is none of the run's: a method folder of no method in run.json,
    a prompt folder of no prompt the run selects, a file a run never writes, an image of a seed not the run's. Each
    is named with why; a killed writer's hidden leftovers (`.NAME.PID.tmp`, ...) are not named (never read)."""
    images = out / "images"
    if not images.is_dir():
        return [f"{images} is {not_a_file(images)}"] if images.exists() or images.is_symlink() else []
    slugs = {m.slug for m in methods}
    folders = {f"{it.index:05d}" for it in items}
    names = {f"{s:05d}{suffix}" for s in seeds for suffix in (".png", ".json")}
    found = []

    def entries(folder: Path):
        return sorted(p for p in folder.iterdir() if not (p.name.startswith(".") and p.suffix in _LEFTOVER_SUFFIXES))

    if images.is_symlink():  # another run's images/ would be read, and written, as this run's
        return [f"{images} is a symbolic link, not the run's own folder (a run never makes one)"]
    for method_dir in entries(images):
        if method_dir.is_symlink():
            found.append(f"{name_of(method_dir)} is a symbolic link, not a folder a run writes")
            continue
        if method_dir.name not in slugs or not method_dir.is_dir():
            found.append(f"{name_of(method_dir)}: no method of this run (run.json) writes there")
            continue
        for prompt_dir in entries(method_dir):
            if prompt_dir.is_symlink():  # a folder of another run would be read, and written, as this run's
                found.append(f"{name_of(prompt_dir)} is a symbolic link, not a folder a run writes")
                continue
            if prompt_dir.name not in folders or not prompt_dir.is_dir():
                why = _stray_why(prompt_dir, folders, "a prompt this run selects (its suite, --limit and --categories)")
                found.append(f"{name_of(prompt_dir)}: {why}")
                continue
            for path in entries(prompt_dir):
                if path.name in (PROMPT_RECORD, GENEVAL_RECORD):
                    continue
                if path.is_symlink():
                    found.append(f"{name_of(path)} is a symbolic link, not a folder a run writes")
                    continue
                if path.name != "samples" or not path.is_dir():
                    found.append(f"{name_of(path)}: not a file a run writes")
                    continue
                for sample in entries(path):
                    if sample.name not in names:
                        why = _stray_why(
                            sample, names, f"an image of this run (its seeds are {_seed_range(seeds)})", sample=True
                        )
                        found.append(f"{name_of(sample)}: {why}")
    return found


def _record_files(out: Path):
    """Every image record file under the run folder `out` (`image_paths`' layout), in no order."""
    return Path(out).glob("images/*/*/samples/*.json")


def made_any(out: Path) -> bool:
    """Whether the run in `out` has written any image's record (made or not finished), as a resume finds it."""
    return next(_record_files(out), None) is not None


def made_in_problem(out: Path, claimed: dict, records=None) -> str | None:
    """Why run.json's `MADE_IN` settings (`claimed`: name -> value) were edited by hand, or None: one that none of the
    run's images states, where each states another (each record states its own, sealed with it; with no image yet,
    or a record of an earlier version, which states none and may have been made with it, the value is left alone).
    `records`: the run's trusted records, else read from `out` until each claimed value is found."""
    stated = {name: set() for name, value in claimed.items() if name in MADE_IN and value is not None}
    if records is None:
        records = (_record_or_none(p) for p in _record_files(out))
    for record in records:
        if not stated:
            break
        for name in list(stated) if record is not None else ():
            if record.get(name) in (None, claimed[name]):  # as claimed, or unknown (a record of an earlier version)
                del stated[name]
            else:
                stated[name].add(record[name])
    for name, values in stated.items():
        if values:
            return (f"{Path(out) / 'run.json'}: its {name} {claimed[name]} is not what any of the run's images was "
                    f"made with ({', '.join(map(str, sorted(values)))}, as their records say): it was edited by hand; "
                    "restore it as bench wrote it")  # fmt: skip
    return None


def _record_or_none(path: Path) -> dict | None:
    try:
        return read_json(path, RECORD)
    except SchemaError:
        return None


def _stray_why(entry: Path, names: set, of_the_run: str, sample: bool = False) -> str:
    """Why `entry` (a prompt folder or a sample, absent from `names`, the run's own) is none of the run's: a number
    of the run spelled otherwise than a run names it (`1000.png` for `01000.png`; `0` for `00000`), something of
    another kind (a file where a folder goes), or a number that is not the run's (`of_the_run` says what is)."""
    stem, suffix = (entry.stem, entry.suffix) if sample and entry.suffix in (".png", ".json") else (entry.name, "")
    if not stem.isdecimal() or not stem.isascii():
        return "not a name a run writes"
    own = f"{int(stem):05d}{suffix}"
    if own in names and own != entry.name:
        return f"not a name a run writes (a run names it {own})"
    if own in names:
        return f"{what_is(entry)} where a run writes a folder"
    return f"not {of_the_run}"


def _seed_range(seeds) -> str:
    seeds = sorted(seeds)
    return f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else ", ".join(map(str, seeds))


def unverified_images(out: Path, settings: RunSettings, methods, items) -> list[str]:
    """Each file of `out` this run would read that cannot be trusted, named with why (`image_state`: made with other
    settings, changed after it was written, no fingerprints, not a regular file), each prompt folder whose
    `prompt.json` is not this run's record of its prompt (`prompt_folder_problem`), and each file or folder under
    `images/` that is none of the run's (`stray_entries`). An image whose record does not parse is unfinished: it is
    made again."""
    problems, states = _run_states(out, settings, methods, items)
    return problems + [what for _, state, what in states if state == "untrusted"]


def _run_states(out: Path, settings: RunSettings, methods, items) -> tuple[list, list]:
    """(what is wrong outside the run's images: files under `images/` that are none of the run's, prompt folders
    whose `prompt.json` is not the run's; (method, state, what) of each image, `image_state`'s)."""
    problems, states = stray_entries(out, methods, items, settings.seeds), []
    for method in methods:
        for it in items:
            folder = image_paths(out, method, it.index, 0)[0].parent.parent
            problem = prompt_folder_problem(folder, it, settings.captions)
            problems += [problem] if problem else []
            if isinstance(problem, FileChanged):
                continue  # its images are the run's: the prompts file is what changed (named once)
            for seed in settings.seeds:  # a missing image says which it is: (prompt index, prompt, seed)
                state, what = image_state(out, settings, method, it, seed)
                states.append((method, state, (it.index, it.prompt, seed) if state == "missing" else what))
    return problems, states


def is_done(png: Path, record: Path) -> bool:
    """An image counts as made when its record parses and its PNG opens; anything less is made again."""
    if not_a_file(record) or not_a_file(png, PNG_LIMIT):
        return False
    try:
        read_json(record, RECORD)  # `{}` or a record of another shape is not an image made
        with Image.open(png) as img:
            img.verify()
        return True
    except Exception:  # a damaged record or image (e.g. a full disk): regenerate both
        return False


def image_paths(out: Path, method: Method, index: int, seed: int) -> tuple[Path, Path]:
    d = out / "images" / method.slug / f"{index:05d}" / "samples"
    return d / f"{seed:05d}.png", d / f"{seed:05d}.json"


def peak_memory_mb(device) -> float:
    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; the process's peak so far


def _uint8(image01: torch.Tensor) -> np.ndarray:
    return (image01.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def sub_prompts(prompt: str) -> list[str]:
    """Attend-and-Excite's split of a multi-subject prompt into one sub-prompt per subject (the metric's)."""
    return subject_prompts(prompt, relations=False)


class Scorer:
    """Metrics per image: the reward, a held-out CLIP score (and, for multi-subject prompts, the minimum over
    the subjects' sub-prompts: Attend-and-Excite's minimum object similarity), and the toy world's exact
    evaluator."""

    def __init__(self, reward, eval_clip):
        self.reward, self.eval_clip = reward, eval_clip

    @torch.no_grad()
    def __call__(self, images01: torch.Tensor, prompts: list[str], specs: list[dict | None]) -> list[dict]:
        reward = self.reward(images01, prompts).tolist()
        clip = self.eval_clip(images01, prompts).tolist() if self.eval_clip is not None else [None] * len(prompts)
        out = []
        for j, spec in enumerate(specs):
            rec = {"reward": reward[j], "clip_eval": clip[j]}
            parts = sub_prompts(prompts[j]) if self.eval_clip is not None else []
            if parts:
                sims = self.eval_clip(images01[j : j + 1].expand(len(parts), -1, -1, -1), parts)
                rec["min_object_clip"] = float(sims.min())
            if spec is not None:
                rec.update(exact_verdict(_uint8(images01[j]), spec))
            out.append(rec)
        return out


def exact_verdict(image_uint8: np.ndarray, spec: dict) -> dict:
    """The toy world's exact evaluator on one image, as record fields (with the evaluator's version)."""
    verdict = evaluate(image_uint8, PromptSpec.from_json(spec))
    return {"exact": float(verdict["pass"]), "aspects": verdict["aspects"], "evaluator_version": EVALUATOR_VERSION}


def audited_images(out: Path) -> tuple[list[tuple[Path, dict]], list[str]]:
    """What `toyworld audit` reads: ([(PNG, record)] of the run's own images each trusted by `image_state`, as
    `trusted_records` trusts them), [why, for each file skipped: untrusted, unfinished or no image of the run]).
    Never a record the report would refuse; a run.json that cannot be read is `SettingsMismatch`."""
    out = Path(out)
    _, methods, settings, items = _open_run(out)
    problems, states = _run_states(out, settings, methods, items)  # the walk `trusted_records` makes
    cases = [(image_paths(out, method, what["index"], what["seed"])[0], what)
             for method, state, what in states if state == "trusted"]  # fmt: skip
    return cases, problems + [what for _, state, what in states if state not in ("trusted", "missing")]


def _open_run(out: Path) -> tuple[dict, list[Method], RunSettings, list]:
    """(run.json, its methods, its settings, its prompts) of the run in `out`, as every reader of it takes them."""
    run = read_run(out)
    methods = run_methods(run)
    return run, methods, run_settings(run), run_items(out, run, methods)


def rescore(out: Path) -> int:
    """Re-run the current exact evaluator on every image of a run whose record was scored by another version;
    the earlier verdict stays in the record as `exact_v<version>`. Returns how many records changed version. Only
    records `trusted_records` trusts are read (an untrusted run: `UntrustedRun`, nothing written)."""
    changed = 0
    _, methods, records = trusted_records(out)
    for method in methods:
        for rec in records[method.label]:
            old = rec.get("evaluator_version", 1)
            if rec.get("spec") is None or old == EVALUATOR_VERSION:
                continue
            png, rec_path = image_paths(Path(out), method, rec["index"], rec["seed"])
            rec[f"exact_v{old}"] = rec.get("exact")
            rec.update(exact_verdict(np.asarray(open_rgb(png)), rec["spec"]))
            rec["sealed"] = sealed(rec)  # the project's own change: sealed again
            atomic_write(rec_path, json.dumps(rec))
            changed += 1
    return changed


def source_image(item: Item, seed: int, size: int):
    """The image an editing item starts from (a PIL image at the model's size) and, on the toy world, its scene."""
    if "spec" in item.source:
        case = EditCase(
            item.category,
            PromptSpec.from_json(item.source["spec"]),
            PromptSpec.from_json(item.spec),
            item.source["changed"],
        )
        src = source_scene(case, seed, item.index)
        return Image.fromarray(render(src)).resize((size, size), Image.Resampling.BICUBIC), (case, src)
    return open_rgb(item.source["image"]).resize((size, size), Image.Resampling.BICUBIC), None


class Cache:
    """Objects built once per key (spec, model, device, dtype) by `build(spec, model, device, dtype)`."""

    def __init__(self, build):
        self.build, self.built = build, {}

    def get(self, spec: str, model, device, dtype):
        key = (spec, str(model), str(device), str(dtype).removeprefix("torch."))
        if key not in self.built:
            self.built[key] = self.build(*key)
        return self.built[key]


def _load_reward(spec: str, model: str, device: str, dtype: str):
    return reward_from_spec(spec, device)


def _load_decoder(spec: str, model: str, device: str, dtype: str):
    return tiny_decoder_for(model, spec).to(device, getattr(torch, dtype))


class BenchRun:
    """One `bench` invocation: its settings, its folder, its device, and the rewards and reward decoders its methods
    use, each built once for the run (keyed by spec, model, device and dtype)."""

    def __init__(self, settings: RunSettings, out: Path, device, made_in: dict | None = None):
        self.settings, self.out, self.device = settings, Path(out), str(device)
        # how its images are made (`MADE_IN`: the --batch-size, the processes sharing them, a CPU's threads): each
        # record states it
        self.made_in = {name: (made_in or {}).get(name) for name in MADE_IN}
        self.rewards, self.decoders = Cache(_load_reward), Cache(_load_decoder)

    def reward(self, spec: str | None = None):
        """The reward `spec` (None: the run's `--reward`)."""
        s = self.settings
        return self.rewards.get(spec or s.reward, s.model, self.device, s.dtype)

    def decoder(self, spec: str):
        """The approximate reward decoder `spec` (`tiny`: the model's), in the run's dtype."""
        s = self.settings
        return self.decoders.get(spec, s.model, self.device, s.dtype)

    def scorer(self) -> Scorer:
        eval_clip = self.reward(self.settings.eval_clip) if self.settings.eval_clip else None
        return Scorer(self.reward(), eval_clip)


def edit_batch(pipe, batch, settings: RunSettings, kwargs: dict):
    """Edit each item's source image toward its prompt with a method's `kwargs`; returns (images01, traces, extra
    metrics per image)."""
    size = pipe.default_image_size()
    sources = [source_image(it, s, size) for it, s in batch]
    skip = settings.edit_skip if settings.edit_skip is not None else round(SKIP_FRACTION * settings.steps)
    res = pipe.edit(
        [img for img, _ in sources],
        [it.source["prompt"] for it, _ in batch],
        [it.prompt for it, _ in batch],
        num_inference_steps=settings.steps,
        skip=skip,
        cfg_src=settings.cfg_src,
        cfg_tar=settings.guidance,
        generator=[torch.Generator().manual_seed(s) for _, s in batch],
        output_type="pt",
        **kwargs,
    )
    images = res.images.float()
    return images, res.traces, [_edit_metrics(img, toy, edited) for (img, toy), edited in zip(sources, images)]


def _edit_metrics(source, toy, edited01: torch.Tensor) -> dict:
    """How far an edit moved from its source image, and on the toy world whether it changed what it should."""
    edited = _uint8(edited01)
    extra = {"pixel_distance": float(np.abs(edited.astype(float) - np.asarray(source, float)).mean() / 255)}
    if toy is not None:
        extra.update(score_edit(toy[0], toy[1], edited))
    return extra


# What an exact DATE update step costs in normal sampling steps, for the first estimate of a bench run's time:
# 7.05 on Stable Diffusion 1.5 (docs/speed.md), about 7 on the toy world (docs/results.md: 0.41 against 0.24 s per
# image with 5 update steps in 50)
UPDATE_STEP_COST = 7


class MethodWork:
    """The images of `jobs` that `method` has still to make, in batches; the seconds per image of its first batch.
    The batches are an uninterrupted run's (`jobs` cut into batches of `batch_size`), each with the positions of its
    images still to make (`batches`: (batch, wanted)): a remade image is sampled in the batch it had, beside the
    images it had (made again, not written), so it is the image an uninterrupted run makes to the last bit (a
    batch's float sums depend on its size and members)."""

    def __init__(self, run: BenchRun, method: Method, jobs, batch_size: int):
        if not method.applies_to(run.settings.suite):
            raise ValueError(f"method {method.label!r} does not apply to suite {run.settings.suite!r}")
        self.run, self.method = run, method
        self.todo = [(it, s) for it, s in jobs if not is_done(*image_paths(run.out, method, it.index, s))]
        missing = {(it.index, s) for it, s in self.todo}
        for it in {it.index: it for it, s in jobs if (it.index, s) not in missing}.values():
            # a prompt folder whose images are made but whose prompt.json is gone (the report and the export read
            # it): written again from the run's record of the prompt, as a run that makes an image there writes it
            write_prompt_records(image_paths(run.out, method, it.index, 0)[0].parent.parent, prompt_record(it), it.meta)
        per_batch = max(1, batch_size // method.candidates)
        slots = [jobs[i : i + per_batch] for i in range(0, len(jobs), per_batch)]
        wanted = [[k for k, (it, s) in enumerate(slot) if (it.index, s) in missing] for slot in slots]
        self.batches = [(slot, want) for slot, want in zip(slots, wanted) if want]
        self.kwargs, self.seconds_per_image, self.made = None, None, 0

    @property
    def steps(self) -> int:
        """One image's denoiser work in normal sampling steps: each candidate's steps, a DATE update step counted as
        `UPDATE_STEP_COST` steps (guidance and Attend-and-Excite are not counted)."""
        steps = self.method.steps_for(self.run.settings.steps)
        date = getattr(self.method, "date", None)
        try:
            updates = len(date.update_indices(steps)) * date.grad_steps if date is not None else 0
        except ValueError:  # update steps outside the run: the pipeline says so when the method runs
            updates = 0
        return self.method.candidates * (steps + (UPDATE_STEP_COST - 1) * updates)

    def per_image(self, reference: MethodWork) -> float:
        """Seconds per image: as timed on the first batch, else at `reference`'s seconds per sampling step."""
        if self.seconds_per_image is not None:
            return self.seconds_per_image
        return reference.seconds_per_image * self.steps / reference.steps

    def make(self, pipe, scorer, batches, bar) -> None:
        """Generate (or, on editing suites, edit) `batches`, moving `bar` by each batch's images."""
        if batches and self.kwargs is None:
            self.kwargs = self.method.pipeline_kwargs(self.run)  # rewards and decoders load before the timing starts
        for batch, wanted in batches:
            check_reader()  # `bench | head`: its reader gone, the run ends here (141), not after every image
            make = _edit if batch[0][0].source is not None else _generate
            t0 = time.perf_counter()
            n = make(self.run, pipe, self.method, self.kwargs, batch, scorer, wanted)
            if self.seconds_per_image is None:  # per image sampled: a resumed batch samples all of its images
                self.seconds_per_image = (time.perf_counter() - t0) / len(batch)
            bar.update(n)
            self.made += n


def generate_methods(run: BenchRun, pipe, methods, jobs, scorer, batch_size: int, say, desc: str = "images") -> int:
    """Make the missing images of `jobs`, method after method; returns how many. `say(line)` is told how many there
    are (per method and in all) and, after the first batch of each method while images are left, an estimate of the
    time they take; one progress bar for the run, with tqdm's remaining time."""
    work = [MethodWork(run, m, jobs, batch_size) for m in methods]
    total = sum(len(w.todo) for w in work)
    per_method = ", ".join(f"{w.method.label} {len(w.todo)}" for w in work)
    say(f"{len(jobs)} images per method, {total} to make ({per_method})")
    if not total:
        return 0
    started = time.perf_counter()
    with tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True) as bar:
        for w in work:
            w.make(pipe, scorer, w.batches[:1], bar)
            if w.todo and bar.n < total:
                say(estimate(work, time.perf_counter() - started))
            w.make(pipe, scorer, w.batches[1:], bar)
    return total


def estimate(work: list[MethodWork], elapsed: float) -> str:
    """The time the images not made yet take: at the seconds per image of each method's first batch, and for the
    methods not started yet at the first timed method's seconds per sampling step (`MethodWork.steps`)."""
    first = next(w for w in work if w.seconds_per_image is not None)
    left = [w for w in work if len(w.todo) > w.made]
    seconds = sum(w.per_image(first) * (len(w.todo) - w.made) for w in left)
    timed = [f"{w.method.label} {w.per_image(first):.2f}" for w in left if w.seconds_per_image is not None]
    counted = [f"{w.method.label} {w.per_image(first):.2f}" for w in left if w.seconds_per_image is None]
    how = [f"{', '.join(timed)} (timed on the first batch)"] if timed else []
    how += [f"{', '.join(counted)} (counted in sampling steps from {first.method.label})"] if counted else []
    return estimate_line(seconds, elapsed, "; ".join(how))


def estimate_line(seconds: float, elapsed: float, how: str) -> str:
    """The estimate's line, for `bench` and `generate` alike: the time left, the time in all, seconds per image."""
    return f"estimate: about {duration(seconds)} more, {duration(elapsed + seconds)} in all; s per image: {how}"


def duration(seconds: float) -> str:
    """`42 s`, `7 min`, `2 h 5 min`."""
    minutes = round(seconds / 60)
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _edit(run: BenchRun, pipe, method: Method, kwargs: dict, batch, scorer, wanted) -> int:
    t0 = time.perf_counter()
    images, traces, extras = edit_batch(pipe, batch, run.settings, kwargs)
    seconds = (time.perf_counter() - t0) / len(batch)
    metrics = scorer(images, [it.prompt for it, _ in batch], [None] * len(batch))
    metrics = [{**m, **e} for m, e in zip(metrics, extras)]
    return _write(run, method, batch, images, traces, metrics, list(range(len(batch))), seconds, wanted)


def _generate(run: BenchRun, pipe, method: Method, kwargs: dict, batch, scorer, wanted) -> int:
    n = method.candidates
    prompts = [it.prompt for it, _ in batch for _ in range(n)]
    seeds = [s + j * BEST_OF_STRIDE for _, s in batch for j in range(n)]
    call = dict(num_inference_steps=method.steps_for(run.settings.steps), guidance_scale=run.settings.guidance)
    t0 = time.perf_counter()
    seeds = method.select_seeds(pipe, run, prompts, seeds, call)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    res = pipe(prompt=prompts, generator=generators, output_type="pt", **call, **kwargs)  # by name: FLUX.2's is 2nd
    images = res.images.float()
    chosen = _best(run.reward(), images, prompts, n)
    seconds = (time.perf_counter() - t0) / len(batch)
    images = images[chosen]
    metrics = scorer(images, [it.prompt for it, _ in batch], [it.spec for it, _ in batch])
    return _write(run, method, batch, images, res.traces, metrics, chosen, seconds, wanted)


def _best(reward, images: torch.Tensor, prompts: list[str], n: int) -> list[int]:
    """Best-of-N: the index of the candidate the reward scores highest, of each N consecutive images."""
    if n == 1:
        return list(range(len(prompts)))
    with torch.no_grad():
        scores = reward(images, prompts).view(-1, n)
    return [b * n + j for b, j in enumerate(scores.argmax(dim=1).tolist())]


def _png_record(record: dict, method: Method, settings: RunSettings) -> dict:
    """What a bench image's PNG carries: its record with the run settings that made it."""
    entry = method.record()
    return {
        **record,
        "model": settings.model,
        "steps": method.steps_for(settings.steps),
        "guidance_scale": settings.guidance,
        "scheduler": settings.scheduler,
        "reward": entry.get("reward") or settings.reward,
        "date": entry.get("date"),
        "method": method.image_method_of(record["trace"]),
    }


def _write(run: BenchRun, method: Method, batch, images, traces, metrics, chosen, seconds, wanted) -> int:
    """Each image of `batch` at the positions `wanted` with its record (the record marks it done), both or neither
    (`outputs.file_group`); the others, made before, stay as they are. Returns how many were written."""
    memory = peak_memory_mb(run.device)
    for k in wanted:
        it, seed = batch[k]
        png, rec_path = image_paths(run.out, method, it.index, seed)
        write_prompt_records(png.parent.parent, prompt_record(it), it.meta)  # metadata.jsonl: GenEval's only
        record = {
            "method": method.label,
            "index": it.index,
            "prompt": it.prompt,
            "category": it.category,
            "spec": it.spec,
            "seed": seed,
            "seconds": seconds,
            "peak_memory_mb": memory,
            **metrics[k],
            "trace": traces[chosen[k]],
            "made_with": made_with(run.settings, method, it.prompt, seed),
            "pixels": pixels_digest(_uint8(images[k])),
            **{name: value for name, value in run.made_in.items() if value is not None},
        }
        if method.candidates > 1:
            record["best_of"] = {"n": method.candidates, "chosen": chosen[k] % method.candidates}
        record["sealed"] = sealed(record)
        with file_group() as group:  # the image and its record appear together, the record last
            group.write(png, png_bytes(_uint8(images[k]), _png_record(record, method, run.settings)))
            group.write(rec_path, json.dumps(record))
    return len(wanted)


def run_settings(run: dict) -> RunSettings:
    """The `RunSettings` a run.json (as `read_run` returns it) states; a setting it lacks (an earlier version's file)
    at its default, or None."""
    known = {f.name: f for f in fields(RunSettings)}
    values = {k: v for k, v in run.items() if k in known}
    for name, f in known.items():
        if name not in values and f.default is MISSING and f.default_factory is MISSING:
            values[name] = None
        elif str(f.type).startswith("float") and isinstance(values.get(name), int):  # `"guidance": 5`, as bench
            values[name] = float(values[name])  # writes it (5.0): one setting, one fingerprint of its images
    return RunSettings(**values)


def run_items(out: Path, run: dict, methods) -> list:
    """The prompts of a run as its run.json states them (suite, prompts file, --limit, --categories), read again;
    where the prompts file cannot be read from here (a moved run), the prompts its prompt folders record."""
    try:
        return load_suite(run["suite"], run.get("captions"), run.get("limit"), run.get("categories"))
    except UnknownCategories as err:  # run.json's categories (a prompts file's own may have changed: below)
        if run["suite"] in FILE_SUITES:
            return _recorded_items(out, methods)
        named, suite = ", ".join(map(quoted, err.unknown)), run["suite"]
        why = f"field 'categories' names {named}, which suite {suite!r} lacks (it has {', '.join(err.known)})"
        raise SettingsMismatch(f"{Path(out) / 'run.json'} is not a valid {RUN.what}: {why}; {RUN.fix}") from err
    except (OSError, ValueError, KeyError):
        return _recorded_items(out, methods)


def _recorded_items(out: Path, methods) -> list:
    """The prompts a run's prompt folders record (a run whose prompts file cannot be read from here)."""
    found = {}
    for method in methods:
        root = Path(out) / "images" / method.slug
        for folder in sorted(root.iterdir()) if root.is_dir() else []:
            rec = read_prompt_record(folder) if folder.is_dir() and is_integer(folder.name) else None
            if isinstance(rec, dict) and isinstance(rec.get("prompt"), str):
                index = parse_integer(folder.name)
                found.setdefault(index, Item(index, rec["prompt"], rec.get("tag") or "all", rec.get("spec"),
                                             rec.get("source")))  # fmt: skip
    return [found[i] for i in sorted(found)]


RESUME_FIX = ("move them out of the folder (the run then makes its own images again with its settings) or use "
              "another --out")  # fmt: skip
READ_FIX = ("move them out of the folder (re-running the same bench command then makes those images again with "
            "the run's settings), or report another run")  # fmt: skip


def trusted_records(out: Path) -> tuple[dict, list[Method], dict[str, list[dict]]]:
    """(run.json, its methods, each method's records): `read_trusted`'s, without what is missing."""
    trusted = read_trusted(out)
    return trusted.run, trusted.methods, trusted.records


@dataclass
class TrustedRun:
    run: dict  # run.json, as `read_run` returns it
    methods: list[Method]
    records: dict[str, list[dict]]  # method label -> its trusted records
    missing: dict[
        str, list[tuple[int, str, int]]
    ]  # method label -> (prompt index, prompt, seed) of each image it lacks


def read_trusted(out: Path) -> TrustedRun:
    """A run's records read the way a resume reads them: only the run's own (method, prompt, seed) images (its
    run.json's methods, prompts and seeds), each verified by `image_state`, the prompt folders by
    `prompt_folder_problem`, and nothing else under `images/` (`stray_entries`). Every reader of a run's records
    (report, export, the web page) reads through here: anything it cannot trust, and a record that does not pass its
    schema, is `UntrustedRun` (one line naming them and the fix); a missing image is left out of the records and
    listed in `missing` (what a resume makes: one walk says both)."""
    out = Path(out)
    run, methods, settings, items = _open_run(out)
    problems, states = _run_states(out, settings, methods, items)
    records = {method.label: [] for method in methods}
    missing = {method.label: [] for method in methods}
    for method, state, what in states:
        if state == "trusted":
            records[method.label].append(what)
        elif state == "missing":
            missing[method.label].append(what)
        else:
            problems.append(what)
    if problems and all(isinstance(p, FileChanged) for p in problems):  # the records are the run's: name the file
        more = f" (and {len(problems) - 1} more prompts)" if len(problems) > 1 else ""
        raise UntrustedRun(f"{out}: {problems[0]}{more}, or report another run")
    if problems:
        raise UntrustedRun(describe_untrusted(out, problems, READ_FIX))
    edited = made_in_problem(out, run, (r for recs in records.values() for r in recs))
    if edited:
        raise UntrustedRun(edited)
    return TrustedRun(run, methods, records, missing)
