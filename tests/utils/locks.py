"""The champion lock's behaviour, checked the same way on every kind of store."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from core.locks import LockTimeout, store_lock


def assert_serializes(uri: str, fallback: Path) -> None:
    """Two holders of the store's champion lock take turns; a third times out meanwhile."""
    events: list[str] = []
    held = threading.Event()

    def holder() -> None:
        with store_lock(uri, "champion:m", fallback_dir=fallback):
            events.append("first in")
            held.set()
            time.sleep(0.5)
            events.append("first out")

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10)
    with (
        pytest.raises(LockTimeout),
        store_lock(uri, "champion:m", fallback_dir=fallback, timeout=0.1),
    ):
        pass
    with store_lock(uri, "champion:m", fallback_dir=fallback):
        events.append("second in")
    thread.join()
    assert events == ["first in", "first out", "second in"]
