"""Tables and plots of a benchmark run, from its per-image records (`date-diffusion report DIR`)."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from date_diffusion.bench.runner import PNG_LIMIT, read_trusted, run_methods
from date_diffusion.core.trace import DID_NOT_MOVE, UNMOVED_IMAGE, rounded_away, stood_still
from date_diffusion.evaluation.fid import CLIPImageFeatures, frechet_distance
from date_diffusion.evaluation.stats import bootstrap_ci, paired_difference
from date_diffusion.outputs import atomic_write
from date_diffusion.rewards.registry import reward_from_spec
from date_diffusion.schemas import not_a_file
from date_diffusion.toyworld import scene, world

# matplotlib is imported where the plots are drawn, after selecting its Agg backend (no display needed)

PLOT_FILES = ("accuracy_by_category.png", "reward_trajectory.png", "metric_vs_rho.png")
RESULT_FILES = ("results.md", "results.csv", "results.json")
REPORT_FILES = (*RESULT_FILES, *PLOT_FILES)  # what a report writes in the run's folder

METRICS = ("exact", "changed", "preserved", "pixel_distance", "clip_eval", "min_object_clip", "reward", "seconds")


def _mean_ci(values):
    return bootstrap_ci(values) if values else (float("nan"),) * 3


def summarize(records_by_method: dict[str, list[dict]], baseline: str | None) -> dict:
    """Per method: mean and 95% CI of each metric, per category for `exact`; paired differences vs baseline."""
    out = {}
    base = {(r["index"], r["seed"]): r for r in records_by_method.get(baseline, [])}
    for label, recs in records_by_method.items():
        entry = {"n": len(recs), "metrics": {}, "categories": {}, "vs_baseline": {}}
        entry["unmoved"] = sum(stood_still(r.get("trace")) for r in recs)  # DATE's images it did not move
        for m in METRICS:
            vals = [r[m] for r in recs if r.get(m) is not None]
            if vals:
                entry["metrics"][m] = _mean_ci(vals)
        entry["peak_memory_mb"] = max((r["peak_memory_mb"] for r in recs), default=None)
        by_cat = defaultdict(list)
        for r in recs:
            if r.get("exact") is not None:
                by_cat[r["category"]].append(r["exact"])
        entry["categories"] = {c: _mean_ci(v) for c, v in sorted(by_cat.items())}
        if baseline and label != baseline and base:
            pairs = [(r, base[(r["index"], r["seed"])]) for r in recs if (r["index"], r["seed"]) in base]
            for m in METRICS[:-1]:  # all but seconds
                ps = [(a[m], b[m]) for a, b in pairs if a.get(m) is not None and b.get(m) is not None]
                if ps:
                    entry["vs_baseline"][m] = paired_difference([a for a, _ in ps], [b for _, b in ps])
            cat_pairs = defaultdict(list)
            for a, b in pairs:
                if a.get("exact") is not None:
                    cat_pairs[a["category"]].append((a["exact"], b["exact"]))
            entry["vs_baseline_categories"] = {
                c: paired_difference([a for a, _ in v], [b for _, b in v]) for c, v in sorted(cat_pairs.items())
            }
        out[label] = entry
    return out


def _fmt(ci, scale=1.0, digits=4, sign=False):
    m, lo, hi = (scale * v for v in ci)
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    return f"{f.format(m)} [{f.format(lo)}, {f.format(hi)}]"


def table(columns: list[str], rows: list[tuple[str, list[str]]]) -> list[str]:
    """A markdown table: the header, its rule, and one line per (label, cells) row."""
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    return lines + [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]


def _cell(metrics: dict, key: str, scale=1.0, digits=4, sign=False) -> str:
    return _fmt(metrics[key], scale, digits, sign) if key in metrics else "-"


def markdown(summary: dict, baseline: str | None, settings: dict, incomplete: str | None = None) -> str:
    """The results tables; `incomplete` (`incomplete_note`) said under the title: every table holds only the images
    there are."""
    lines = _main_table(summary, settings)
    if incomplete:
        lines[1:1] = ["", f"**Incomplete run:** {incomplete}."]
    if any("changed" in e["metrics"] for e in summary.values()):
        lines += _editing_tables(summary, baseline)
    if baseline:
        lines += _paired_table(summary, baseline)
    lines += _category_tables(summary, baseline)
    return "\n".join(lines) + "\n"


MAIN_COLUMNS = ["method", "n", "exact (%)", "held-out CLIP", "min object CLIP", "reward", "FID-CLIP", "s / image",
                "peak memory so far (MB)"]  # fmt: skip


def _steps(settings: dict) -> str:
    """The run's step count as the title states it, with the methods that sample their own (`fixed@K`)."""
    own = [m for m in run_methods(settings) if not m.reads_run_steps]
    shown = ", ".join(f"`{m.label}` samples {m.steps_for(settings['steps'])}" for m in own)
    return f"{settings['steps']} steps" + (f" ({shown})" if own else "")


