"""Our Feast batch-materialization engine (``batch_engine: materialize.engine.FastEngine``).

Feast looks up ``FastEngineConfig`` next to ``FastEngine`` in this module. The names below
are imported on first use (PEP 562): the engine imports Feast, while the executors of the
engine's other backend (:mod:`materialize.engine.backends`) import only the encoding and
the Redis writer from this package, and importing Feast costs a Python worker about 4 s.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from materialize.engine.base import MaterializationStats
    from materialize.engine.core import ENGINE_TYPE, FastEngine, FastEngineConfig

_HOMES = {
    "ENGINE_TYPE": "materialize.engine.core",
    "FastEngine": "materialize.engine.core",
    "FastEngineConfig": "materialize.engine.core",
    "MaterializationStats": "materialize.engine.base",
}

__all__ = ["ENGINE_TYPE", "FastEngine", "FastEngineConfig", "MaterializationStats"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
