"""What the files the package reads back must hold: one small schema per kind of file (a bench run's run.json, a
bench image's record, the record in a PNG's text chunks, the metadata of a saved-embeddings file).

A damaged or foreign file (not JSON, JSON of another shape, a field missing or of the wrong type) is a
`SchemaError`: one line naming the file, the field and the fix. Readers go through `read_json` or `Schema.check`;
fields a schema does not name are left as they are (later versions may add some). Every JSON text the package reads
(these files, JSON-lines prompts files, `toyworld.json`, a model folder's configs, a PNG's record) is parsed by
`loads`, which refuses an object that gives one key twice instead of keeping the last value without a word."""

from __future__ import annotations

import json
import math
import numbers
import os
import stat
from dataclasses import dataclass, field, fields

from date_diffusion.core.settings import (
    MAX_BATCH,
    MAX_FRAMES,
    MAX_GUIDANCE,
    MAX_SEED,
    MAX_STEPS,
    BeyondFloat,
    Size,
    SpelledInt,
    parse_real,
    within,
)
from date_diffusion.core.text import is_blank, json_kind, json_spelling
from date_diffusion.core.trace import Trace, UpdateRecord


class SchemaError(ValueError):
    """A file that is not what its reader expects; the message names the file, the field and the fix."""


class DuplicateKeyError(json.JSONDecodeError):
    """An object of a JSON text gives a key twice (`{"seed": 1, "seed": 2}`): a JSONDecodeError, so every reader
    that names an unreadable file names this one too."""

    def __init__(self, key: str):
        ValueError.__init__(self, f"key {key!r} is given twice in one object")
        self.msg, self.doc, self.pos, self.lineno, self.colno = str(self), "", 0, 1, 1

    def __reduce__(self):
        return DuplicateKeyError, (self.msg,)


def _object(pairs: list) -> dict:
    data = {}
    for key, value in pairs:
        if key in data:
            raise DuplicateKeyError(key)
        data[key] = value
    return data


class UnreadableJSONError(json.JSONDecodeError):
    """A JSON text Python's parser refuses with another error than JSONDecodeError: an integer of more digits than
    Python converts (ValueError) or arrays and objects nested beyond the interpreter's depth (RecursionError). A
    JSONDecodeError too, so every reader that names an unreadable file names this one."""

    def __init__(self, why: str):
        ValueError.__init__(self, why)
        self.msg, self.doc, self.pos, self.lineno, self.colno = why, "", 0, 1, 1

    def __reduce__(self):
        return UnreadableJSONError, (self.msg,)


class SpelledFloat(float):
    """A number read from a file that shows itself as the file spells it (`1e3`, not `1000.0`), so that a refusal
    quotes what the file says; arithmetic and `json.dumps` see the plain float."""

    def __new__(cls, text):
        if not isinstance(text, str):  # a copy or an unpickling: the value itself (`__dict__` restores the text)
            return super().__new__(cls, text)
        number = super().__new__(cls, parse_real(text))
        number.text = text
        return number

    def __repr__(self):
        return getattr(self, "text", None) or float.__repr__(self)

    __str__ = __repr__


def plain_numbers(value):
    """`value` (as `loads` returns it) with every number as the plain number it states: what a file's settings ran
    with, for the tables, records and comparisons made from them (a report states the value, `5.0`, never a hand
    edit's `50e-1`; a value the file's schema refuses is quoted as the file spells it, before this)."""
    if isinstance(value, dict):
        return {k: plain_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_numbers(v) for v in value]
    if isinstance(value, SpelledInt):
        return int(value)
    return float(value) if isinstance(value, SpelledFloat) else value


def _integer(text: str) -> int:
    """A JSON integer: the plain int, or one that keeps its spelling where that differs from its digits (`-0`, the
    only such spelling JSON allows), so that a refusal quotes `-0`, not `0`."""
    number = int(text)
    return SpelledInt(text) if text != str(number) else number