def _main_table(summary: dict, settings: dict) -> list[str]:
    lines = [
        f"# Benchmark: suite `{settings['suite']}`, {len(settings['seeds'])} seed(s) per prompt, "
        f"{_steps(settings)}, guidance {settings['guidance']}",
        "",
        f"model `{settings['model']}`, reward `{settings['reward']}`, held-out CLIP `{settings['eval_clip']}`",
        "",
        "Means with 95% bootstrap CIs; exact = toy-world evaluator accuracy (%).",
        "",
        "Peak memory: CUDA max allocated, or on CPU the process's peak RSS up to that method (methods run in "
        "order in one process; `bench-perf` measures each configuration in its own process).",
        "",
        "FID-CLIP: Frechet distance of held-out CLIP image features to reference images (toy: the renderer's "
        "scenes for the same prompts and seeds); not comparable to Inception FID.",
        "",
    ]
    rows = []
    for label, e in summary.items():
        m = e["metrics"]
        cells = [str(e["n"]), _cell(m, "exact", 100, 1)]
        cells += [_cell(m, k) for k in ("clip_eval", "min_object_clip", "reward")]
        cells.append(f"{e['fid']['fid_clip']:.4f}" if "fid" in e else "-")
        cells.append(f"{m['seconds'][0]:.3f}" if "seconds" in m else "-")
        cells.append(f"{e['peak_memory_mb']:.0f}" if e["peak_memory_mb"] else "-")
        rows.append((label, cells))
    return lines + table(MAIN_COLUMNS, rows) + _unmoved_notes(summary)


def _unmoved_notes(summary: dict) -> list[str]:
    """A line per DATE method some of whose images DATE did not move (`core.trace.stood_still`): its column holds
    fixed-embedding images there, which the table does not show; and one per method an update of which moved less
    than half its step (`core.trace.rounded_away`)."""
    notes = [f"`{label}`: in {e['unmoved']} of {e['n']} images DATE did not move the embedding ({DID_NOT_MOVE}): "
             f"those images are {UNMOVED_IMAGE}." for label, e in summary.items() if e.get("unmoved")]  # fmt: skip
    notes += [f"`{label}`: in {e['rounded']} of {e['n']} images an update moved the embedding less than half its "
              "step (a step below the precision of the embedding's values, which float32 rounds away): the images "
              "are nearly the fixed sampler's." for label, e in summary.items() if e.get("rounded")]  # fmt: skip
    return ["", *notes] if notes else []


