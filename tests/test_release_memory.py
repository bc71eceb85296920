"""`release_freed_memory` gives freed heap memory back to the OS (glibc only)."""

import subprocess
import sys

import pytest

from date_diffusion.sampling.checkpointing import _malloc_trim

SCRIPT = r"""
import os, torch
from date_diffusion.sampling.checkpointing import release_freed_memory

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

big = torch.ones(4 * 2**20)
del big  # a freed 16 MB block raises glibc's mmap threshold: smaller blocks then use the heap
kept = [torch.ones(2**18) for _ in range(300)]  # 300 x 1 MB on the heap
last = torch.ones(2**18)  # pins the top of the heap, so free() alone cannot shrink it
del kept
before = rss_mb()
release_freed_memory(last)
print(before - rss_mb())
"""


@pytest.mark.skipif(_malloc_trim() is None, reason="needs glibc")
def test_freed_heap_memory_goes_back_to_the_os():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    assert float(out.stdout.split()[-1]) > 200  # MB returned of the 300 freed