def loads(text):
    """The one JSON parser of files the package reads: `json.loads`, with a key given twice in an object refused
    (`DuplicateKeyError`), and a number too long to convert or nesting too deep for the parser refused
    (`UnreadableJSONError`), as is a number beyond a float's range (`1e999`, `1e-999`: `core.settings.parse_real`):
    each a `json.JSONDecodeError`, never another exception out of a damaged file."""
    if isinstance(text, str) and text.startswith("\ufeff"):  # an editor's "UTF-8 with BOM": read as UTF-8, as the
        text = text[1:]  # prompts files are (Python's reader refuses it)
    try:
        # NaN and Infinity (which Python's reader takes) keep their spelling too: a refusal quotes `NaN`, not `nan`
        return json.loads(
            text, object_pairs_hook=_object, parse_float=SpelledFloat, parse_int=_integer, parse_constant=SpelledFloat
        )
    except json.JSONDecodeError:
        raise
    except BeyondFloat as err:  # 1e999 or 1e-999: read as infinity or 0 by `float()`
        raise UnreadableJSONError(str(err)) from None
    except RecursionError:
        raise UnreadableJSONError("JSON nested deeper than any record") from None
    except ValueError as err:  # int(): "Exceeds the limit (4300 digits) for integer string conversion"
        raise UnreadableJSONError(f"a number too long to read ({str(err).split(';')[0]})") from None


def _is(value, kind: str) -> bool:
    if kind == "ints":  # a list of integers: 1000.0 is a number, not an integer (a seed, an index)
        return isinstance(value, list) and all(_is(v, "int") for v in value)
    if kind == "texts":  # a list of names (a run's categories)
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "number":
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind.endswith("?"):
        return value is None or _is(value, kind[:-1])
    return isinstance(value, {"text": str, "list": list, "object": dict, "bool": bool}[kind])


# how a message names a kind, in JSON's words (a file's reader never sees Python's type names)
_NAMED = {"ints": "an array of whole numbers", "texts": "an array of texts", "int": "a whole number",
          "number": "a finite number", "text": "text", "list": "an array", "object": "an object",
          "bool": "true or false"}  # fmt: skip


def _wrong_kind(name: str, kind: str, value) -> str:
    """A field of another kind than its schema's, the value quoted as the file spells it (`true`, not `True`)."""
    base = kind.rstrip("?")
    also = " or null" if kind.endswith("?") else ""
    return f"field {name!r} must be {_NAMED.get(base, base)}{also}, got {json_spelling(value):.60}"


@dataclass(frozen=True)
class Schema:
    what: str  # the kind of file, as messages name it
    fix: str  # what the user does about a bad one
    required: dict = field(default_factory=dict)  # field -> kind (text, int, number, number?, list, object)
    optional: dict = field(default_factory=dict)  # checked where present (and not None)
    bounds: dict = field(default_factory=dict)  # number field -> (lowest, highest), both allowed
    unique: tuple = ()  # list fields that give no value twice
    nonempty: tuple = ()  # list fields that give at least one value (where present and not None)
    closed: bool = False  # a field of another name is refused (a file only this package writes)

    def problem(self, data) -> str | None:
        """What is wrong with `data` (a field and why), or None."""
        if not isinstance(data, dict):
            return f"it holds {json_kind(data)}, not an object"
        unknown = [name for name in data if name not in self.required and name not in self.optional]
        if self.closed and unknown:
            return f"field {unknown[0]!r} is none of its fields ({', '.join([*self.required, *self.optional])})"
        for name, kind in self.required.items():
            if name not in data:
                return f"field {name!r} is missing"
            if not _is(data[name], kind):
                return _wrong_kind(name, kind, data[name])
        for name, kind in self.optional.items():
            if data.get(name) is not None and not _is(data[name], kind):
                return _wrong_kind(name, kind, data[name])
        for name, (low, high) in self.bounds.items():  # a list field: each of its values
            value = data.get(name)
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, numbers.Real) and not within(v, low, high):
                    return f"field {name!r} must be in [{_bound(low)}, {_bound(high)}], got {json_spelling(v):.60}"
        for name in self.nonempty:
            if data.get(name) == []:
                return f"field {name!r} lists nothing (at least one value)"
        for name in self.unique:
            seen = set()
            for value in data.get(name) or []:
                key = json.dumps(value, sort_keys=True)
                if key in seen:
                    return f"field {name!r} lists {value!r:.60} twice (each value once)"
                seen.add(key)
        return None

    def check(self, data, path) -> dict:
        why = self.problem(data)
        if why:
            raise SchemaError(f"{path} is not a valid {self.what}: {why}; {self.fix}")
        return data


