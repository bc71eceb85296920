"""Comparison grids that explain themselves: images side by side, each under a header that says what it shows.

A panel's header states its method (fixed, DATE, input, plain edit, DATE edit), the exact evaluator's verdict where
there is one (PASS, or FAIL with the failed aspects), the reward before -> after (the first update's
`reward_before`, the last update's `reward_after`) and the distance the embedding moved (the trace's
`final_distance`). Small images (the toy world's 64 px) are enlarged without smoothing to at least `MIN_SIDE` px a
side, so that the headers, drawn in Pillow's own font at a size that follows the panel's width, are readable.

Side by side, images whose mean absolute difference is below `DIFF_THRESHOLD` levels of 255 (over every pixel and
channel: a few levels, which the eye does not see) look the same. For them the grid adds a panel of their
difference, |b - a| per channel times `DIFF_GAIN` (clipped at 255), its scale stated in its header
("|DATE - fixed| x 16"); identical images get it too (all black), which shows that nothing changed. Images that
differ more are told apart without it.

`compare_grid` returns the grid and one record per panel (what its header says, where its image lies in the grid);
a grid PNG's record holds them as `panels` (`grid_record`), which `date-diffusion info` prints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MIN_SIDE = 256  # px: smaller images are enlarged by a whole factor to at least this
DIFF_THRESHOLD = 4.0  # mean |b - a| in levels of 255 below which the difference panel is added
DIFF_GAIN = 16  # the difference panel's amplification: 16 levels of difference are full brightness
INK, PAPER = (0, 0, 0), (255, 255, 255)
VERDICT_INK = {"evaluator: PASS": (0, 110, 0), "evaluator: FAIL": (180, 0, 0)}
DATE_LABELS = {"date": "DATE", "replay": "DATE (replayed)", "fixed": "DATE (inactive)"}


@dataclass
class Panel:
    image: Image.Image
    record: dict  # what the header says: method; verdict and failed; reward_before / _after; final_distance; ...


def date_label(method: str) -> str:
    """The header of a DATE image by its record's method: `date`, `replay`, or `fixed` (DATE could not move)."""
    return DATE_LABELS.get(method, method)


def verdict_record(verdict: dict | None) -> dict:
    """The exact evaluator's verdict as `verdict` (PASS or FAIL) and `failed` aspects; {} where there is none (no
    evaluator for the model, or a prompt outside the toy grammar)."""
    if not verdict or verdict.get("pass") is None:
        return {}
    return {
        "verdict": "PASS" if verdict["pass"] else "FAIL",
        "failed": [a for a, ok in verdict["aspects"].items() if not ok],
    }


def trace_record(trace: dict | None) -> dict:
    """What a DATE trace says in a header: the first reward before and the last reward after an update, the
    distance moved; {} for no trace or one without update steps (a replay)."""
    if not trace or not trace.get("update_steps"):
        return {}
    record = {"update_steps": list(trace["update_steps"]), "final_distance": float(trace["final_distance"])}
    updates = trace.get("updates") or []
    if updates:
        record["reward_before"] = updates[0]["reward_before"]
        if "reward_after" in updates[-1]:
            record["reward_after"] = updates[-1]["reward_after"]
    return record


def panel(image, method: str, verdict: dict | None = None, trace: dict | None = None) -> Panel:
    return Panel(image.convert("RGB"), {"method": method, **verdict_record(verdict), **trace_record(trace)})


def verdict_text(record: dict) -> str | None:
    """`PASS` or `FAIL (aspect, ...)` of a panel record; None where there is no verdict."""
    if "verdict" not in record:
        return None
    return "PASS" if record["verdict"] == "PASS" else f"FAIL ({', '.join(record['failed'])})"


def verdict_lines(evaluator: dict) -> list[str]:
    """`evaluator (KIND): PASS` or `... FAIL (aspect, ...)` for each image of a record's `evaluator` verdicts."""
    return [f"evaluator ({k}): {verdict_text(verdict_record(v)) or 'no verdict'}" for k, v in evaluator.items()]


def reward_text(record: dict) -> str | None:
    """`x0_hat reward B -> A` (the clean-image estimate's reward before the first update and after the last: it
    rises with denoising too, so it is no comparison with the fixed image); None where nothing was scored."""
    if "reward_before" not in record:
        return None
    after = f" -> {record['reward_after']:.4f}" if "reward_after" in record else " (after: not tracked)"
    return f"x0_hat reward {record['reward_before']:.4f}{after}"


def update_text(update: dict) -> str:
    """One DATE update of a trace: `reward B -> A, moved D` (and whether it was skipped)."""
    after = f" -> {update['reward_after']:.4f}" if "reward_after" in update else ""
    note = " (skipped: zero or non-finite gradient)" if update["skipped"] else ""
    return f"reward {update['reward_before']:.4f}{after}, moved {update['update_norm']:.3f}{note}"


def header_lines(record: dict) -> list[str]:
    """The lines of a panel's header, from its record."""
    verdict, reward = verdict_text(record), reward_text(record)
    lines = [record["method"]]
    lines += [f"evaluator: {verdict}"] if verdict else []
    lines += [reward] if reward else []
    lines += [f"embedding moved {record['final_distance']:.3f}"] if "final_distance" in record else []
    if "mean_abs_diff" in record and not record["pixels_changed"]:
        lines.append("identical: no pixel changed")
    elif "mean_abs_diff" in record:
        share = record["pixels_changed"] / record["pixels"]
        lines.append(f"mean diff {record['mean_abs_diff']:.2f}/255, {share:.1%} of pixels changed")
    return lines


