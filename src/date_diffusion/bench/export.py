"""A bench run's images in the folder layouts the official GenEval and T2I-CompBench evaluators read.

Input: one method's folder of a run, `RUN/images/<method slug>/`: per prompt `<index:05d>/prompt.json` (the run's
own record of the prompt: `prompt`, `tag`, `spec`, `source`), `<index:05d>/samples/<seed:05d>.png`, an image
counting once its `.json` record exists (see `bench/runner.py`), and `<index:05d>/metadata.jsonl` only when the
prompt came from GenEval's `evaluation_metadata.jsonl`: then it is that line, GenEval's full record. A run folder is
therefore never GenEval's layout by accident: GenEval's evaluator, whose walk opens `<NNNNN>/metadata.jsonl` in
every numbered folder and passes an image whose record has no `include`, either reads the real record or stops at
the first folder without one. (Runs of earlier versions kept the run's own record as `metadata.jsonl`; it is read
as `prompt.json`, and renamed to it when the run writes to that folder again.)

- GenEval (djghosh13/geneval, README "Image generation"): `DIR/<NNNNN>/metadata.jsonl` holding the N-th line of
  the prompts' `evaluation_metadata.jsonl`, `DIR/<NNNNN>/samples/<SSSS>.png` (0000.png, 0001.png, ... per prompt);
  `grid.png` is optional and not written. GenEval's evaluator needs the metadata line's own fields (`tag`,
  `include`, ...), so `metadata_file` is that file; line N must hold the prompt of item N. Its summary counts every
  image of a prompt alike, so every prompt has all the run's seeds.
- T2I-CompBench (Karine-Huang/T2I-CompBench, Readme: `examples/samples/a green bench and a blue bowl_000000.png`):
  `DIR/samples/<prompt>_<NNNNNN>.png`, one running number over all images. Its evaluators take the prompt as the
  file name before the first `_` and sort by the number after the last `_`, so a prompt with `_` or `/` is refused;
  its 3-in-1 score reads the scores in blocks of 10 consecutive images per line of the full prompt file.

`export_run` writes every method of a run into `DIR/<method slug>/` (`bench --export`, `report --export`), only
when the run is whole: every prompt of the run with every seed, in every method (`missing_images`), unless told
`partial=True`, which exports what there is and says what is missing. The `check_*` functions are what the command
line checks before any work (`cli/bench.py`).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

from date_diffusion.core.settings import is_integer, parse_integer
from date_diffusion.schemas import loads, read_small_text


class ExportError(ValueError):
    pass


KINDS = ("geneval", "t2i-compbench")


PROMPT_RECORD = "prompt.json"  # a run's own record of a prompt: RUN/images/<method>/<index:05d>/prompt.json
GENEVAL_RECORD = "metadata.jsonl"  # GenEval's record of a prompt, under the name its evaluator opens


def is_geneval_record(meta) -> bool:
    """A line of GenEval's `evaluation_metadata.jsonl`: a text `prompt` and `tag` and a non-empty `include` list
    (what GenEval's evaluator checks an image against; a record without `include` passes every image)."""
    return (
        isinstance(meta, dict)
        and isinstance(meta.get("prompt"), str)
        and isinstance(meta.get("tag"), str)
        and isinstance(meta.get("include"), list)
        and len(meta["include"]) > 0
    )


def write_prompt_records(folder, record: dict, meta=None) -> None:
    """A prompt folder's records, each written once: the run's own `record` as `prompt.json`, and `meta` as
    `metadata.jsonl` when it is GenEval's record (`is_geneval_record`). An earlier version's own record under
    GenEval's name (no `include`) is renamed to `prompt.json`, so that GenEval's walk never reads it."""
    from date_diffusion.outputs import atomic_write

    folder = Path(folder)
    ours, geneval = folder / PROMPT_RECORD, folder / GENEVAL_RECORD
    if geneval.exists() and not is_geneval_record(_first_json(geneval)):
        if ours.exists():
            geneval.unlink()  # the same record twice: prompt.json is kept
        else:
            geneval.rename(ours)
    if not ours.exists():
        atomic_write(ours, json.dumps(record) + "\n")
    if is_geneval_record(meta) and not geneval.exists():
        atomic_write(geneval, json.dumps(meta) + "\n")


def _first_json(path: Path):
    """The JSON value `path` holds: prompt.json whole (however it is indented), GenEval's JSON-lines file its first
    line."""
    try:  # a regular file of a few kB (`read_small_text`): never a FIFO that blocks or a device that never ends
        text = read_small_text(path)
        return loads(text if path.name == PROMPT_RECORD else text.splitlines()[0])
    except (OSError, IndexError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def read_prompt_record(folder) -> dict | None:
    """A prompt folder's own record (`prompt.json`; runs of earlier versions: their `metadata.jsonl`), or None."""
    folder = Path(folder)
    for name in (PROMPT_RECORD, GENEVAL_RECORD):
        if (folder / name).exists():
            record = _first_json(folder / name)
            if isinstance(record, dict):
                return record
    return None


def method_items(method_dir) -> list[tuple[int, dict, list[Path]]]:
    """(index, the prompt's record, the finished images in seed order) for each prompt of a method folder."""
    method_dir = Path(method_dir)
    if not method_dir.is_dir():
        raise ExportError(f"{method_dir} is not a method folder of a bench run (RUN/images/<method>/)")
    items = []
    for folder in sorted(p for p in method_dir.iterdir() if p.is_dir() and is_integer(p.name)):
        record = read_prompt_record(folder)
        pngs = sorted(p for p in (folder / "samples").glob("*.png") if p.with_suffix(".json").exists())
        if record is None and pngs:  # its images are there; the record of their prompt, which the layout needs, not
            raise ExportError(f"{folder} holds images but no {PROMPT_RECORD} (the run's record of their prompt): the "
                              "same bench command writes it again from the run's settings, making nothing")  # fmt: skip
        if record is None:
            continue
        if pngs:
            items.append((parse_integer(folder.name), record, pngs))
    if not items:
        raise ExportError(f"{method_dir} holds no finished images")
    return items


def run_prompts(run_dir) -> dict[int, str] | None:
    """The prompts a run was asked for, {index: prompt}: its suite as its run.json states it (suite, prompts file,
    limit, categories), read again; None when that file cannot be read (a moved run)."""
    from date_diffusion.bench.suites import load_suite

    run = loads(read_small_text(Path(run_dir) / "run.json"))
    try:
        items = load_suite(run["suite"], run.get("captions"), run.get("limit"), run.get("categories"))
    except (OSError, ValueError, KeyError):
        return None
    return {it.index: it.prompt for it in items}


def missing_images(run_dir, slugs, prompts: Mapping[int, str] | None = None) -> dict[str, list[tuple[int, int]]]:
    """Per method, the (prompt index, seed) pairs of the run that have no finished image: every prompt of `prompts`
    (default: the run's own, `run_prompts`; failing that, every prompt any method has begun) with every seed of the
    run's run.json."""
    run_dir = Path(run_dir)
    seeds = loads(read_small_text(run_dir / "run.json"))["seeds"]
    done = {}
    for slug in slugs:
        try:
            items = method_items(run_dir / "images" / slug)
        except ExportError:  # a method that has made nothing yet
            items = []
        done[slug] = {
            (index, parse_integer(png.stem)) for index, _, pngs in items for png in pngs if is_integer(png.stem)
        }
    if prompts is None:
        prompts = run_prompts(run_dir)
    indices = sorted(prompts) if prompts is not None else sorted({i for made in done.values() for i, _ in made})
    return {slug: [(i, s) for i in indices for s in seeds if (i, s) not in done[slug]] for slug in slugs}


def describe_missing(missing: Mapping[str, list[tuple[int, int]]], prompts: Mapping[int, str] | None = None) -> str:
    """One line: the first missing image of each method (prompt index, its prompt, seed) and the counts."""
    prompts = prompts or {}
    parts = []
    for slug, pairs in missing.items():
        if pairs:
            index, seed = pairs[0]
            shown = f" ({prompts[index]!r})" if index in prompts else ""
            more = f" and {len(pairs) - 1} more" if len(pairs) > 1 else ""
            parts.append(f"{slug!r} lacks prompt {index}{shown} seed {seed}{more}")
    return "; ".join(parts)


def check_fresh(out, name: str = "the export folder") -> None:
    """`out` is absent or an empty folder (an export never overwrites or mixes with earlier files)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{name} {str(out)!r} is a file: export into a new folder")
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{name} {str(out)!r} is not empty: export into a new folder")


def _fresh(out: Path) -> Path:
    check_fresh(out)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def metadata_lines(metadata_file) -> list[str]:
    """The non-blank lines of GenEval's `evaluation_metadata.jsonl` (a UTF-8 byte order mark accepted), as written."""
    path = Path(metadata_file)
    if not path.is_file():
        raise ExportError(f"GenEval metadata file {str(path)!r} not found")
    from date_diffusion.bench.suites import file_lines

    try:
        return [line.strip() for line in file_lines(path) if line.strip()]
    except ValueError as err:  # not UTF-8, or a carriage return alone
        raise ExportError(str(err)) from None


def check_geneval_prompts(prompts: dict[int, str], metadata_file) -> list[str]:
    """Item N's prompt is the `prompt` of line N of `metadata_file`, for every (index: prompt); the lines."""
    lines = metadata_lines(metadata_file)
    for index, prompt in sorted(prompts.items()):
        if index >= len(lines):
            raise ExportError(f"item {index} has no line in {metadata_file} ({len(lines)} lines)")
        try:
            expected = loads(lines[index]).get("prompt")
        except (json.JSONDecodeError, AttributeError):
            raise ExportError(f"line {index + 1} of {metadata_file} is not a JSON object with a 'prompt'") from None
        if not isinstance(expected, str) or expected.strip() != (prompt or "").strip():
            raise ExportError(f"item {index} is {prompt!r} but line {index + 1} of {metadata_file} is {expected!r}")
    return lines


T2I_NAME_BYTES = 255  # the longest file name Linux, macOS and Windows file systems take


def t2i_name(prompt: str, count: int) -> str:
    """T2I-CompBench's file name for the `count`-th image of a method (counted across its prompts)."""
    return f"{prompt}_{count:06d}.png"


def check_t2i_prompts(prompts: dict[int, str]) -> None:
    """Every prompt can be a T2I-CompBench file name's prompt part (no `_`, no `/`, not empty, short enough for a
    file name)."""
    for index, prompt in sorted(prompts.items()):
        if not prompt or "_" in prompt or "/" in prompt:
            raise ExportError(f"item {index}'s prompt {prompt!r} cannot be a T2I-CompBench file name ('_' or '/')")
        size = len(os.fsencode(t2i_name(prompt, 0)))
        if size > T2I_NAME_BYTES:
            raise ExportError(f"item {index}'s prompt ({len(prompt):,} characters) makes a T2I-CompBench file name of "
                              f"{size:,} bytes, longer than file systems take ({T2I_NAME_BYTES}): T2I-CompBench "
                              "names each image by its prompt; export a suite of shorter prompts")  # fmt: skip


def export_geneval(method_dir, out, metadata_file) -> int:
    """Write GenEval's layout; returns the number of images. `metadata_file`: GenEval's
    `evaluation_metadata.jsonl` the run's prompts were read from (item N = line N)."""
    items = method_items(method_dir)
    lines = check_geneval_prompts({index: meta.get("prompt") for index, meta, _ in items}, metadata_file)
    out, count = _fresh(out), 0
    for index, _, pngs in items:
        folder = out / f"{index:05d}"
        (folder / "samples").mkdir(parents=True)
        (folder / "metadata.jsonl").write_text(lines[index] + "\n")
        for k, png in enumerate(pngs):
            shutil.copyfile(png, folder / "samples" / f"{k:04d}.png")
            count += 1
    return count


def export_t2i_compbench(method_dir, out) -> int:
    """Write T2I-CompBench's layout (`samples/<prompt>_<NNNNNN>.png`); returns the number of images."""
    items = method_items(method_dir)
    check_t2i_prompts({index: meta.get("prompt") or "" for index, meta, _ in items})
    samples = _fresh(out) / "samples"
    samples.mkdir()
    count = 0
    for _, meta, pngs in items:
        for png in pngs:
            shutil.copyfile(png, samples / t2i_name(meta["prompt"], count))
            count += 1
    return count


def check_export(run_dir, slugs, kind: str, out, metadata_file=None, prompts=None, partial=False) -> str | None:
    """What `export_run` checks before its first file (`ExportError` for a run it would not export): the kind, a
    fresh `out`, each method's prompts for the layout, and a whole run unless `partial`; the line saying what a
    partial export lacks, or None. A command checks it before any of its own work (a report written, then the
    export refused, would be a usage error that wrote files)."""
    if kind not in KINDS:
        raise ExportError(f"unknown export kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "geneval" and metadata_file is None:
        raise ExportError("a GenEval export needs its evaluation_metadata.jsonl")
    check_fresh(out)
    for slug in slugs:
        items = method_items(Path(run_dir) / "images" / slug)
        texts = {index: meta.get("prompt") or "" for index, meta, _ in items}
        check_geneval_prompts(texts, metadata_file) if kind == "geneval" else check_t2i_prompts(texts)
    if prompts is None:
        prompts = run_prompts(run_dir)
    missing = missing_images(run_dir, slugs, prompts)
    if not any(missing.values()):
        return None
    what = describe_missing(missing, prompts)
    if not partial:
        raise ExportError(
            f"the run is not whole ({what}): {kind}'s scores assume every prompt with every seed, in every "
            "method; finish the run (the same bench command makes only what is missing), or export what "
            "there is with --export-partial"
        )
    return f"exporting a partial run: {what}"


def export_run(
    run_dir,
    slugs,
    kind: str,
    out,
    metadata_file=None,
    prompts: Mapping[int, str] | None = None,
    partial: bool = False,
    say: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Each method (`slugs`: folder names under `run_dir/images/`) into `out/<slug>/` in `kind`'s layout; the
    images written per method. Every method is checked before the first file is written, and the run must be whole
    (`missing_images` over `prompts`, default the run's own): an interrupted run is refused, naming a missing prompt
    and seed, unless `partial`, which exports what there is and tells `say` (default: a warning) what is missing."""
    line = check_export(run_dir, slugs, kind, out, metadata_file, prompts, partial)
    if line is not None:
        say(line) if say is not None else warnings.warn(line, stacklevel=2)
    counts, existed = {}, Path(out).exists()
    try:
        for slug in slugs:
            method_dir, target = Path(run_dir) / "images" / slug, Path(out) / slug
            if kind == "geneval":
                counts[slug] = export_geneval(method_dir, target, metadata_file)
            else:
                counts[slug] = export_t2i_compbench(method_dir, target)
    except BaseException:  # an export that fails part way (a full disk, an interrupt) leaves the folder as it was
        for entry in Path(out).iterdir() if existed else ():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        if not existed:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return counts
