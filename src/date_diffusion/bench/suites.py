"""Prompt suites for `date-diffusion bench`: toy, coco (a captions file), ane (Attend-and-Excite), prompts FILE.

A prompts or captions file is a CSV with a `caption` column, a `.jsonl` file of one JSON object a line with a
`prompt` field (GenEval's `evaluation_metadata.jsonl`: `tag`, `include`, ... beside it; the object is kept as the
item's `meta`, its `tag` is the item's category), or a text file of one prompt a line (T2I-CompBench's lists).
Blank lines are skipped, so item N is the N-th non-blank line; a UTF-8 byte order mark is accepted."""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from date_diffusion.core.text import check_prompt, control_character, is_blank, quoted
from date_diffusion.evaluation.suite_words import ANE_ANIMALS, ANE_COLORS, ANE_OBJECTS, EDITING
from date_diffusion.schemas import loads
from date_diffusion.toyworld import world

# numpy and the toy world's suite modules are imported where used: the command line imports this module to build
# its parsers (`SUITES`) before importing anything heavy.

SUITES = (*world.SUITES, "coco", "ane", "prompts", *EDITING)
FILE_SUITES = ("coco", "prompts", "edit")  # the suites whose prompts come from --captions / --prompts-file


class UnknownCategories(ValueError):
    """Categories asked for that the suite's prompts lack (a usage error where the command line gave them, a damaged
    run.json where a run's file states them)."""

    def __init__(self, name: str, unknown: list[str], known: list[str]):
        super().__init__(f"--categories {','.join(unknown)}: suite {name!r} has {', '.join(known)}")
        self.unknown, self.known = unknown, known


DEFAULT_SEED_BASE = 6  # the paper's COCO seed, for every suite but the toy world's


def run_seeds(base: int, count: int) -> list[int]:
    """The seeds of a run (`--seed-base`, `--seeds`): `count` of them from `base` on, ascending, the order in which
    its images are batched and run.json lists them."""
    return list(range(base, base + count))


def default_seeds(name: str) -> tuple[int, int]:
    """(seeds per prompt, first seed) of a suite: the toy world's per-suite defaults (`world.SUITES`), else one
    image per prompt from the paper's seed."""
    if world.is_toy_suite(name):
        return world.SUITES[name].seeds, world.SUITES[name].seed_base
    return 1, DEFAULT_SEED_BASE


@dataclass(frozen=True)
class Item:
    index: int
    prompt: str
    category: str = "all"
    spec: dict | None = None  # toy-world PromptSpec as JSON, for the exact evaluator
    source: dict | None = None  # editing suites: {"prompt", "image" (a file) or "spec" + "kind" + "changed"}
    meta: dict | None = None  # a `.jsonl` prompts file's line (GenEval's metadata: tag, include, prompt, ...)


def ane_prompts() -> list[tuple[str, str]]:
    out = [(f"a {a} and a {b}", "animal_animal") for a, b in itertools.combinations(ANE_ANIMALS, 2)]
    out += [(f"a {a} with a {o}", "animal_object") for a in ANE_ANIMALS for o in ANE_OBJECTS]
    import numpy as np

    rng = np.random.default_rng(0)
    for a, b in itertools.combinations(ANE_OBJECTS, 2):
        ca, cb = rng.choice(ANE_COLORS, 2, replace=False)
        out.append((f"a {ca} {a} and a {cb} {b}", "object_object"))
    return out


JSON_LINES = (".jsonl", ".ndjson")  # JSON lines by either of its names
# files of other structure a prompts file could be taken for: refused by name, never read as text lines
NOT_READ = (".json", ".tsv", ".tab", ".yaml", ".yml", ".parquet", ".xlsx", ".xls", ".ods")


def is_jsonl(path) -> bool:
    """Whether a prompts file is read as JSON lines (GenEval's `evaluation_metadata.jsonl`)."""
    return path is not None and Path(path).suffix.lower() in JSON_LINES


