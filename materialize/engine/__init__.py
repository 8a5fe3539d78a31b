"""Fast Feast batch-materialization engine (``batch_engine: materialize.engine.FastEngine``).

Feast looks up ``FastEngineConfig`` next to ``FastEngine`` in this module. The names below
are imported on first use (PEP 562): the engine imports Feast, while Spark executors import
only the encoding and the Redis writer from this package (``spark_tasks``), and importing
Feast costs a Python worker about 4 s.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from materialize.engine.core import (
        ENGINE_TYPE,
        FastEngine,
        FastEngineConfig,
        MaterializationStats,
    )
    from materialize.engine.reader import OfflineSourceError
    from materialize.engine.writers import OnlineStoreFullError, OnlineStoreUnavailableError

_HOMES = {
    "ENGINE_TYPE": "materialize.engine.core",
    "FastEngine": "materialize.engine.core",
    "FastEngineConfig": "materialize.engine.core",
    "MaterializationStats": "materialize.engine.core",
    "OfflineSourceError": "materialize.engine.reader",
    "OnlineStoreFullError": "materialize.engine.writers",
    "OnlineStoreUnavailableError": "materialize.engine.writers",
}

__all__ = [
    "ENGINE_TYPE",
    "FastEngine",
    "FastEngineConfig",
    "MaterializationStats",
    "OfflineSourceError",
    "OnlineStoreFullError",
    "OnlineStoreUnavailableError",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