_ANNOTATION_KINDS = {"int": "int", "float": "number", "bool": "bool", "str": "text", "Path": "text", "list": "list",
                     "tuple": "list", "dict": "object"}  # fmt: skip


def schema_of(record_type, what: str, fix: str, required: tuple[str, ...] = (), closed: bool = False) -> Schema:
    """The schema of a typed record's `to_dict()` (or `asdict`) form, each field's kind read from its annotation
    (`int`, `float`, `bool`, `str`, `Path`, `list[...]`, `tuple[...]`, `dict`, each optionally `| None`: a whole
    number written `3.0` is refused where the field is an `int`); `required`: fields every file holds; `closed`: a
    field the record type lacks is refused."""
    kinds = {}
    for f in fields(record_type):
        base = str(f.type).replace(" | None", "").split("[")[0].strip()
        kinds[f.name] = _ANNOTATION_KINDS[base]
    optional = {n: k for n, k in kinds.items() if n not in required}
    return Schema(what, fix, {n: kinds[n] for n in required}, optional, closed=closed)


def _bound(value) -> str:
    return "2**63 - 1" if value == MAX_SEED else f"{value:g}" if isinstance(value, float) else str(value)


MAX_PROCESSES = 1 << 16  # far beyond any launch: a run's processes (or threads), as run.json and records state them
RUN_FILE_LIMIT = 1_000_000  # bytes: a bench run's JSON files (run.json, a record, prompt.json) hold a few kB


def entry_kind(mode: int) -> str:
    """What an entry of the file system is (`os.stat`'s `st_mode`), as messages name it."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    return "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"


def what_is(path) -> str:
    """What the entry at `path` is (links followed: `entry_kind`), for a message naming it."""
    return entry_kind(os.stat(path).st_mode)


def not_a_file(path, limit: int = RUN_FILE_LIMIT) -> str | None:
    """Why `path` cannot be read as a small file, or None: it is missing, not a regular file once links are
    followed (a folder, a FIFO that would block the reader, a device such as /dev/zero that never ends), or larger
    than `limit` bytes. Checked before every read of a run folder's files (`read_small_text`)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "missing" if not os.path.islink(path) else "a symbolic link to a file that is missing"
    except OSError as err:  # a link loop, a name too long, no permission
        return f"not readable ({err.strerror or err})"
    if stat.S_ISDIR(info.st_mode):
        return "a folder, not a file"
    if not stat.S_ISREG(info.st_mode):
        return f"{entry_kind(info.st_mode)}, not a regular file"
    if info.st_size > limit:
        return f"{info.st_size:,} bytes, larger than such a file ever is ({limit:,} bytes at most)"
    return None


def read_small_bytes(path, limit: int = RUN_FILE_LIMIT) -> bytes:
    """The bytes of a small regular file (`not_a_file` first: OSError naming what it is), at most `limit` bytes."""
    why = not_a_file(path, limit)
    if why:
        raise OSError(f"it is {why}")
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:  # grew since the check
        raise OSError(f"it is larger than such a file ever is ({limit:,} bytes at most)")
    return data


def read_small_text(path, limit: int = RUN_FILE_LIMIT) -> str:
    """The text of a small regular file (`read_small_bytes`), as UTF-8."""
    return read_small_bytes(path, limit).decode("utf-8")


def read_json(path, schema: Schema, limit: int = RUN_FILE_LIMIT) -> dict:
    """The one reader of a bench run's JSON files (and other small JSON files): a regular file of at most `limit`
    bytes (`read_small_text`), through `schema` (SchemaError naming the file if unreadable or of another shape)."""
    try:
        data = loads(read_small_text(path, limit))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SchemaError(f"{path} is not a readable {schema.what} ({err}); {schema.fix}") from err
    return schema.check(data, path)