def _editing_tables(summary: dict, baseline: str | None) -> list[str]:
    lines = [
        "",
        "Editing: changed = the target caption holds (exact evaluator); preserved = what the edit does "
        "not name stayed; pixel distance = mean |edited - source| (0-1).",
        "",
    ]
    rows = [
        (label, [_cell(e["metrics"], "changed", 100, 1), _cell(e["metrics"], "preserved", 100, 1),
                 _cell(e["metrics"], "pixel_distance")])
        for label, e in summary.items()
    ]  # fmt: skip
    lines += table(["method", "changed (%)", "preserved (%)", "pixel distance"], rows)
    paired = {k: e["vs_baseline"] for k, e in summary.items() if k != baseline and "changed" in e["vs_baseline"]}
    if paired:
        lines += ["", f"Editing, paired against `{baseline}` (95% bootstrap CIs):", ""]
        rows = [
            (label, [_cell(v, "changed", 100, 1, True), _cell(v, "preserved", 100, 1, True),
                     _cell(v, "pixel_distance", 1, 4, True)])
            for label, v in paired.items()
        ]  # fmt: skip
        lines += table(["method", "changed (pp)", "preserved (pp)", "pixel distance"], rows)
    return lines


def _paired_table(summary: dict, baseline: str) -> list[str]:
    lines = ["", f"Paired differences against `{baseline}` (same prompts and seeds), 95% bootstrap CIs:", ""]
    rows = []
    for label, e in summary.items():
        v = e["vs_baseline"]
        if label == baseline or not v:
            continue
        cells = [_cell(v, "exact", 100, 1, True)] + [
            _cell(v, k, 1, 4, True) for k in ("clip_eval", "min_object_clip", "reward")
        ]
        rows.append((label, cells))
    return lines + table(["method", "exact (pp)", "held-out CLIP", "min object CLIP", "reward"], rows)


def _category_tables(summary: dict, baseline: str | None) -> list[str]:
    cats = sorted({c for e in summary.values() for c in e["categories"]})
    if not cats:
        return []
    rows = [
        (label, [f"{100 * e['categories'][c][0]:.1f}" if c in e["categories"] else "-" for c in cats])
        for label, e in summary.items()
    ]
    lines = ["", "Exact accuracy (%) per category:", "", *table(["method", *cats], rows)]
    if baseline:
        diffs = [(label, e.get("vs_baseline_categories") or {}) for label, e in summary.items()]
        rows = [(label, [_cell(vc, c, 100, 1, True) for c in cats]) for label, vc in diffs if vc]
        lines += [
            "",
            f"Per-category difference against `{baseline}` (pp, 95% CI):",
            "",
            *table(["method", *cats], rows),
        ]
    return lines


def csv_rows(summary: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "metric", "category", "mean", "ci_low", "ci_high", "n"])
    for label, e in summary.items():
        for m, ci in e["metrics"].items():
            w.writerow([label, m, "all", *ci, e["n"]])
        for c, ci in e["categories"].items():
            w.writerow([label, "exact", c, *ci, ""])
        for m, ci in e["vs_baseline"].items():
            w.writerow([label, f"{m}_minus_baseline", "all", *ci, ""])
    return buf.getvalue()


def rho_sweep(summary: dict, methods) -> list[tuple[float, str, dict]]:
    """(rho, label, metrics) of the methods that are a point of the rho sweep (`Method.plot_coordinates`: the
    paper's DATE but for rho), sorted by rho: the points of `metric_vs_rho.png`."""
    points = []
    for m in methods:
        rho = m.plot_coordinates().get("rho")
        if rho is not None and m.label in summary and "clip_eval" in summary[m.label]["metrics"]:
            points.append((rho, m.label, summary[m.label]["metrics"]))
    return sorted(points, key=lambda p: p[0])


def plots(out: Path, summary: dict, records: dict[str, list[dict]], methods) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    made = [_accuracy_plot(out, summary), _trajectory_plot(out, records), _rho_plot(out, summary, methods)]
    return [p for p in made if p is not None]


