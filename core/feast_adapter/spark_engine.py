"""The per-view hook of Feast's Spark compute engine, as public methods.

The Spark counterpart of :class:`core.feast_adapter.engine.AdapterComputeEngine`, in its
own module because importing it imports pyspark (only the spark profile needs it).
"""

from __future__ import annotations

from typing import Any

from feast.infra.common.materialization_job import MaterializationJob, MaterializationTask
from feast.infra.compute_engines.spark.compute import SparkComputeEngine
from feast.infra.registry.base_registry import BaseRegistry


class AdapterSparkComputeEngine(SparkComputeEngine):
    """Feast's ``spark.engine``, with the per-view step exposed as public methods."""

    def _materialize_one(
        self,
        registry: BaseRegistry,
        task: MaterializationTask,
        from_offline_store: bool = False,
        **kwargs: Any,
    ) -> MaterializationJob:
        return self.materialize_view(
            registry, task, from_offline_store=from_offline_store, **kwargs
        )

    def materialize_view(
        self,
        registry: BaseRegistry,
        task: MaterializationTask,
        *,
        from_offline_store: bool = False,
        **kwargs: Any,
    ) -> MaterializationJob:
        """Materialize one view over the task's range (default: Feast's own way)."""
        return self.materialize_with_feast(
            registry, task, from_offline_store=from_offline_store, **kwargs
        )

    def materialize_with_feast(
        self,
        registry: BaseRegistry,
        task: MaterializationTask,
        *,
        from_offline_store: bool = False,
        **kwargs: Any,
    ) -> MaterializationJob:
        """Feast's ``spark.engine`` materializes the view."""
        return super()._materialize_one(registry, task, from_offline_store, **kwargs)