def safetensors_problem(path, err: Exception) -> str:
    """What is wrong with a file safetensors could not read, in words (`err`: the library's error): empty, cut
    short (its header or its tensors reach past its end: an interrupted copy or download), or no safetensors file."""
    import struct

    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as problem:
        return f"cannot be read ({problem.strerror or problem})"
    if size == 0:
        return "is empty (0 bytes)"
    if size < 8:
        return f"is cut short ({size} bytes: not even a safetensors header)"
    header = struct.unpack("<Q", head)[0]
    if header + 8 > size:
        if header > 100_000_000:  # no header is that long: the first bytes are no safetensors header at all
            return "is not a safetensors file (its first bytes are no safetensors header)"
        return f"is cut short (its header alone says {header + 8:,} bytes, the file has {size:,})"
    why = str(err).splitlines()[0] if str(err) else type(err).__name__
    if "not fully covered" in why or "out of bounds" in why.lower():
        return f"is cut short ({size:,} bytes: its tensors reach past its end)"
    return f"is not a readable safetensors file ({why[:200]})"


def unreadable_safetensors(path) -> str | None:
    """What is wrong with a .safetensors file (`safetensors_problem`'s words), read up to its header and checked
    against its size (the library refuses a file whose tensors reach past its end), or None: what a reader asks
    before a library would say it in its own words (a model's weights, a LoRA)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np"):
            return None
    except (OSError, SafetensorError) as err:
        return safetensors_problem(path, err)


def read_tensors(path, fix: str, numpy: bool = False) -> dict:
    """The one reader of the tensors files the package writes for itself (training checkpoints, cached latents,
    judge data): a file that is missing, truncated or not safetensors is a `SchemaError` naming it and `fix`,
    never the library's own error (`SafetensorError`, which is no OSError)."""
    from safetensors import SafetensorError

    if numpy:
        from safetensors.numpy import load_file
    else:
        from safetensors.torch import load_file
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise SchemaError(f"{path} is not a readable tensors file: it {safetensors_problem(path, err)}; {fix}") from err