def read_prompt_records(path) -> list[dict]:
    """A `.jsonl` prompts file: one JSON object a line, each with a non-empty text `prompt` (blank lines skipped)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"prompts file {str(path)!r} not found")
    records = []
    for n, line in enumerate(file_lines(path), 1):
        if not line.strip():
            continue
        try:
            record = loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path} line {n} is not readable JSON ({err.msg}): a .jsonl file holds an object a line"
            ) from None
        prompt = record.get("prompt") if isinstance(record, dict) else None
        if not isinstance(prompt, str):
            raise ValueError(f"{path} line {n} has no text 'prompt' field (GenEval's evaluation_metadata.jsonl has)")
        check_prompt(prompt, f"{path} line {n}: 'prompt'")  # empty, or a control character: named with its line
        records.append(record)
    if not records:
        raise ValueError(f"{path} holds no prompts")
    return records


PROMPT_COLUMNS = ("prompt", "caption")  # a CSV's prompt column, by either name (COCO's files say `caption`)


def prompt_column(path: Path, names: list[str]) -> tuple[str, list[str]]:
    """(the column a CSV's prompts are read from, its other columns: they are not read) for a CSV whose header is
    `names`; a CSV with no prompt column, two of one name, or both `prompt` and `caption` is refused (which one
    holds the prompts would be a guess)."""
    found = [c for c in PROMPT_COLUMNS if c in names]
    if not found:
        raise ValueError(f"{path} has no 'prompt' or 'caption' column: its first line, the header, names "
                         f"{', '.join(map(quoted, names))}; add a header line naming the prompt column, or give the "
                         "prompts one per line in a .txt file")  # fmt: skip
    if len(found) > 1:
        raise ValueError(f"{path} has both a 'prompt' and a 'caption' column: keep the one that holds the prompts")
    column = found[0]
    if names.count(column) > 1:
        raise ValueError(f"{path} has {names.count(column)} {column!r} columns: keep one")
    return column, [name for name in names if name != column]


def read_captions(path: Path) -> list[str]:
    """Prompts from a file, for every command that takes one: a CSV with a `prompt` or `caption` column (e.g. the
    paper's COCO val2014 subset), a `.jsonl` file of objects with a `prompt` field (GenEval's metadata), or a text
    file, one prompt a line (UTF-8, a BOM accepted; blank lines skipped)."""
    return read_captions_and_columns(path)[0]


def unread_columns(path: Path, columns: tuple[str, list[str]] | None, flag: str) -> str | None:
    """The note every command gives on a prompts file's columns (a CSV's) or keys (a `.jsonl`'s) it does not read
    (`columns`: as `read_captions_and_columns` returns them; `flag`: the option that named the file), or None."""
    if not columns or not columns[1]:
        return None
    unread = ", ".join(repr(name) for name in columns[1][:8]) + (", ..." if len(columns[1]) > 8 else "")
    what = "key" if is_jsonl(path) else "column"
    return (
        f"{flag}: the prompts are its {columns[0]!r} {what}; its other {what}s ({unread}) are not read (seeds "
        "and settings come from the options)"
    )


def read_captions_and_columns(path: Path) -> tuple[list[str], tuple[str, list[str]] | None]:
    """`read_captions`' prompts, and for a CSV (its prompt column, the columns not read); None for other files."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"prompts file {str(path)!r} not found")
    check_prompts_file(path)  # every command's reading: generate's --prompts-file as bench's
    if path.suffix.lower() in NOT_READ:  # read as text, a JSON text or a TSV row would be one prompt each line
        raise ValueError(
            f"prompts file {str(path)!r} is a {path.suffix.lower()} file, which is not read: give a text file (one "
            "prompt a line), a CSV with a prompt column, or JSON lines (.jsonl: one object with a prompt field a line)"
        )
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(f"{path} line {line} is not UTF-8 text ({err.reason}): save the file as UTF-8") from None
    nuls = raw.count(b"\0")
    if raw and nuls * 4 >= len(raw):  # it decodes, but as NULs between the letters: no prompt holds one
        raise ValueError(f"{path} is not UTF-8 text ({nuls} of its {len(raw)} bytes are NUL, as in "
                         "UTF-16 or UTF-32 text without its byte-order mark): save the file as UTF-8")  # fmt: skip
    if is_jsonl(path):
        records = read_prompt_records(path)
        return [r["prompt"].strip() for r in records], ("prompt", sorted({k for r in records for k in r} - {"prompt"}))
    if path.suffix.lower() == ".csv":
        names, rows = read_csv(path)
        column, unread = prompt_column(path, names)
        # a row with no prompt is refused, never dropped without a word
        prompts = [check_prompt(row[column] or "", f"{path} line {line}: {column!r}") for line, row in rows]
        return prompts, (column, unread)
    return text_lines(path), None


def read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """(the header's names, (line, row by the header's names) of each row) of a CSV file, read strictly: a quote
    left open (which would take every later line into one field) and a row with more fields than the header (a
    prompt with an unquoted comma, which would be cut at the comma) are refused naming the line, never read as
    other rows."""
    limit = csv.field_size_limit(PROMPTS_FILE_LIMIT)  # a long prompt is a field: cut to what encoders read later,
    try:  # as a text file's line is, never refused as no CSV
        return _read_csv(path)
    finally:
        csv.field_size_limit(limit)  # (the csv module's limit is the process's)


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, strict=True)
        rows = []
        try:
            names = list(reader.fieldnames or [])
            for row in reader:
                if row.get(None):
                    raise ValueError(
                        f"{path} line {reader.line_num} has {len(names) + len(row[None])} fields and "
                        f'its header {len(names)}: quote a value holding a comma ("a cat, a dog")'
                    )
                rows.append((reader.line_num, row))
        except csv.Error as err:  # the row starts after the last one read (a quoted value may span lines)
            raise ValueError(f"{path} line {reader.line_num + 1} is not CSV ({err}): close the quote it opens, "
                             "or double a quote inside a quoted value") from None  # fmt: skip
    return names, rows