def _legend(ax) -> None:
    """The legend beside the axes, right of them, where it covers no bar, line or point."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # the whole figure, the legend beside the axes too
    plt.close(fig)
    return path


def _accuracy_plot(out: Path, summary: dict) -> Path | None:
    """Exact accuracy per category and method, with 95% CIs."""
    import matplotlib.pyplot as plt

    cats = sorted({c for e in summary.values() for c in e["categories"]})
    if not cats:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(cats)), 3.5))
    width = 0.8 / max(1, len(summary))
    for k, (label, e) in enumerate(summary.items()):
        ci = {c: e["categories"].get(c) for c in cats}
        vals = [100 * ci[c][0] if ci[c] else np.nan for c in cats]
        err = [[100 * (ci[c][0] - ci[c][1]) if ci[c] else 0 for c in cats],
               [100 * (ci[c][2] - ci[c][0]) if ci[c] else 0 for c in cats]]  # fmt: skip
        ax.bar(np.arange(len(cats)) + k * width, vals, width, yerr=err, label=label, capsize=2)
    ax.set_xticks(np.arange(len(cats)) + 0.4 - width / 2, cats, rotation=20)
    ax.set_ylabel("exact accuracy (%)")
    _legend(ax)
    return _save(fig, out / PLOT_FILES[0])


def _trajectory_plot(out: Path, records: dict[str, list[dict]]) -> Path | None:
    """The reward before (and after) each update, averaged over the suite, per DATE method."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    drew = False
    for label, recs in records.items():
        by_step = defaultdict(list)
        for r in recs:
            for u in r.get("trace", {}).get("updates", []):
                by_step[u["step"]].append(u["reward_before"])
                if "reward_after" in u:
                    by_step[u["step"] + 0.5].append(u["reward_after"])
        if by_step:
            xs = sorted(by_step)
            ax.plot(xs, [np.mean(by_step[x]) for x in xs], marker="o", label=label)
            drew = True
    if not drew:
        plt.close(fig)
        return None
    ax.set_xlabel("sampling step (x.5 = just after the update)")
    ax.set_ylabel("reward of x0_hat")
    _legend(ax)
    return _save(fig, out / PLOT_FILES[1])


