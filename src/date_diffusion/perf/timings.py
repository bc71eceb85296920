"""Where a command's time goes: named parts and moments in seconds (`generate --timings`)."""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from contextlib import contextmanager

PREFIX = "timings: "  # the line `print` writes to stderr (JSON after it), read back by `bench-perf --first-command`


class Timings:
    """`part(name)` adds the seconds of a block to that part; `mark(name)` keeps the first time it is called, in
    seconds since `started` (a `time.perf_counter()` value)."""

    def __init__(self, enabled: bool = True, started: float | None = None):
        self.enabled = enabled
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
            record = {"parts": dict(self.parts), "marks": self.marks}
            print(PREFIX + json.dumps(record), file=sys.stderr, flush=True)