def file_lines(path) -> list[str]:
    """A text file's lines as every prompts reader numbers them: UTF-8 (a byte order mark dropped), ended by a
    newline only (with Windows' CR LF as one end). A carriage return alone is refused naming its line: read as a
    line end (as Python's text mode reads it) it would split one line into two prompts, and every later line
    number would be off by one."""
    text = Path(path).read_bytes().decode("utf-8-sig")
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    for n, line in enumerate(lines, 1):
        if "\r" in line:
            raise ValueError(f"{path} line {n} holds a carriage return without a newline (an old Mac line end): "
                             "save the file with newline line ends")  # fmt: skip
    return lines


def _header(line: str) -> bool:
    """Whether a text file's first line is a table's header: its first field (split at a comma, a tab or a
    semicolon; quotes and case aside) names a prompt column (`prompt`, `"prompt"`, `PROMPT,seed`, `caption\tid`)."""
    first = re.split(r"[,\t;]", line.strip(), maxsplit=1)[0]
    return first.strip().strip("'\"").strip().lower() in PROMPT_COLUMNS


def _json_object(line: str) -> bool:
    """Whether a text file's line is a JSON object (`{"prompt": ...}`), which no prompt is."""
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return False
    try:
        return isinstance(loads(text), dict)
    except ValueError:
        return False


def text_lines(path: Path) -> list[str]:
    """A text prompts file's prompts: one a line, blank lines skipped, each through `check_prompt` naming its line.
    Lines end at a newline only (a form feed or another control character inside a line is refused with the line,
    never taken as a line break the way `str.splitlines` takes it)."""
    prompts = []
    for n, line in enumerate(file_lines(path), 1):
        if is_blank(line) and control_character(line) is None:
            continue
        if not prompts and _header(line):  # a CSV's (or TSV's) header: its first prompt would be the header
            raise ValueError(f"{path} line {n} is {line.strip()!r}, a CSV header: a text file holds one prompt a "
                             "line; name it .csv (a CSV with a prompt column), or remove the line")  # fmt: skip
        if not prompts and _json_object(line):  # JSON lines (GenEval's metadata) under a text file's name
            raise ValueError(f"{path} line {n} is a JSON object: a text file holds one prompt a line; name it .jsonl "
                             "(JSON lines, each with a prompt field), or give one prompt a line")  # fmt: skip
        prompts.append(check_prompt(line, f"{path} line {n}"))
    return prompts


def read_edit_rows(path) -> list[dict]:
    """A CSV with columns image, source_prompt, target_prompt (image paths relative to the CSV)."""
    if path is None:
        raise ValueError("suite 'edit' needs --prompts-file CSV with columns image, source_prompt, target_prompt")
    path = Path(path)
    check_prompts_file(path)
    header, read = read_csv(path)
    missing = {"image", "source_prompt", "target_prompt"} - set(header)
    rows = [row for _, row in read]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(sorted(missing))}: its header line must name "
                         "image, source_prompt and target_prompt")  # fmt: skip
    for r in rows:
        r["image"] = str((path.parent / r["image"]).resolve())
    return rows


PROMPTS_FILE_LIMIT = 1 << 30  # bytes: a prompts file (COCO's captions are a few MB)