def _rho_plot(out: Path, summary: dict, methods) -> Path | None:
    """Exact accuracy and held-out CLIP score against rho (the plain DATE runs), `fixed` as a line."""
    import matplotlib.pyplot as plt

    points = rho_sweep(summary, methods)
    if len({p[0] for p in points}) < 2:
        return None
    metrics = [k for k in ("exact", "clip_eval") if all(k in p[2] for p in points)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        ci = [p[2][metric] for p in points]
        err = [[c[0] - c[1] for c in ci], [c[2] - c[0] for c in ci]]
        ax.errorbar([p[0] for p in points], [c[0] for c in ci], yerr=err, marker="o", capsize=3, label="DATE")
        if "fixed" in summary and metric in summary["fixed"]["metrics"]:
            ax.axhline(summary["fixed"]["metrics"][metric][0], ls="--", color="gray", label="fixed")
        ax.set_xscale("log")
        ax.set_xlabel("rho")
        ax.set_ylabel({"exact": "exact accuracy", "clip_eval": "held-out CLIP score"}[metric])
        _legend(ax)
    return _save(fig, out / PLOT_FILES[2])


def _open_image(p) -> Image.Image:
    """An image FID reads, as RGB (a FIFO would hang the report, a folder fail it: named first)."""
    why = not_a_file(p, PNG_LIMIT)
    if why:
        raise ValueError(f"{p} is {why}, not an image FID can read; remove it or replace it with the image")
    with Image.open(p) as img:
        return img.convert("RGB")


def _load_pngs(paths, size=None):
    for start in range(0, len(paths), 64):
        arrs = []
        for p in paths[start : start + 64]:
            img = _open_image(p)
            if size is not None and img.size != size:
                img = img.resize(size, Image.Resampling.BICUBIC)
            arrs.append(np.asarray(img))
        yield torch_uint8(np.stack(arrs))


def torch_uint8(arr):
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def reference_images(run: dict, records: list[dict], size: tuple[int, int]):
    """Real images for FID: toy suites -> the renderer's scene for each (prompt, seed); else `fid_real` files, each
    at `size` (the run's images' width and height)."""
    if world.is_toy_suite(run["suite"]):
        for start in range(0, len(records), 64):
            arrs = []
            for r in records[start : start + 64]:
                spec = scene.PromptSpec.from_json(r["spec"])
                arrs.append(scene.render(scene.place(spec, np.random.default_rng([r["seed"], r["index"]]))))
            yield torch_uint8(np.stack(arrs))
    elif run.get("fid_real"):
        paths = sorted(p for p in Path(run["fid_real"]).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        yield from _load_pngs(paths, size=size)


def compute_fid(out: Path, run: dict, methods, records: dict[str, list[dict]]) -> dict:
    """`fid_clip` (held-out CLIP features; not comparable to Inception FID) and, with weights, `fid_inception`."""
    if not world.is_toy_suite(run["suite"]) and not run.get("fid_real"):
        return {}
    if not run.get("eval_clip"):  # `--eval-clip ""`: no held-out CLIP, whose features FID-CLIP compares
        return {}
    eval_clip = reward_from_spec(run["eval_clip"], "cpu")
    features = CLIPImageFeatures(eval_clip.model)
    result = {}
    for m in methods:
        recs = records[m.label]
        if len(recs) < 2:
            continue
        paths = [out / "images" / m.slug / f"{r['index']:05d}" / "samples" / f"{r['seed']:05d}.png" for r in recs]
        size = _open_image(paths[0]).size  # the run's images' size, to which real images are resized
        fids = {"fid_clip": frechet_distance(reference_images(run, recs, size), _load_pngs(paths), features)}
        if run.get("inception_weights"):
            fids["fid_inception"] = frechet_distance(
                reference_images(run, recs, size), _load_pngs(paths), None, run["inception_weights"]
            )
        result[m.label] = fids
    return result


def write_report(out: Path) -> dict:
    """The tables and plots of the run in `out`, from the records `trusted_records` trusts (anything else in the
    run folder: `UntrustedRun`, nothing written)."""
    out = Path(out)
    trusted = read_trusted(out)
    run, methods, records = trusted.run, trusted.methods, trusted.records
    baseline = "fixed" if "fixed" in records else None
    summary = summarize(records, baseline)
    for label, fids in compute_fid(out, run, methods, records).items():
        summary[label]["fid"] = fids
    for m in methods:  # an absolute step below the embedding's precision: its images counted, as `generate` notes
        date = getattr(m, "date", None)
        if date is not None and m.label in summary:
            summary[m.label]["rounded"] = sum(rounded_away(r.get("trace"), date) is not None for r in records[m.label])
    incomplete = incomplete_note(trusted.missing)
    md, table_csv, table_json = (out / name for name in RESULT_FILES)
    atomic_write(
        table_json,
        json.dumps({"settings": run, "baseline": baseline, "incomplete": incomplete, "summary": summary}, indent=1),
    )
    atomic_write(table_csv, csv_rows(summary))
    text = markdown(summary, baseline, run, incomplete)
    atomic_write(md, text)
    drawn = plots(out, summary, records, methods)
    for stale in (out / name for name in PLOT_FILES if out / name not in drawn):  # an earlier report's plot of
        if stale.is_file() and not stale.is_symlink():  # images these records lack: never beside these tables
            stale.unlink()
    files = [md, table_csv, table_json, *drawn]
    return {"summary": summary, "markdown": text, "files": files, "incomplete": incomplete}


def incomplete_note(missing: dict) -> str | None:
    """What a run lacks (an interrupted run, seeds added to its run.json, an image deleted: `TrustedRun.missing`),
    as one sentence naming each method's first missing image and count, or None for a whole run: the report's means
    then compare other prompt sets between methods, which its tables alone do not show."""
    from date_diffusion.bench.export import describe_missing

    if not any(missing.values()):
        return None
    prompts = {index: prompt for pairs in missing.values() for index, prompt, _ in pairs}
    lacking = {label: [(index, seed) for index, _, seed in pairs] for label, pairs in missing.items()}
    return (f"{describe_missing(lacking, prompts)}; each method's means are over the images it has (the same bench "
            "command makes the missing ones)")  # fmt: skip
