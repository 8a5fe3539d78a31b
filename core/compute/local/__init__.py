"""The local backend: DuckDB through Feast, pandas and numpy, in this process."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.compute.local.retrieval import LocalRetrieval
from core.compute.local.sampling import LocalSampling
from core.compute.local.statistics import LocalStatistics

if TYPE_CHECKING:
    from feast import FeatureStore


class LocalCompute(LocalRetrieval, LocalStatistics, LocalSampling):
    """:class:`core.compute.OfflineCompute` in this process."""

    name = "local"

    def __init__(self, store: FeatureStore):
        self.store = store
