"""One offline-compute interface, two backends, chosen once from the profile.

The stages' offline work (read a window, point-in-time join, latest row per entity,
summaries and bin counts, staged reads) goes through :class:`OfflineCompute`. The ``local``
backend runs it in this process (DuckDB through Feast, pandas, numpy); the ``spark`` backend
runs it on the cluster and brings back only counts, aggregates or bounded Arrow batches.
:func:`offline_compute` picks the backend from the store's offline store type; stage code
never asks which one it got.

The interface is grouped by capability, one protocol module each
(:mod:`core.compute.retrieval`, :mod:`core.compute.statistics`,
:mod:`core.compute.sampling`), and each backend implements every capability in the module
of the same name (``core/compute/local/``, ``core/compute/spark/``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.compute.base import OfflineCompute

if TYPE_CHECKING:
    from feast import FeatureStore

    from core.compute.statistics import StatisticsCompute

__all__ = ["OfflineCompute", "frame_statistics", "offline_compute", "uses_spark"]


def uses_spark(store: FeatureStore) -> bool:
    """Whether the store's offline store is Spark (the spark profile)."""
    return getattr(store.config.offline_store, "type", None) == "spark"


def offline_compute(store: FeatureStore) -> OfflineCompute:
    """The backend for this store: ``spark`` on the spark profile, else ``local``."""
    if uses_spark(store):
        from core.compute.spark import SparkCompute

        return SparkCompute(store)
    from core.compute.local import LocalCompute

    return LocalCompute(store)


def frame_statistics() -> StatisticsCompute:
    """Aggregates and samples of rows already in this process (``FrameSample``), for any
    profile and without a store: two files compared need no backend."""
    from core.compute.local.statistics import LocalStatistics

    return LocalStatistics()
