"""The batch-materialization engine Feast drives: ``batch_engine: materialize.engine.FastEngine``.

Feast builds the engine from the ``batch_engine:`` block of ``feature_store.yaml`` and
calls :meth:`FastEngine.materialize` from ``feast materialize``,
``feast materialize-incremental`` and ``FeatureStore.materialize*``; Feast itself then
records the materialization interval (the watermark ``materialize-incremental`` starts
from), exactly as with its local engine.

Per feature view the engine reads the latest row of each entity inside the range from the
Parquet source in hash-partitioned chunks (DuckDB, :mod:`core.compute.local.sampling`),
encodes whole chunks with numpy into the bytes Feast writes, and writes them newer-wins
(Redis: one Lua script call per batch; Redis Cluster: the same, per hash slot, pipelined
per master; SQLite: one upsert per row). The next chunk is read
in a background thread while the current one is written. Views it cannot handle
(transformations, aggregations, non-Parquet sources) go through Feast's local engine
unchanged (:class:`materialize.engine.base.FallbackEngine`).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Literal

from feast import FeatureView
from feast.infra.common.materialization_job import MaterializationTask
from feast.infra.compute_engines.local.job import LocalMaterializationJob
from feast.infra.online_stores.helpers import compute_table_id
from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType
from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
from feast.infra.registry.base_registry import BaseRegistry
from pydantic import PositiveInt, StrictStr, confloat

from core.compute.local.sampling import ParquetLatestReader, parquet_path
from core.compute.sampling import CREATED_COLUMN, EVENT_COLUMN
from core.feast_adapter.engine import AdapterComputeEngine
from core.feast_adapter.layout import RedisLayout
from core.feast_adapter.selfcheck import EncodedRow, SelfCheck, check_writer
from core.feast_adapter.store import redis_client, sqlite_db_path
from materialize.engine.base import (
    FallbackEngine,
    MaterializationStats,
    RedisWriteOptions,
    redis_label,
    source_columns,
    unsupported_view_reason,
)
from materialize.engine.cluster import ClusterRedisWriter
from materialize.engine.encoding import encode_chunk
from materialize.engine.progress import Progress, make_progress
from materialize.engine.writers import FeastWriter, OnlineWriter, RedisWriter, SqliteWriter

logger = logging.getLogger(__name__)

ENGINE_TYPE = "materialize.engine.FastEngine"


class FastEngineConfig(RedisWriteOptions):
    """The ``batch_engine:`` block of ``feature_store.yaml`` for :class:`FastEngine`."""

    type: Literal["materialize.engine.FastEngine"] = "materialize.engine.FastEngine"
    """Engine selector (the class path)."""

    backend: StrictStr | None = None
    """DataFrame backend of Feast's local engine, for the views it handles."""

    chunk_rows: PositiveInt = 250_000
    """Entities read and encoded per chunk: bounds memory, whatever the range."""

    read_threads: PositiveInt | None = 1
    """DuckDB threads reading the next chunk. Reading overlaps with writing, and one thread
    keeps up while leaving the other cores to Redis and the writer (on 2 cores one thread
    gave 1.3-1.7x the rows/s of two); None: one per core."""

    chunk_pause_seconds: confloat(ge=0) = 0.0  # type: ignore[valid-type]
    """Pause after each chunk, to throttle the load on a shared online store."""

    key_ttl_seconds: PositiveInt | None = None
    """SQLite online store only (Redis takes ``key_ttl_seconds`` in its ``online_store``
    block, which Feast's SQLite config refuses): after materializing [start, end], delete
    the view's rows whose event time is before both ``end - key_ttl_seconds`` and
    ``start``, i.e. users with no value newer than the TTL that this run did not write."""


def _unsupported_reason(view: Any) -> str | None:
    """Why the fast path cannot materialize ``view`` (None when it can)."""
    reason = unsupported_view_reason(view)
    if reason is None and parquet_path(view.batch_source) is None:
        return "its batch source is not a local Parquet FileSource"
    return reason


