"""The `date-diffusion` command line (nothing below this package imports it)."""

import time

STARTED = time.perf_counter()  # when the command's Python code began: the origin of `generate --timings`
