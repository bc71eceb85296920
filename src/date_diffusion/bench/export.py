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
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


class ExportError(ValueError):
    pass


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


def _fresh(out: Path) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} is not empty: export into a new folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def export_geneval(method_dir, out, metadata_file) -> int:
    """Write GenEval's layout; returns the number of images. `metadata_file`: GenEval's
    `evaluation_metadata.jsonl` the run's prompts were read from (item N = line N)."""
    lines = [line for line in Path(metadata_file).read_text().splitlines() if line.strip()]
    items = method_items(method_dir)
    for index, meta, _ in items:
        if index >= len(lines):
            raise ExportError(f"item {index} has no line in {metadata_file} ({len(lines)} lines)")
        expected = json.loads(lines[index]).get("prompt")
        if expected != meta.get("prompt"):
            raise ExportError(
                f"item {index} is {meta.get('prompt')!r} but line {index} of {metadata_file} is {expected!r}"
            )
    out, count = _fresh(out), 0
    for index, _, pngs in items:
        folder = out / f"{index:05d}"
        (folder / "samples").mkdir(parents=True)
        (folder / "metadata.jsonl").write_text(lines[index].strip() + "\n")
        for k, png in enumerate(pngs):
            shutil.copyfile(png, folder / "samples" / f"{k:04d}.png")
            count += 1
    return count


def export_t2i_compbench(method_dir, out) -> int:
    """Write T2I-CompBench's layout (`samples/<prompt>_<NNNNNN>.png`); returns the number of images."""
    items = method_items(method_dir)
    for index, meta, _ in items:
        prompt = meta.get("prompt") or ""
        if not prompt or "_" in prompt or "/" in prompt:
            raise ExportError(f"item {index}'s prompt {prompt!r} cannot be a T2I-CompBench file name ('_' or '/')")
    samples = _fresh(out) / "samples"
    samples.mkdir()
    count = 0
    for _, meta, pngs in items:
        for png in pngs:
            shutil.copyfile(png, samples / f"{meta['prompt']}_{count:06d}.png")
            count += 1
    return count