RUN = Schema(
    "bench run settings file",
    "restore it as bench wrote it (the run's images keep their own records), or give bench another --out",
    required={"suite": "text", "seeds": "ints", "steps": "int", "model": "text", "methods": "object"},
    optional={
        "guidance": "number",
        "reward": "text",
        "eval_clip": "text",
        "fid_real": "text",
        "limit": "int",
        "edit_skip": "int",
        "categories": "texts",
        "captions": "text",
        "scheduler": "text",
        "dtype": "text",
        "cfg_src": "number",
        "inception_weights": "text",
        "model_files": "text",
        "model_content": "text",
        "batch_size": "int",
        "processes": "int",
        "threads": "int",
    },  # every field `bench.runner.RunSettings` writes (test_bench_trust checks the two agree)
    bounds={"seeds": (0, MAX_SEED), "steps": (1, MAX_STEPS), "limit": (1, MAX_SEED), "edit_skip": (0, MAX_STEPS),
            "batch_size": (1, MAX_BATCH), "processes": (1, MAX_PROCESSES), "threads": (1, MAX_PROCESSES)},
    unique=("seeds", "categories"),
    nonempty=("seeds", "categories"),
    closed=True,
)  # fmt: skip
TRAIN_CHECKPOINT = Schema(
    "toy-world training checkpoint",
    "delete the stage's folder under work/ to train that stage again from its start",
    required={"step": "int", "opt": "object", "sched": "object"},
    optional={"ema_step": "int", "run": "text"},
    bounds={"step": (0, 10**9), "ema_step": (0, 10**9)},
)  # fmt: skip
JUDGE_SHARD = Schema(
    "toy-judge data shard",
    "delete it and its .safetensors to make the shard again (train-judge --stage data)",
    required={"capture": "ints", "steps": "int", "rows": "list"},
    optional={"sealed": "text"},
    bounds={"capture": (0, MAX_STEPS), "steps": (1, MAX_STEPS)},
)  # fmt: skip
JUDGE_RECIPE = Schema(
    "toy-judge training settings file",
    "resume with the recipe it names (with or without --smoke), or give another --out",
    required={"shards": "int", "judge_steps": "int", "judge_na_steps": "int", "batch": "int"},
    optional={"render_pool": "int"},
    closed=True,
)  # fmt: skip
RECORD = Schema(
    "bench image record",
    "re-run the same bench command to make the image again",
    required={"index": "int", "seed": "int", "seconds": "number", "peak_memory_mb": "number"},
    optional={"method": "text", "prompt": "text", "trace": "object", "reward": "number?", "clip_eval": "number?",
              "exact": "number?", "spec": "object", "category": "text", "made_with": "text", "pixels": "text",
              "sealed": "text", "batch_size": "int", "processes": "int", "threads": "int"},
    bounds={"index": (0, MAX_SEED), "seed": (0, MAX_SEED), "seconds": (0.0, math.inf), "batch_size": (1, MAX_BATCH),
            "processes": (1, MAX_PROCESSES), "threads": (1, MAX_PROCESSES), "peak_memory_mb": (0.0, math.inf),
            "exact": (0.0, 1.0)},
)  # fmt: skip
PNG_RECORD = Schema(
    "date-diffusion record in the PNG",
    "the image's metadata was changed by another program; its settings cannot be shown",
    optional={"prompt": "text", "trace": "object", "panels": "list", "seed": "int", "steps": "int",
              "guidance_scale": "number", "height": "int", "width": "int", "num_frames": "int", "pixels": "text",
              "sealed": "text"},
    bounds={"seed": (0, MAX_SEED), "steps": (1, MAX_STEPS), "guidance_scale": (0, MAX_GUIDANCE),
            "height": (1, Size.high), "width": (1, Size.high), "num_frames": (1, MAX_FRAMES)},
)  # fmt: skip
_CHANGED = "the record was changed by another program"
TRACE = schema_of(Trace, "trace", _CHANGED)
UPDATE = schema_of(UpdateRecord, "update of a trace", _CHANGED,
                   required=("step", "reward_before", "update_norm", "skipped"))  # fmt: skip
PANEL = Schema("panel of a grid", _CHANGED, required={"method": "text"},
               optional={"final_distance": "number", "mean_abs_diff": "number", "pixels_changed": "int",
                         "pixels": "int", "trace": "object", "final_reward": "number", "final_reward_vs": "object",
                         "why": "text", "knows": "text"})  # fmt: skip
REWARD_VS = Schema("panel's reward difference", _CHANGED, required={"method": "text", "difference": "number"})
EMBEDDINGS = Schema(
    "embeddings file's metadata",
    "write it again with `generate --save-embeddings` (or the pipeline's save_embeddings=)",
    required={"pipeline": "text", "parts": "list"},
    optional={"date": "object", "loras": "list"},
)
REPLAY = Schema(
    "embeddings file for --replay-embeddings",
    "write it with `date-diffusion generate --save-embeddings`",
    required={
        "prompt": "text",
        "seed": "int",
        "steps": "int",
        "guidance_scale": "number",
        "height": "int",
        "width": "int",
    },
    optional={"num_frames": "int", "negative_prompt": "text"},
)  # fmt: skip


def sealed(record: dict) -> str:
    """The fingerprint of a record's own content (every field but this one, `sealed`): an edited record is told
    apart (a bench image's record file, the record inside an image's file)."""
    import hashlib

    content = {k: v for k, v in record.items() if k != "sealed"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:20]


