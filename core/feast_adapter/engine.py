"""The hooks of Feast's compute engine and the conversions a custom engine needs.

:class:`AdapterComputeEngine` is Feast's local engine with its private per-view hook
(``_materialize_one``) turned into two public methods: :meth:`materialize_view`, which a
subclass overrides, and :meth:`materialize_with_feast`, Feast's own materialization of a
view. Importing this module imports Feast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from feast.infra.common.materialization_job import MaterializationTask
from feast.infra.compute_engines.local.compute import LocalComputeEngine
from feast.infra.compute_engines.local.job import LocalMaterializationJob
from feast.infra.registry.base_registry import BaseRegistry


class AdapterComputeEngine(LocalComputeEngine):
    """Feast's local engine, with the per-view step exposed as public methods."""

    def _materialize_one(
        self, registry: BaseRegistry, task: MaterializationTask, **kwargs: Any
    ) -> LocalMaterializationJob:
        return self.materialize_view(registry, task, **kwargs)

    def materialize_view(
        self, registry: BaseRegistry, task: MaterializationTask, **kwargs: Any
    ) -> LocalMaterializationJob:
        """Materialize one view over the task's range (default: Feast's own way)."""
        return self.materialize_with_feast(registry, task, **kwargs)

    def materialize_with_feast(
        self, registry: BaseRegistry, task: MaterializationTask, **kwargs: Any
    ) -> LocalMaterializationJob:
        """Feast's local engine materializes the view."""
        job: LocalMaterializationJob = super()._materialize_one(registry, task, **kwargs)
        return job


@dataclass(frozen=True)
class SourceColumnNames:
    """A view's batch-source columns, as Feast's materialization names them."""

    join_keys: list[str]  # source columns of the join keys (Feast's order)
    features: list[str]  # source columns of the features (the view's order)
    timestamp: str
    created: str | None


def source_column_names(view: Any, entities: list[Any]) -> SourceColumnNames:
    """Feast's mapping of a view's fields to its source columns (field mapping applied)."""
    from feast.utils import _get_column_names

    join_keys, features, timestamp, created = _get_column_names(view, entities)
    return SourceColumnNames(
        join_keys=list(join_keys),
        features=list(features),
        timestamp=timestamp,
        created=created or None,
    )


def arrow_to_feast_rows(batch: pa.RecordBatch | pa.Table, view: Any) -> list[Any]:
    """Feast's conversion of source rows to (entity key, values, event time, created) protos.

    The batch's columns carry the view's names for join keys and features, and the batch
    source's names for the timestamps.
    """
    from feast.utils import _convert_arrow_to_proto

    join_keys = {column.name: column.dtype.to_value_type() for column in view.entity_columns}
    rows: list[Any] = _convert_arrow_to_proto(batch, view, join_keys)
    return rows