def encode_rows(
    table: Any, view: FeatureView, *, layout: RedisLayout, project: str, versioning: bool
) -> list[EncodedRow]:
    """Rows of ``table`` as the fast writers put them in Redis (key and fields per entity).

    The same encoder and layout as :meth:`FastEngine._materialize_fast`; the self-check
    compares its output with Feast's.
    """
    join_keys = {column.name: column.dtype.to_value_type() for column in view.entity_columns}
    features = {
        feature.name: feature.dtype.to_value_type()
        for feature in view.features
        if feature.name in table.column_names
    }
    chunk = encode_chunk(table, join_keys=join_keys, features=features, event_column=EVENT_COLUMN)
    view_name = layout.view_name(view, versioning=versioning)
    suffix = layout.key_suffix(project)
    stamps = chunk.timestamps.to_list()
    values = {name: cells.to_list() for name, cells in chunk.values.items()}
    return [
        EncodedRow(
            key=key + suffix,
            fields={
                layout.timestamp_field(view_name): stamps[row],
                **{layout.feature_field(view_name, name): values[name][row] for name in values},
            },
        )
        for row, key in enumerate(chunk.keys.to_list())
    ]


class FastEngine(FallbackEngine[LocalMaterializationJob], AdapterComputeEngine):
    """Chunked, vectorised, newer-wins materialization into Redis or SQLite.

    Args:
        repo_config: The repo's configuration (from Feast).
        offline_store: The offline store (from Feast; used for the views Feast's local
            engine handles).
        online_store: The online store (from Feast).
        progress: Where progress goes (a bar on a terminal, log lines otherwise).
        layout: Feast's online layout as the writers produce it (a test passes a wrong one
            to see the self-check hand the views to Feast's engine).
        **options: The ``batch_engine:`` block of the yaml, see :class:`FastEngineConfig`.

    Raises:
        pydantic.ValidationError: An unknown or invalid option (Feast itself would pass a
            misspelt one through silently).
    """

    fallback_engine: ClassVar[str] = "feast-local"
    fallback_label: ClassVar[str] = "Feast's local engine"
    job_class = LocalMaterializationJob

    def __init__(
        self,
        *,
        repo_config: Any,
        offline_store: Any,
        online_store: Any,
        progress: Progress | None = None,
        layout: RedisLayout | None = None,
        **options: Any,
    ) -> None:
        self.config = FastEngineConfig(**options)
        super().__init__(
            repo_config=repo_config,
            offline_store=offline_store,
            online_store=online_store,
            backend=self.config.backend,
        )
        self._progress = progress
        self._layout = layout or RedisLayout()
        self._checks: dict[str, SelfCheck] = {}
        self.results: list[MaterializationStats] = []

    def self_check(self, view: FeatureView) -> SelfCheck:
        """Compare our bytes for a sample of ``view`` with Feast's (once per view schema)."""
        schema = repr(
            [(field.name, field.dtype) for field in [*view.entity_columns, *view.features]]
        )
        key = f"{view.name}:{schema}"
        if key not in self._checks:
            config = self.repo_config
            self._checks[key] = check_writer(
                view,
                project=config.project,
                key_version=int(config.entity_key_serialization_version),
                versioning=bool(config.registry.enable_online_feature_view_versioning),
                layout=self._layout,
                encode=lambda table: encode_rows(
                    table,
                    view,
                    layout=self._layout,
                    project=config.project,
                    versioning=bool(config.registry.enable_online_feature_view_versioning),
                ),
                event_column=EVENT_COLUMN,
                created_column=CREATED_COLUMN,
            )
        return self._checks[key]

    def materialize_view(
        self, registry: BaseRegistry, task: MaterializationTask, **kwargs: Any
    ) -> LocalMaterializationJob:
        """Materialize one view: the fast path, or Feast's local engine when it cannot."""
        reason, checked = self._fallback_reason(task.feature_view)
        return self.run_view(
            task,
            reason=reason,
            with_feast=lambda: self.materialize_with_feast(registry, task, **kwargs),
            ours=lambda: self._materialize_fast(registry, task),
            warn=not checked,
        )

    def _fallback_reason(self, view: Any) -> tuple[str | None, bool]:
        """Why the fast path cannot take ``view`` (None: it can), and whether the encoding
        self-check is why (already logged, as an error)."""
        reason = _unsupported_reason(view)
        if reason is None and self.repo_config.entity_key_serialization_version != 3:
            # Our encoder writes version 3 keys; any other version reads back nothing.
            reason = "entity_key_serialization_version is not 3"
        if reason is not None:
            return reason, False
        check = self.self_check(view)
        if check.ok:
            return None, False
        # Loud: the fast path would write bytes Feast cannot read back.
        logger.error(
            "%s: our online encoding differs from Feast's (%s); Feast's local engine "
            "materializes it instead. Check the Feast version against core/feast_adapter.",
            view.name,
            check.describe(),
        )
        return f"encoding self-check failed: {check.describe()}", True

    def _writer(self, view: FeatureView) -> OnlineWriter:
        config = self.repo_config
        store_config = config.online_store
        versioning = bool(config.registry.enable_online_feature_view_versioning)
        if isinstance(store_config, RedisOnlineStoreConfig):
            # One Redis or a sentinel's master: one script call per batch. On a cluster,
            # the same script per hash slot, pipelined per master.
            writer_class = (
                ClusterRedisWriter
                if store_config.redis_type == RedisType.redis_cluster
                else RedisWriter
            )
            return writer_class(
                # Feast's own client, so nodes, db, password and TLS are the profile's.
                redis_client(self.online_store, store_config),
                project=config.project,
                view_name=self._layout.view_name(view, versioning=versioning),
                feature_names=[feature.name for feature in view.features],
                ttl_seconds=store_config.key_ttl_seconds,
                batch_rows=self.config.write_batch_rows,
                pipeline_batches=self.config.pipeline_batches,
                label=redis_label(store_config.connection_string),
                layout=self._layout,
            )
        if (
            isinstance(store_config, SqliteOnlineStoreConfig)
            and not store_config.vector_enabled
            and not getattr(store_config, "enable_openai_compatible_store", False)
        ):
            return SqliteWriter(
                sqlite_db_path(config),
                compute_table_id(config.project, view, versioning),
                ttl_seconds=self.config.key_ttl_seconds,
            )
        source = view.batch_source
        assert source is not None  # checked by _unsupported_reason
        # The column names Feast's own conversion looks up.
        return FeastWriter(
            self.online_store,
            config,
            view,
            source_timestamp=source.timestamp_field,
            source_created=source.created_timestamp_column or None,
        )

    def _materialize_fast(
        self, registry: BaseRegistry, task: MaterializationTask
    ) -> MaterializationStats:
        started = time.monotonic()
        view = task.feature_view
        assert isinstance(view, FeatureView)  # checked by _fallback_reason
        columns = source_columns(view, registry, task.project)
        path = parquet_path(view.batch_source)
        assert path is not None  # checked by _unsupported_reason
        writer = self._writer(view)
        reader = ParquetLatestReader(
            path,
            columns,
            start=task.start_time,
            end=task.end_time,
            chunk_rows=self.config.chunk_rows,
            threads=self.config.read_threads,
        )
        join_keys = {column.name: column.dtype.to_value_type() for column in view.entity_columns}
        features = {feature.name: feature.dtype.to_value_type() for feature in view.features}
        progress = self._progress or make_progress()
        written = read = 0
        try:
            writer.check()
            plan = reader.plan()
            progress.start(view.name, plan)
            # Read chunk i + 1 (DuckDB, off the GIL) while chunk i is encoded and written.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="materialize-read") as pool:
                upcoming = pool.submit(reader.read_chunk, 0, plan.chunks)
                for index in range(plan.chunks):
                    table = upcoming.result()
                    if index + 1 < plan.chunks:
                        upcoming = pool.submit(reader.read_chunk, index + 1, plan.chunks)
                    chunk = encode_chunk(
                        table, join_keys=join_keys, features=features, event_column=EVENT_COLUMN
                    )
                    written += writer.write(chunk)
                    read += chunk.rows
                    progress.advance(chunk.rows)
                    if self.config.chunk_pause_seconds:
                        time.sleep(self.config.chunk_pause_seconds)
            progress.finish(written, read - written)
            expired = writer.expire(start=task.start_time, end=task.end_time)
        finally:
            writer.close()
            reader.close()
        return MaterializationStats(
            view=view.name,
            start=task.start_time,
            end=task.end_time,
            engine="fast",
            # Counted as read: the table may have been replaced since the plan was made.
            entities=read,
            rows_in_range=plan.rows,
            rejected_rows=plan.rejected_rows,
            written=written,
            expired=expired,
            chunks=plan.chunks,
            seconds=time.monotonic() - started,
        )
