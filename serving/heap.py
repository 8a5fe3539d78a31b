"""The worker's heap around a model swap: free the replaced model, freeze the rest.

A worker serves for days and swaps its model whenever the champion moves; each swap must
leave the heap as the previous one did (``bench.hot_swap``: memory after 20 swaps within 5%
of memory after 2).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import time
import warnings
from collections.abc import Callable


def refreeze_heap() -> float:
    """Collect what the swap released, exempt what is left from garbage collection, and
    hand the freed memory back to the system; the pause, ms.

    Frozen, the half million long-lived objects cost no pause (up to 13 ms each, unfrozen),
    but a replaced model's cycles stayed for ever: one full collection frees them first, and
    an unclosed socket's warning is not the swap's to raise. glibc keeps freed small blocks
    in its arenas, so without a trim the resident memory kept each replaced model's share.
    """
    started = time.perf_counter()
    gc.unfreeze()
    with warnings.catch_warnings(action="ignore", category=ResourceWarning):
        gc.collect()
    gc.freeze()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    return (time.perf_counter() - started) * 1000


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None elsewhere: musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
    return trim
