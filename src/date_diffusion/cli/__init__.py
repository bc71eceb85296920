"""The `date-diffusion` command line (nothing below this package imports it).

The commands import torch, diffusers and the library's heavy modules inside the functions that run them: every
parser is built at start-up, so `--help`, `info` and usage errors answer without importing PyTorch, and a command
pays only for what it runs (importing PyTorch and diffusers is most of the first command's seconds, docs/speed.md).
"""

import time

STARTED = time.perf_counter()  # when the command's Python code began: the origin of `generate --timings`
