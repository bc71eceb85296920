"""Where a command's time goes: named parts and moments in seconds (`generate --timings`)."""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from contextlib import contextmanager

from date_diffusion.core.text import quoted

PREFIX = "timings: "  # the JSON format's stderr line: PREFIX + JSON, read back by `bench-perf --first-command`
FORMATS = ("table", "json")


def output_format(value: bool | str | None) -> str | None:
    """The format `Timings` prints in: a name of `FORMATS`, or None (nothing printed). `True` is a bare `--timings`
    while the flag was a switch: the JSON line it has always printed (`bench-perf --first-command` reads it)."""
    if value is None or value is False:
        return None
    if value is True:
        return "json"
    if value not in FORMATS:
        raise ValueError(f"timings format must be one of {', '.join(FORMATS)}, got {quoted(value)}")
    return value


class Timings:
    """`part(name)` adds the seconds of a block to that part; `mark(name)` keeps the first time it is called, in
    seconds since `started` (a `time.perf_counter()` value). `print` writes them to stderr at the end of the
    command, in `output`: an aligned table (`table`), the JSON line after `PREFIX` (`json`), nothing (None, False)."""

    def __init__(self, output: bool | str | None = "table", started: float | None = None):
        self.format = output_format(output)
        self.enabled = self.format is not None
        self.started = time.perf_counter() if started is None else started
        self.parts: dict[str, float] = defaultdict(float)
        self.marks: dict[str, float] = {}

    @contextmanager
    def part(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] += time.perf_counter() - start

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, time.perf_counter() - self.started)

    def print(self) -> None:
        if self.enabled:
            self.mark("end")
            text = table(self.parts, self.marks) if self.format == "table" else self.json_line()
            print(text, file=sys.stderr, flush=True)

    def json_line(self) -> str:
        return PREFIX + json.dumps({"parts": dict(self.parts), "marks": self.marks})


def table(parts: dict[str, float], marks: dict[str, float]) -> str:
    """Parts with their seconds and share of the command's time (`marks["end"]`; the time in no part is `other`),
    then the moments."""
    total = marks["end"]
    rows = [*parts.items(), ("other", max(0.0, total - sum(parts.values()))), ("total", total)]
    width = max(len("part"), *(len(name) for name, _ in rows))
    lines = [f"timings (seconds since the command started):\n  {'part':<{width}}  seconds  share"]
    lines += [f"  {name:<{width}}  {s:7.2f}  {s / total if total > 0 else 0:5.0%}" for name, s in rows]
    lines += [f"  {name} at {s:.2f} s" for name, s in marks.items() if name != "end"]
    return "\n".join(lines)