def _levels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def abs_diff(a, b) -> np.ndarray:
    """|b - a| per pixel and channel, in levels of 255."""
    return np.abs(_levels(b) - _levels(a))


def changed_pixels(a, b) -> tuple[int, int]:
    """(pixels whose value differs in any channel, all pixels) of two images of one size."""
    changed = abs_diff(a, b).any(axis=-1)
    return int(changed.sum()), int(changed.size)


def difference(a: Panel, b: Panel, gain: int = DIFF_GAIN) -> Panel:
    """The panel |b - a| x gain (per channel, clipped at 255), with what it shows in its header."""
    diff = abs_diff(a.image, b.image)
    image = Image.fromarray(np.clip(diff * gain, 0, 255).astype(np.uint8))
    changed, total = changed_pixels(a.image, b.image)
    record = {"method": f"|{b.record['method']} - {a.record['method']}| x {gain}", "kind": "difference"}
    record.update(of=[a.record["method"], b.record["method"]], gain=gain, mean_abs_diff=float(diff.mean()))
    record.update(pixels_changed=changed, pixels=total)
    return Panel(image, record)


def compare_grid(panels: list[Panel], difference_of: tuple[int, int] | None = None, min_side: int = MIN_SIDE):
    """(grid image, panel records): the panels side by side under their headers, and, where the two panels
    `difference_of` names differ by less than `DIFF_THRESHOLD`, their amplified difference last."""
    panels = list(panels)
    if difference_of is not None:
        a, b = (panels[k] for k in difference_of)
        if abs_diff(a.image, b.image).mean() < DIFF_THRESHOLD:
            panels.append(difference(a, b))
    return layout(panels, min_side)


def fixed_date_grid(fixed, image, method: str, verdicts: dict, trace: dict):
    """(grid, panel records) of fixed | DATE (| their amplified difference): the comparison generate, edit's
    callers and the page show; `verdicts` by "fixed" and "date", `method` the DATE image's record method."""
    shown = [
        panel(fixed, "fixed", verdicts.get("fixed")),
        panel(image, date_label(method), verdicts.get("date"), trace),
    ]
    return compare_grid(shown, difference_of=(0, 1))


def _ink(line: str) -> tuple:
    return next((ink for start, ink in VERDICT_INK.items() if line.startswith(start)), INK)


def header_font(width: int):
    """Pillow's default font at a size that follows the panel's width (its bitmap font without FreeType)."""
    try:
        return ImageFont.load_default(size=max(12, round(width / 18)))
    except (ImportError, OSError, AttributeError):
        return ImageFont.load_default()


def wrap(text: str, font, width: int) -> list[str]:
    """`text` broken at spaces into lines no wider than `width` px (a single longer word stays whole)."""
    lines = [""]
    for word in text.split(" "):
        trial = f"{lines[-1]} {word}" if lines[-1] else word
        if lines[-1] and font.getlength(trial) > width:
            lines.append(word)
        else:
            lines[-1] = trial
    return lines


def layout(panels: list[Panel], min_side: int = MIN_SIDE):
    """(grid, records): equal-size panels enlarged by one whole factor (nearest neighbour), each under a header
    band of its wrapped header lines; each record gets its image's `box` in the grid and the `scale`."""
    size = panels[0].image.size
    if any(p.image.size != size for p in panels):
        raise ValueError(f"grid panels differ in size: {[p.image.size for p in panels]}")
    scale = max(1, -(-min_side // min(size)))
    w, h = size[0] * scale, size[1] * scale
    font, gap = header_font(w), max(4 * scale, w // 64)
    pad = max(4, w // 48)
    line_h = font.getbbox("Ag|(")[3] + max(2, w // 96)
    texts = [[(piece, _ink(line)) for line in header_lines(p.record) for piece in wrap(line, font, w - 2 * pad)]
             for p in panels]  # fmt: skip
    top = max(len(t) for t in texts) * line_h + 2 * pad
    grid = Image.new("RGB", (len(panels) * (w + gap) - gap, top + h), PAPER)
    draw, records = ImageDraw.Draw(grid), []
    for k, (p, lines) in enumerate(zip(panels, texts)):
        x = k * (w + gap)
        grid.paste(p.image.resize((w, h), Image.Resampling.NEAREST), (x, top))
        for i, (line, ink) in enumerate(lines):
            draw.text((x + pad, pad + i * line_h), line, fill=ink, font=font)
        records.append({**p.record, "box": [x, top, x + w, top + h], "scale": scale})
    return grid, records


def grid_label(panels: list[dict]) -> str:
    """`fixed | DATE | difference x 16`: what a grid shows, left to right, from its panel records."""
    return " | ".join(f"difference x {p['gain']}" if p.get("kind") == "difference" else p["method"] for p in panels)


def grid_record(record: dict, panels: list[dict]) -> dict:
    """A grid PNG's record: the DATE image's record with every panel's."""
    return {**record, "image": "compare grid", "panels": panels}
