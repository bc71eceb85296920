"""`date-diffusion bench-perf`: DATE vs fixed-embedding sampling, time and memory, each run in its own process."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from date_diffusion.core.config import PAPER_UPDATE_EVERY


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{platform.system()} {cpu}, {os.cpu_count()} CPUs{gpu}, torch {torch.__version__}"


class WorkerFailed(RuntimeError):
    """A measuring process that failed: the message is one line (what failed, the worker's error, the fix); the
    worker's own traceback is `traceback` (shown with `date-diffusion --debug`)."""

    def __init__(self, message: str, traceback: str = ""):
        super().__init__(message)
        self.traceback = traceback


def last_error(stderr: str, limit: int = 300) -> str:
    """The error line of a process's stderr (the last line of its traceback), on one line, at most `limit` long."""
    lines = [line for line in (stderr or "").splitlines() if line.strip()]
    start = max((i for i, line in enumerate(lines) if not line.startswith((" ", "\t", "Traceback"))), default=None)
    if start is None:
        return "no error message"
    tail = lines[start]  # the exception line; a multi-line message continues below it without indentation
    for i in range(start - 1, -1, -1):  # back to the exception's first line (after the traceback's last frame)
        if lines[i].startswith((" ", "\t", "Traceback")):
            break
        tail = lines[i] + " " + tail
    text = " ".join(tail.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


USAGE_EXIT = 2  # a measuring process's exit code for settings the model cannot take (its stderr: USAGE_MARK + why)
USAGE_MARK = "usage error: "


class SettingsRefused(ValueError):
    """Settings a measuring process found the model cannot take (e.g. more steps than its scheduler takes, checked
    once it is loaded, as `generate` checks them): a usage error, before anything is measured."""


def worker_failed(what: str, res, fix: str) -> WorkerFailed:
    return WorkerFailed(f"{what} failed (exit {res.returncode}) with {last_error(res.stderr)}; {fix}", res.stderr)


def run_one(config: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(config["threads"])}
    res = subprocess.run(
        [sys.executable, "-m", "date_diffusion.perf.worker", json.dumps(config)],
        env=env,
        capture_output=True,
        text=True,
    )
    said = [line[len(USAGE_MARK) :] for line in (res.stderr or "").splitlines() if line.startswith(USAGE_MARK)]
    if res.returncode == USAGE_EXIT and said:
        raise SettingsRefused(said[-1])
    if res.returncode != 0:
        what = f"the measuring process of variant {config['variant']}, batch {config.get('batch', 1)}"
        raise worker_failed(what, res, f"check --model {config['model']!r}, --reward, --tiny-decoder, --device and "
                            "--dtype (a smaller --batch-size if memory ran out)")  # fmt: skip
    return json.loads(res.stdout.strip().splitlines()[-1])


def _key(variant: str, batch: int, batches) -> str:
    return variant if len(batches) == 1 else f"{variant}, batch {batch}"


def summarize(runs: list[dict], variants: list[str], memory_key: str, batches=(1,)) -> dict:
    out = {}
    for b in batches:
        for v in variants:
            out[_key(v, b, batches)] = _entry(
                [r for r in runs if r["variant"] == v and r.get("batch", 1) == b], memory_key
            )
    for b in batches:
        base = out.get(_key("fixed", b, batches), {})
        for v in variants:
            entry = out[_key(v, b, batches)]
            if v == "fixed" and entry:  # the baseline itself; without a fixed variant no ratio is shown ("-")
                entry.update(time_ratio=1.0, step_time_ratio=1.0, memory_ratio=1.0)
            elif base and entry:
                entry["time_ratio"] = entry["total_s"]["median"] / base["total_s"]["median"]
                entry["memory_ratio"] = entry[memory_key]["median"] / base[memory_key]["median"]
            if "update_in_normal_steps" in entry:  # the same run's normal steps as the unit
                run = next(r for r in runs if r["variant"] == v and r.get("batch", 1) == b)
                n, k = run["steps"], len(run["update_steps"])
                entry["step_time_ratio"] = (n - k + k * entry["update_in_normal_steps"]["median"]) / n
    return out


def spread(values: list[float]) -> dict:
    """Median, min and max of measured values (every bench-perf table cell)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


FIRST_COMMAND_STEM = "first-command"  # the files `bench-perf --first-command` writes (.json, .md)


def results_stem(model: str) -> str:
    """The name (without suffix) of the files `bench_perf` writes for `model` under its `out` folder."""
    return "perf-" + model.replace("/", "_")


def write_results(out: Path, stem: str, data: dict, text: str) -> None:
    """`out/stem.json` (the data) and `out/stem.md` (its table), each written atomically."""
    from date_diffusion.outputs import atomic_write

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / f"{stem}.json", json.dumps(data, indent=1))
    atomic_write(out / f"{stem}.md", text)


def _entry(rs: list[dict], memory_key: str) -> dict:
    """Median [min, max] of each timing and memory field over the runs of one configuration."""
    entry = {}
    for key in ("total_s", "per_image_s", "normal_step_s", "update_step_s", memory_key):
        vals = [r[key] for r in rs if r.get(key) is not None]
        if vals:
            entry[key] = {**spread(vals), "n": len(vals)}
    # the update step in normal steps of the same run: free of how fast a process runs its normal steps
    steps = [r["update_step_s"] / r["normal_step_s"] for r in rs if r.get("update_step_s") and r.get("normal_step_s")]
    if steps:
        entry["update_in_normal_steps"] = spread(steps)
    parts = [r["update_parts_s"] for r in rs if "update_parts_s" in r]
    if parts:
        entry["update_parts_s"] = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
    return entry


def _partial(measured: str | None) -> str:
    """What a table of a measurement that has not run all its runs says (the files are written after each run, so
    an interrupted measurement keeps its runs, marked as such)."""
    done, _, planned = (measured or "").partition(" of ")
    return "" if done == planned else f"; INCOMPLETE: {measured} runs measured (interrupted or still running)"


def table(summary: dict, header: dict, memory_key: str) -> str:
    lines = [
        f"bench-perf: model {header['model']}, {header['steps']} steps, update every {header['update_every']} "
        f"({header['n_updates']} update step(s)), CFG 8, {header['dtype']}, device {header['device']}, "
        f"{header['threads']} thread(s), {header['repeats']} runs each (median [min, max])"
        + _partial(header.get("runs_measured")),
        f"machine: {header['machine']}",
        "",
        f"| variant | total s | s / image | normal step s | update step s | update / normal step | {memory_key} | "
        "time / fixed | time / fixed, in steps | memory / fixed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(entry, key, fmt="{:.2f}"):
        if key not in entry:
            return "-"
        e = entry[key]
        return f"{fmt.format(e['median'])} [{fmt.format(e['min'])}, {fmt.format(e['max'])}]"

    def ratio(entry, key):
        return f"{entry[key]:.3f}" if key in entry else "-"  # no fixed variant measured: no ratio to it

    for v, e in summary.items():
        lines.append(
            f"| {v} | {cell(e, 'total_s')} | {cell(e, 'per_image_s')} | {cell(e, 'normal_step_s', '{:.3f}')} | "
            f"{cell(e, 'update_step_s', '{:.3f}')} | {cell(e, 'update_in_normal_steps')} | "
            f"{cell(e, memory_key, '{:.0f}')} | "
            f"{ratio(e, 'time_ratio')} | {ratio(e, 'step_time_ratio')} | {ratio(e, 'memory_ratio')} |"
        )
    lines.append(
        "\n`time / fixed, in steps`: (normal steps + update steps x `update / normal step`) / steps, both step times "
        "from the same run; unlike the wall-clock ratio it does not depend on how fast each process runs the normal "
        "steps, which are the same work in every variant."
    )
    for v, e in summary.items():
        if "update_parts_s" in e:
            parts = ", ".join(f"{k} {s:.3f}" for k, s in e["update_parts_s"].items())
            lines.append(f"\nupdate step of {v} (s, median): {parts}")
    return "\n".join(lines) + "\n"


@dataclass
class PerfSettings:
    """What every run of a `bench-perf` invocation shares (besides the model, the variant and the batch size)."""

    steps: int = 10
    update_every: int = PAPER_UPDATE_EVERY  # with 10 steps: one update, the paper's share of update steps
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 1
    reward: str | None = None
    tiny_decoder: str | None = None


def bench_perf(
    model: str,
    out: Path | None,
    repeats: int = 3,
    variants=("fixed", "date", "date-checkpointing"),
    batches=(1,),
    settings: PerfSettings | None = None,
) -> dict:
    """Run every (variant, batch) `repeats` times, each in its own process; the files under `out` are rewritten
    after every run, so an interrupted benchmark keeps what it measured."""
    settings = settings or PerfSettings()
    runs, variants, batches = [], list(variants), list(batches)
    header = dict(
        model=model,
        reward=settings.reward,
        steps=settings.steps,
        update_every=settings.update_every,
        n_updates=len(range(0, settings.steps, settings.update_every)),
        dtype=settings.dtype,
        device=settings.device,
        threads=settings.threads,
        repeats=repeats,
        batches=batches,
        machine=machine(),
    )
    memory_key = "cuda_max_allocated_mb" if settings.device.startswith("cuda") else "peak_rss_mb"
    total = repeats * len(batches) * len(variants)
    for r in range(repeats):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]  # rotate: no variant always first
        for b in batches:
            for v in order:
                runs.append(run_one(dict(asdict(settings), model=model, variant=v, batch=b)))
                print(f"bench-perf: run {len(runs)}/{total}: {v}, batch {b}: {runs[-1]['total_s']:.2f} s, "
                      f"{runs[-1][memory_key]:.0f} MB", file=sys.stderr, flush=True)  # fmt: skip
                header["runs_measured"] = f"{len(runs)} of {total}"  # what the files hold if the rest never runs
                result = _report(runs, variants, memory_key, batches, header, out)
    return result


def _report(runs, variants, memory_key, batches, header, out) -> dict:
    summary = summarize(runs, variants, memory_key, batches)
    text = table(summary, header, memory_key)
    if out is not None:
        write_results(out, results_stem(header["model"]), {"header": header, "summary": summary, "runs": runs}, text)
    return {"header": header, "summary": summary, "runs": runs, "markdown": text}
