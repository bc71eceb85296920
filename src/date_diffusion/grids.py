"""Comparison grids that explain themselves: images side by side, each under a header that says what it shows.

A panel's header states its method (fixed, DATE, input, plain edit, DATE edit), the exact evaluator's verdict where
there is one (PASS, FAIL with the failed aspects, or no verdict with why: a prompt outside the toy world), the
reward of its finished image where it was scored, for the compared image with its difference to the other one
("reward 0.9249 (+0.0005 vs fixed)": the same quantity for each image), and the distance the embedding moved (the
trace's `final_distance`). The reward of the clean-image estimate x0_hat at DATE's updates is no header's: it rises
with denoising with or without DATE, so it compares nothing (`info` and the terminal show it per update, labelled).
Where the evaluator gave no verdict, a line under the panels says what the toy world knows. Small images (the toy
world's 64 px) are enlarged without smoothing to at least `MIN_SIDE` px a side, so that the headers, drawn in
Pillow's own font at a size that follows the panel's width, are readable.

Side by side, images whose mean absolute difference is below `DIFF_THRESHOLD` levels of 255 (over every pixel and
channel: a few levels, which the eye does not see) look the same. For them the grid adds a panel of their
difference, |b - a| per channel times `DIFF_GAIN` (clipped at 255), its scale stated in its header
("|DATE - fixed| x 16"); identical images get it too (all black), which shows that nothing changed. Images that
differ more are told apart without it.

A video (a list of frames) is shown as a still: `STRIP_FRAMES` evenly spaced frames side by side (`still`), so
fixed | DATE of two videos are two strips of the same frames; its reward is the mean over those frames.

`compare_grid` returns the grid and one record per panel (what its header says, where its image lies in the grid);
a grid PNG's record holds them as `panels` (`grid_record`), which `date-diffusion info` prints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def distance_text(d: float) -> str:
    """A distance the embedding moved, as every line shows it: three decimals, and a distance too small for them
    (an update below the embedding's float32 resolution, `--rho 1e-7`) with its own digits, never `0.000`."""
    return f"{d:.3f}" if d == 0 or abs(d) >= 0.0005 else f"{d:.2g}"


MIN_SIDE = 256  # px: smaller images are enlarged by a whole factor to at least this
DIFF_THRESHOLD = 4.0  # mean |b - a| in levels of 255 below which the difference panel is added
DIFF_GAIN = 16  # the difference panel's amplification: 16 levels of difference are full brightness
STRIP_FRAMES = 4  # a video's still: this many evenly spaced frames side by side
INK, PAPER = (0, 0, 0), (255, 255, 255)
VERDICT_INK = {"evaluator: PASS": (0, 110, 0), "evaluator: FAIL": (180, 0, 0)}
DATE_LABELS = {"date": "DATE", "replay": "DATE (replayed)", "fixed": "DATE (inactive)"}


@dataclass
class Panel:
    image: Image.Image
    record: dict  # what the header says: method; verdict and failed (or why); final_reward; final_distance; ...


def date_label(method: str) -> str:
    """The header of a DATE image by its record's method: `date`, `replay`, or `fixed` (DATE could not move)."""
    return DATE_LABELS.get(method, method)


def verdict_record(verdict: dict | None) -> dict:
    """The exact evaluator's verdict as `verdict` (PASS or FAIL) and `failed` aspects; for a prompt it cannot read
    `verdict` "none" with `why` (the words it does not know) and `knows` (the toy world's vocabulary); {} where there
    is no evaluator (a model other than the toy world's)."""
    if not verdict:
        return {}
    if verdict.get("pass") is None:
        if "why" not in verdict and "error" not in verdict:
            return {}
        record = {"verdict": "none", "why": verdict.get("why") or verdict["error"]}
        return {**record, "knows": verdict["knows"]} if verdict.get("knows") else record
    return {
        "verdict": "PASS" if verdict["pass"] else "FAIL",
        "failed": [a for a, ok in verdict["aspects"].items() if not ok],
    }


def trace_record(trace: dict | None) -> dict:
    """What a DATE trace says in a header: its update steps and the distance moved; {} for no trace or one without
    update steps (a replay)."""
    if not trace or not trace.get("update_steps"):
        return {}
    return {"update_steps": list(trace["update_steps"]), "final_distance": float(trace["final_distance"])}


def panel(image, method: str, verdict: dict | None = None, trace: dict | None = None, reward=None) -> Panel:
    """A panel of `image` under `method`, with the exact evaluator's `verdict`, DATE's `trace` and the `reward` of
    the finished image (a number, or None where it was not scored)."""
    record = {"method": method, **verdict_record(verdict), **trace_record(trace)}
    if reward is not None:
        record["final_reward"] = float(reward)
    return Panel(image.convert("RGB"), record)


def verdict_text(record: dict) -> str | None:
    """`PASS`, `FAIL (aspect, ...)` or `no verdict (why)` of a panel record; None where there is no evaluator."""
    if "verdict" not in record:
        return None
    if record["verdict"] == "none":
        return f"no verdict ({record['why']})"
    return "PASS" if record["verdict"] == "PASS" else f"FAIL ({', '.join(record['failed'])})"


def verdict_lines(evaluator: dict) -> list[str]:
    """`evaluator (KIND): PASS`, `... FAIL (aspect, ...)` or `... no verdict (why)` for each image of a record's
    `evaluator` verdicts."""
    return [f"evaluator ({k}): {verdict_text(verdict_record(v)) or 'no verdict'}" for k, v in evaluator.items()]


def shown_verdicts(record: dict, evaluator: dict) -> dict:
    """A record's evaluator verdicts by the names the lines show: the DATE image of a record DATE did not move
    (method `fixed`) as `date, inactive`, never as a DATE image."""
    inactive = record.get("method") == "fixed"
    return {("date, inactive" if inactive and kind == "date" else kind): v for kind, v in evaluator.items()}


def knows_line(evaluator: dict) -> str | None:
    """Where the evaluator gave an image of a record's `evaluator` verdicts none: what the toy world knows (one
    line); else None."""
    return grid_note([verdict_record(v) for v in evaluator.values()])


def grid_note(records: list[dict]) -> str | None:
    """Where a panel record has no verdict for a prompt outside the toy world: its vocabulary (the line under a
    grid's panels); else None."""
    return next((f"the toy world knows only {r['knows']}" for r in records if r.get("knows")), None)


def reward_text(record: dict) -> str | None:
    """`reward R` of a panel's finished image, and for the compared image `(+D vs OTHER)`, its difference to the
    other image's reward; None where the image was not scored."""
    if "final_reward" not in record:
        return None
    vs = record.get("final_reward_vs")
    return f"reward {record['final_reward']:.4f}" + (f" ({vs['difference']:+.4f} vs {vs['method']})" if vs else "")


def update_text(update: dict) -> str:
    """One DATE update of a trace: `x0_hat reward B -> A, moved D` (the reward of the clean-image estimate just
    before and just after the update; and whether it was skipped)."""
    after = f" -> {update['reward_after']:.4f}" if "reward_after" in update else ""
    note = " (skipped: zero or non-finite gradient)" if update["skipped"] else ""
    return f"x0_hat reward {update['reward_before']:.4f}{after}, moved {distance_text(update['update_norm'])}{note}"


def strip_frames(media, k: int = STRIP_FRAMES) -> list[Image.Image]:
    """The frames a video is shown and scored by: `k` evenly spaced ones, first and last included (all where it
    has fewer); an image is its own one frame."""
    if not isinstance(media, (list, tuple)):
        return [media]
    n = len(media)
    return [media[0]] if n == 1 or k == 1 else [media[round(i * (n - 1) / (min(k, n) - 1))] for i in range(min(k, n))]


def still(media) -> Image.Image:
    """An image as it is; a video as its `strip_frames` side by side (what a comparison grid shows of it)."""
    frames = strip_frames(media)
    if len(frames) == 1:
        return frames[0]
    width, height = frames[0].size
    strip = Image.new("RGB", (width * len(frames), height))
    for k, frame in enumerate(frames):
        strip.paste(frame.convert("RGB"), (k * width, 0))
    return strip


def final_rewards(reward, images: dict, prompt: str) -> dict:
    """{kind: the reward of the finished image} of PIL images (or videos: the mean over their `strip_frames`)
    `images` for `prompt`, scored in one batch without gradients: what a comparison states for each image."""
    import numpy as np
    import torch

    kinds = list(images)
    frames = {k: strip_frames(images[k]) for k in kinds}
    pixels = np.stack([np.asarray(f.convert("RGB")) for k in kinds for f in frames[k]])
    pixels = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    device = next((p.device for p in reward.parameters()), "cpu") if isinstance(reward, torch.nn.Module) else "cpu"
    with torch.no_grad():
        scores = reward(pixels.to(device), [prompt] * len(pixels)).tolist()
    out, start = {}, 0
    for k in kinds:
        n = len(frames[k])
        out[k] = sum(scores[start : start + n]) / n
        start += n
    return out


def header_lines(record: dict) -> list[str]:
    """The lines of a panel's header, from its record."""
    verdict, reward = verdict_text(record), reward_text(record)
    lines = [record["method"]]
    lines += [f"evaluator: {verdict}"] if verdict else []
    lines += [reward] if reward else []
    lines += [f"embedding moved {distance_text(record['final_distance'])}"] if "final_distance" in record else []
    if "mean_abs_diff" in record and not record["pixels_changed"]:
        lines.append("identical: no pixel changed")
    elif "mean_abs_diff" in record:
        lines.append(f"mean diff {record['mean_abs_diff']:.2f}/255, {changed_text(record)} pixels changed")
    return lines


def changed_text(record: dict) -> str:
    """How many pixels a difference record (`pixels_changed` of `pixels`) counts, as every view says it: a share and
    the count, so that one pixel of 4096 never reads as `0.0%`."""
    changed, total = record["pixels_changed"], record["pixels"]
    return f"{changed / total:.2%} ({changed:,} of {total:,})"


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
    `difference_of` (a, b) names differ by less than `DIFF_THRESHOLD`, their amplified difference last. Where both
    were scored, b's record gets its reward's difference to a's (`final_reward_vs`)."""
    panels = list(panels)
    if difference_of is not None:
        a, b = (panels[k] for k in difference_of)
        if "final_reward" in a.record and "final_reward" in b.record:
            difference_ = b.record["final_reward"] - a.record["final_reward"]
            b.record["final_reward_vs"] = {"method": a.record["method"], "difference": difference_}
        if abs_diff(a.image, b.image).mean() < DIFF_THRESHOLD:
            panels.append(difference(a, b))
    return layout(panels, min_side)


def fixed_date_grid(fixed, image, method: str, verdicts: dict, trace: dict, rewards: dict | None = None):
    """(grid, panel records) of fixed | DATE (| their amplified difference): the comparison generate and the page
    show; `verdicts` and `rewards` (the finished images' rewards, `final_rewards`) by "fixed" and "date", `method`
    the DATE image's record method."""
    rewards = rewards or {}
    shown = [
        panel(fixed, "fixed", verdicts.get("fixed"), reward=rewards.get("fixed")),
        panel(image, date_label(method), verdicts.get("date"), trace, rewards.get("date")),
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
    band of its wrapped header lines, and under them all the `grid_note` where there is one; each record gets its
    image's `box` in the grid and the `scale`."""
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
    width = len(panels) * (w + gap) - gap
    note = grid_note([p.record for p in panels])
    foot = wrap(note, font, width - 2 * pad) if note else []
    grid = Image.new("RGB", (width, top + h + (len(foot) * line_h + 2 * pad if foot else 0)), PAPER)
    draw, records = ImageDraw.Draw(grid), []
    for i, line in enumerate(foot):
        draw.text((pad, top + h + pad + i * line_h), line, fill=INK, font=font)
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