def nonfinite_field(data, where: str = "") -> str | None:
    """The first field (dotted, `final_reward.date`, `loras.0.1`) of a JSON value holding NaN or an infinity, or
    None: JSON has no such number, and no record this package writes holds one."""
    if isinstance(data, float) and not math.isfinite(data):
        return where or "the value"
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        found = nonfinite_field(value, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def _record_problem(record: dict, trace: dict) -> str | None:
    """What no run writes into a record: DATE settings out of their kinds, an update step listed twice or past the
    run's loop steps (at most two per sampling step: a second-order scheduler)."""
    from date_diffusion.core.config import DATEConfig

    if record.get("date") is not None:
        try:
            DATEConfig.from_dict(record["date"])
        except ValueError as err:  # SettingError: a setting's kind, or settings that do not go together
            return f"its DATE settings ('date') are none a run takes: {err}"
    steps = [u.get("step") for u in trace.get("updates") or []] + list(trace.get("update_steps") or [])
    loop = 2 * record["steps"] if isinstance(record.get("steps"), int) else MAX_UPDATES
    past = [s for s in steps if isinstance(s, int) and not 0 <= s < loop]
    if past:
        return f"its trace updates at step {past[0]}, outside the run's {record.get('steps', 'any')} steps"
    for name in ("update_steps", "skipped_steps"):
        if len(set(map(str, trace.get(name) or []))) != len(trace.get(name) or []):
            return f"its trace's {name} lists a step twice"
    updates = [u for u in trace.get("updates") or [] if isinstance(u, dict)]
    if any("reward_after" in u and u["reward_after"] is None for u in updates):
        return "field 'reward_after' of an update must be a number (a run that does not track it leaves it out)"
    distances = [trace.get("final_distance"), *(u.get("update_norm") for u in updates)]
    if any(isinstance(d, (int, float)) and d < 0 for d in distances):
        return "its trace holds a negative distance (final_distance, update_norm): a distance is at least 0"
    if trace.get("skipped_steps") is not None and updates and sorted(trace["skipped_steps"]) != sorted(
            u.get("step") for u in updates if u.get("skipped")):  # fmt: skip
        return "its trace's skipped_steps are not the updates it marks skipped"
    date = record.get("date")
    grad_steps = date.get("grad_steps", 1) if isinstance(date, dict) else None  # DATEConfig's default: 1
    if isinstance(grad_steps, int) and any(len(u.get("grad_norms") or []) > grad_steps for u in updates):
        return f"an update of its trace lists more gradient norms than its {grad_steps} gradient step(s)"
    return None


def check_png_record(record, path) -> dict:
    """A PNG's `date-diffusion` record, with its trace's updates and its grid's panels (what `info` shows): no
    number that is not finite anywhere in it (so `info --json` prints JSON), settings a run takes."""
    PNG_RECORD.check(record, path)
    bad = nonfinite_field(record)
    if bad:
        raise SchemaError(f"{path} is not a valid {PNG_RECORD.what}: field {bad!r} must be a finite number; "
                          f"{PNG_RECORD.fix}")  # fmt: skip
    panels = [PANEL.check(p, f"{path} (panel {k} of its grid)") for k, p in enumerate(record.get("panels") or [], 1)]
    for k, p in enumerate(panels, 1):
        if p.get("final_reward_vs") is not None:
            REWARD_VS.check(p["final_reward_vs"], f"{path} (panel {k} of its grid)")
    for trace in [record.get("trace") or {}] + [p.get("trace") or {} for p in panels]:
        TRACE.check(trace, path)
        updates = trace.get("updates") or []
        if len(updates) > MAX_UPDATES:  # one per loop step at most: more is no record this package wrote
            raise SchemaError(f"{path} is not a valid {PNG_RECORD.what}: its trace lists {len(updates):,} updates, "
                              f"more than any run makes ({MAX_UPDATES:,}); {PNG_RECORD.fix}")  # fmt: skip
        for update in updates:
            UPDATE.check(update, f"{path} (an update of its trace)")
        why = _record_problem(record, trace)
        if why:
            raise SchemaError(f"{path} is not a valid {PNG_RECORD.what}: {why}; {PNG_RECORD.fix}")
    if isinstance(record.get("prompt"), str) and is_blank(record["prompt"]):
        raise SchemaError(f"{path} is not a valid {PNG_RECORD.what}: its prompt is empty; {PNG_RECORD.fix}")
    return record


MAX_UPDATES = 2 * MAX_STEPS  # a trace's updates: at most one per loop step (a second-order scheduler: two per step)
