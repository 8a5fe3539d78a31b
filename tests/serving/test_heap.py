"""A swap gives the replaced model's memory back to the system (serving/heap.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

# In a child process: the suite's own heap would blur the figure. 400 MB of blocks from
# malloc (over pymalloc's size), freed, with a few survivors pinning the heap's top so
# glibc cannot shrink it on its own.
_PROBE = """
import gc
from serving import heap
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
blocks = [bytes(2000) for _ in range(200_000)]
pins = blocks[::1000]
del blocks
gc.collect()
before = rss_mb()
heap.refreeze_heap()
print(before, rss_mb())
"""


def test_the_heap_refreeze_returns_freed_memory_to_the_system() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    before, after = (float(value) for value in completed.stdout.split())
    assert before > 300, f"the probe did not hold its blocks: {before:.0f} MB"
    assert after < before - 250, f"RSS {before:.0f} MB -> {after:.0f} MB: freed memory kept"
