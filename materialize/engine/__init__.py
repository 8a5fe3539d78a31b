"""Fast Feast batch-materialization engine (``batch_engine: materialize.engine.FastEngine``).

Feast looks up ``FastEngineConfig`` next to ``FastEngine`` in this module. Importing it
imports Feast, so only Feast and command bodies import it.
"""

from materialize.engine.core import (
    ENGINE_TYPE,
    FastEngine,
    FastEngineConfig,
    MaterializationStats,
)
from materialize.engine.reader import OfflineSourceError
from materialize.engine.writers import OnlineStoreFullError, OnlineStoreUnavailableError

__all__ = [
    "ENGINE_TYPE",
    "FastEngine",
    "FastEngineConfig",
    "MaterializationStats",
    "OfflineSourceError",
    "OnlineStoreFullError",
    "OnlineStoreUnavailableError",
]
