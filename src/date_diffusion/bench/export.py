"""A bench run's images in the folder layouts the official GenEval and T2I-CompBench evaluators read.

Input: one method's folder of a run, `RUN/images/<method slug>/` (`<index:05d>/metadata.jsonl` and
`<index:05d>/samples/<seed:05d>.png`, an image counting once its `.json` record exists; see `bench/runner.py`).

- GenEval (djghosh13/geneval, README "Image generation"): `DIR/<NNNNN>/metadata.jsonl` holding the N-th line of
  the prompts' `evaluation_metadata.jsonl`, `DIR/<NNNNN>/samples/<SSSS>.png` (0000.png, 0001.png, ... per prompt);
  `grid.png` is optional and not written. GenEval's evaluator needs the metadata line's own fields (`tag`,
  `include`, ...), so `metadata_file` is that file; line N must hold the prompt of item N.
- T2I-CompBench (Karine-Huang/T2I-CompBench, Readme: `examples/samples/a green bench and a blue bowl_000000.png`):
  `DIR/samples/<prompt>_<NNNNNN>.png`, one running number over all images. Its evaluators take the prompt as the
  file name before the first `_` and sort by the number after the last `_`, so a prompt with `_` or `/` is refused.

`export_run` writes every method of a run into `DIR/<method slug>/` (`bench --export`, `report --export`); the
`check_*` functions are what the command line checks before any work (`cli/bench.py`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


class ExportError(ValueError):
    pass


KINDS = ("geneval", "t2i-compbench")


def method_items(method_dir) -> list[tuple[int, dict, list[Path]]]:
    """(index, the run's metadata line, the finished images in seed order) for each prompt of a method folder."""
    method_dir = Path(method_dir)
    if not method_dir.is_dir():
        raise ExportError(f"{method_dir} is not a method folder of a bench run (RUN/images/<method>/)")
    items = []
    for folder in sorted(p for p in method_dir.iterdir() if p.is_dir() and p.name.isdigit()):
        meta = folder / "metadata.jsonl"
        if not meta.exists():
            continue
        pngs = sorted(p for p in (folder / "samples").glob("*.png") if p.with_suffix(".json").exists())
        if pngs:
            items.append((int(folder.name), json.loads(meta.read_text().splitlines()[0]), pngs))
    if not items:
        raise ExportError(f"{method_dir} holds no finished images")
    return items


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
    return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]


def check_geneval_prompts(prompts: dict[int, str], metadata_file) -> list[str]:
    """Item N's prompt is the `prompt` of line N of `metadata_file`, for every (index: prompt); the lines."""
    lines = metadata_lines(metadata_file)
    for index, prompt in sorted(prompts.items()):
        if index >= len(lines):
            raise ExportError(f"item {index} has no line in {metadata_file} ({len(lines)} lines)")
        try:
            expected = json.loads(lines[index]).get("prompt")
        except (json.JSONDecodeError, AttributeError):
            raise ExportError(f"line {index} of {metadata_file} is not a JSON object with a 'prompt'") from None
        if not isinstance(expected, str) or expected.strip() != (prompt or "").strip():
            raise ExportError(f"item {index} is {prompt!r} but line {index} of {metadata_file} is {expected!r}")
    return lines


def check_t2i_prompts(prompts: dict[int, str]) -> None:
    """Every prompt can be a T2I-CompBench file name's prompt part (no `_`, no `/`, not empty)."""
    for index, prompt in sorted(prompts.items()):
        if not prompt or "_" in prompt or "/" in prompt:
            raise ExportError(f"item {index}'s prompt {prompt!r} cannot be a T2I-CompBench file name ('_' or '/')")


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
            shutil.copyfile(png, samples / f"{meta['prompt']}_{count:06d}.png")
            count += 1
    return count


def export_run(run_dir, slugs, kind: str, out, metadata_file=None) -> dict[str, int]:
    """Each method (`slugs`: folder names under `run_dir/images/`) into `out/<slug>/` in `kind`'s layout; the
    images written per method. Every method is checked before the first file is written."""
    if kind not in KINDS:
        raise ExportError(f"unknown export kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "geneval" and metadata_file is None:
        raise ExportError("a GenEval export needs its evaluation_metadata.jsonl")
    check_fresh(out)
    for slug in slugs:
        items = method_items(Path(run_dir) / "images" / slug)
        prompts = {index: meta.get("prompt") or "" for index, meta, _ in items}
        check_geneval_prompts(prompts, metadata_file) if kind == "geneval" else check_t2i_prompts(prompts)
    counts = {}
    for slug in slugs:
        method_dir, target = Path(run_dir) / "images" / slug, Path(out) / slug
        if kind == "geneval":
            counts[slug] = export_geneval(method_dir, target, metadata_file)
        else:
            counts[slug] = export_t2i_compbench(method_dir, target)
    return counts
