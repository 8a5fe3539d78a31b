"""Waiting on a state with a deadline: what tests do instead of sleeping a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    condition: Callable[[], bool], *, timeout_s: float, what: str, interval_s: float = 0.05
) -> None:
    """Return as soon as ``condition()`` holds; fail naming ``what`` after ``timeout_s``.

    Polls a state the test can observe (a metric, a file, an HTTP status), so the test
    waits exactly as long as the system takes, and a slow machine only costs time.

    Raises:
        AssertionError: The condition did not hold within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} (waited {timeout_s:g} s)"
        time.sleep(interval_s)
