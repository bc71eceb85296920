"""`date-diffusion bench-perf --first-command`: the README's main command in fresh processes, timed from the outside
(wall clock, launch to exit) and from the inside (`generate --timings`: imports, loading, first step, ...)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from date_diffusion.perf.bench_perf import FIRST_COMMAND_STEM, machine, spread, worker_failed, write_results

COMMAND = ("generate", "a red circle to the left of a blue square", "--compare")


def _one(threads: int) -> dict:
    from date_diffusion.perf.timings import PREFIX

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "date_diffusion", *COMMAND, "--out", tmp, "--timings", "json"]
        start = time.perf_counter()
        res = subprocess.run(argv, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if res.returncode != 0:
        raise worker_failed("the first command (date-diffusion generate, toy world)", res,
                            "run `date-diffusion generate --compare` to see it fail")  # fmt: skip
    line = next(x for x in res.stderr.splitlines() if x.startswith(PREFIX))
    inside = json.loads(line[len(PREFIX) :])
    end = inside["marks"]["end"]
    row = {"wall_s": wall, "before_the_command_s": wall - end, "to_first_step_s": None}
    row.update({f"{k}_s": v for k, v in inside["parts"].items()})
    if "first sampling step done" in inside["marks"]:
        row["to_first_step_s"] = wall - end + inside["marks"]["first sampling step done"]
    row["other_s"] = end - sum(inside["parts"].values())
    return row


def first_command(repeats: int = 5, threads: int = 1, out: Path | None = None) -> dict:
    runs = [_one(threads) for _ in range(repeats)]
    summary = {k: spread(v) for k in runs[0] if (v := [r[k] for r in runs if r[k] is not None])}
    header = {"command": "date-diffusion " + " ".join(f'"{a}"' if " " in a else a for a in COMMAND)}
    header.update(threads=threads, repeats=repeats, machine=machine())
    text = _table(summary, header)
    if out is not None:
        write_results(out, FIRST_COMMAND_STEM, {"header": header, "summary": summary, "runs": runs}, text)
    return {"header": header, "summary": summary, "runs": runs, "markdown": text}


def _table(summary: dict, header: dict) -> str:
    lines = [
        f"first command: `{header['command']}`, {header['threads']} thread(s), {header['repeats']} runs in fresh "
        "processes (median [min, max], seconds)",
        f"machine: {header['machine']}",
        "",
        "| part | seconds |",
        "|---|---|",
    ]
    names = {"wall_s": "**wall, launch to exit**", "to_first_step_s": "launch to the first sampling step done",
             "before_the_command_s": "interpreter start and exit (outside the command's code)"}  # fmt: skip
    for key, e in summary.items():
        name = names.get(key, key.removesuffix("_s"))
        lines.append(f"| {name} | {e['median']:.2f} [{e['min']:.2f}, {e['max']:.2f}] |")
    return "\n".join(lines) + "\n"