def check_prompts_file(path) -> None:
    """A prompts file is a regular file that reads as many bytes as its size says (a FIFO would block, a device or
    a /proc file gives other prompts at each read: the run's prompts must be the same each time it reads them):
    ValueError naming it otherwise; a missing file is left to the reader's own message."""
    from date_diffusion.schemas import not_a_file

    why = not_a_file(path, PROMPTS_FILE_LIMIT)
    if why == "missing":
        return
    if why is None:
        size = os.stat(path).st_size
        with open(path, "rb") as f:  # a byte past the stated size: only a file whose size says less gives one
            f.seek(size)
            beyond = f.read(1)
        if beyond:
            why = (
                f"a file whose size says {size} bytes but reads otherwise (a /proc or device file), not a regular file"
            )
    if why:  # (`not_a_file` says what the entry is: a FIFO, a folder, a file too large)
        too_large = os.path.isfile(path) and os.stat(path).st_size > PROMPTS_FILE_LIMIT
        fix = "split it into smaller files" if too_large else "give a regular text, CSV or .jsonl file"
        raise ValueError(f"prompts file {str(path)!r} is {why}; {fix}")


def load_suite(
    name: str, file: str | Path | None = None, limit: int | None = None, categories: list[str] | None = None
) -> list[Item]:
    """The suite's items; `categories` keeps only those, then `limit` keeps a sample of N (`stratified`). Item
    indices stay the full suite's, so a filtered or limited run's images and records line up with a full run's."""
    if world.is_toy_suite(name):
        from date_diffusion.toyworld.suite import prompt_suite, validation_prompts

        prompts = prompt_suite() if name == "toy" else validation_prompts()
        items = [Item(i, p, s.category, s.to_json()) for i, (p, s) in enumerate(prompts)]
    elif name == "edit-toy":
        from date_diffusion.toyworld.edits import edit_suite

        items = [
            Item(
                i,
                c.target.caption,
                c.kind,
                c.target.to_json(),
                {"prompt": c.source.caption, "spec": c.source.to_json(), "changed": c.changed_object},
            )
            for i, c in enumerate(edit_suite())
        ]
    elif name == "edit":
        items = [
            Item(i, row["target_prompt"], "edit", None, {"prompt": row["source_prompt"], "image": row["image"]})
            for i, row in enumerate(read_edit_rows(file))
        ]
    elif name == "ane":
        items = [Item(i, p, c) for i, (p, c) in enumerate(ane_prompts())]
    elif name in ("coco", "prompts"):
        if file is None:
            flag = "--captions" if name == "coco" else "--prompts-file"
            raise ValueError(f"suite {name!r} needs {flag} FILE")
        if is_jsonl(file):
            check_prompts_file(file)  # as `read_captions` checks its file: here the JSON lines are read as records
            items = [
                Item(i, r["prompt"].strip(), r["tag"] if isinstance(r.get("tag"), str) and r["tag"] else "all", meta=r)
                for i, r in enumerate(read_prompt_records(file))
            ]
        else:
            items = [Item(i, p) for i, p in enumerate(read_captions(file))]
    else:
        raise ValueError(f"unknown suite {name!r}; choose one of {', '.join(SUITES)}")
    if categories:
        known = sorted({it.category for it in items})
        unknown = sorted(set(categories) - set(known))
        if unknown:
            raise UnknownCategories(name, unknown, known)
        items = [it for it in items if it.category in categories]
    if not items:
        raise ValueError(f"suite {name!r} holds no prompts" + (f" ({file} has none)" if file is not None else ""))
    return stratified(items, limit) if limit else items


def stratified(items: list[Item], limit: int) -> list[Item]:
    """`limit` items spread over the categories: the categories take turns, in the order they first appear, each
    giving its next item (in suite order) until `limit` are taken or a category has none left; returned in suite
    order. Deterministic; with one category (a captions file) it is the first `limit` items."""
    by_category: dict[str, list[Item]] = {}
    for it in items:
        by_category.setdefault(it.category, []).append(it)
    queues = [iter(group) for group in by_category.values()]
    taken: list[Item] = []
    while queues and len(taken) < limit:
        for queue in list(queues):
            it = next(queue, None)
            if it is None:
                queues.remove(queue)
            elif len(taken) < limit:
                taken.append(it)
    return sorted(taken, key=lambda it: it.index)
