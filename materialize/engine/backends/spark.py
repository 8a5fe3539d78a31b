"""The engine's spark backend: ``batch_engine: materialize.engine.backends.spark.SparkEngine``.

The same encoding (:mod:`materialize.engine.encoding`) and newer-wins Redis writer
(:mod:`materialize.engine.writers`, one Lua script call per batch) as :class:`FastEngine`,
run inside Spark tasks:

1. the driver builds a lazy plan: the view's rows inside ``[start, end]``, hash-partitioned
   by the join keys and sorted by them inside each partition, so an entity's rows arrive
   together;
2. ``mapInArrow`` hands every task its partition as Arrow batches of ``arrow_batch_rows``
   rows; the executor drops the rows without a join key (counting them), picks each
   entity's latest row (latest event time, then latest created time, missing created
   times last -- Feast's rule), encodes it with numpy and writes it to Redis itself, in a
   writer thread while it reads the next batch;
3. each task returns one small row (entities, written, rows, rejected); the driver
   collects those rows (one per task) and sums them. One pass over the source.

The latest row is picked by the executors' Python rather than by a Spark window: with the
sort alone Spark does less work per row (the window cost about 1.5 s of the 15 s at 1M
users on the local cluster), and the Redis writes overlap the reading.

The driver never collects the table, and a Python worker holds about one Arrow batch at a
time (an entity that goes on into the next batch waits as its latest row only), so executor
memory follows ``arrow_batch_rows`` (and Spark's own spilling sort), not the size of the
table. A failed task is retried by Spark; the newer-wins script makes a repeated write a
no-op.

Views this engine cannot take (transformations, aggregations, sources other than a
``SparkSource`` or a Parquet ``FileSource``, online stores other than single-node Redis)
go through Feast's own ``spark.engine`` unchanged
(:class:`materialize.engine.base.FallbackEngine`).

The Spark session: the active one, else one built from the offline store's ``spark_conf``
(Spark profile) with this block's ``spark_conf`` laid over it. Executors import
:mod:`materialize.engine.backends.spark_tasks`, and the profile starts their Python daemon
from ``core.spark_daemon``: they need the project installed (``pip install churn-platform``;
files shipped with ``spark.submit.pyFiles`` arrive only after the daemon starts) and run
the interpreter ``PYSPARK_PYTHON`` names.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

import redis
from feast import FeatureView, FileSource
from feast.data_format import ParquetFormat
from feast.infra.common.materialization_job import MaterializationJob, MaterializationTask
from feast.infra.compute_engines.spark.job import SparkMaterializationJob
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType
from feast.infra.registry.base_registry import BaseRegistry
from pydantic import PositiveInt, StrictStr
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.compute.sampling import CREATED_COLUMN, EVENT_COLUMN, SourceColumns
from core.errors import OnlineStoreUnavailable
from core.feast_adapter.layout import RedisLayout
from core.feast_adapter.spark_engine import AdapterSparkComputeEngine
from core.feast_adapter.store import redis_client_arguments
from core.feast_store import prepare_spark_driver
from materialize.engine.backends.spark_tasks import (
    COUNTS_DDL,
    COUNTS_SCHEMA,
    HashedFields,
    PartitionWriter,
)
from materialize.engine.base import (
    FallbackEngine,
    MaterializationStats,
    RedisWriteOptions,
    redis_label,
    source_columns,
    unsupported_view_reason,
)

logger = logging.getLogger(__name__)

SPARK_ENGINE_TYPE = "materialize.engine.backends.spark.SparkEngine"


class SparkEngineConfig(RedisWriteOptions):
    """The ``batch_engine:`` block of ``feature_store.yaml`` for :class:`SparkEngine`."""

    type: Literal["materialize.engine.backends.spark.SparkEngine"] = (
        "materialize.engine.backends.spark.SparkEngine"
    )
    """Engine selector (the class path)."""

    spark_conf: dict[str, str] | None = None
    """Spark settings laid over the offline store's ``spark_conf`` when this engine starts
    the session (e.g. ``spark.master`` for a profile whose offline store is not Spark)."""

    partitions: PositiveInt | None = None
    """Partitions (tasks) of the write step; None: Spark's shuffle partitions. More
    partitions: smaller tasks (and smaller sorts)."""

    arrow_batch_rows: PositiveInt = 50_000
    """Rows per Arrow batch an executor reads from Spark: bounds its Python memory."""

    staging_location: StrictStr | None = None
    """Read by Feast's ``spark.engine`` for the views it materializes (the fallback)."""

    region: StrictStr | None = None
    """Read by Feast's ``spark.engine`` (S3 staging region), for the fallback."""


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def spark_source_frame(spark: SparkSession, source: Any) -> DataFrame | None:
    """The batch source as a Spark DataFrame; None for a source this engine does not read.

    A ``SparkSource`` (table, query or path) is read as Feast's Spark offline store reads
    it; a ``FileSource`` only when it holds Parquet (any path Spark can open).
    """
    if isinstance(source, SparkSource):
        return spark.sql(f"SELECT * FROM {source.get_table_query_string()}")
    if isinstance(source, FileSource) and (
        isinstance(source.file_format, ParquetFormat)
        or (source.file_format is None and source.path.endswith(".parquet"))
    ):
        return spark.read.parquet(source.path)
    return None


def _time_column(frame: DataFrame, name: str) -> Column:
    """A source time column as a Spark timestamp (an instant).

    Parquet ``TIMESTAMP(NANOS)`` (pandas' default) is unreadable by Spark unless
    ``spark.sql.legacy.parquet.nanosAsLong`` is on, which turns it into nanoseconds as a
    long: those are floored to microseconds, as Feast truncates to a Python datetime.
    """
    column = F.col(_quoted(name))
    kind = frame.schema[name].dataType
    if isinstance(kind, T.TimestampType):
        return column
    if isinstance(kind, T.LongType):
        return F.timestamp_micros((column - F.pmod(column, F.lit(1000))) / F.lit(1000))
    # TIMESTAMP_NTZ (naive, UTC by convention), strings, dates: in the session time zone,
    # which the engine sets to UTC when it starts the session.
    return column.cast("timestamp")


def entity_rows_frame(
    frame: DataFrame,
    columns: SourceColumns,
    *,
    start: Any,
    end: Any,
    partitions: int | None,
) -> DataFrame:
    """Lazily, the rows of ``[start, end]``, each entity's rows in one partition, together.

    Hash-partitioned by the join keys and sorted by them inside each partition (Spark's
    sort spills to disk, so a partition need not fit in memory); the executors pick each
    entity's latest row as the rows stream by (:class:`PartitionWriter`). Rows without a
    join key stay in: the executors count them. Named as the view names them, with the
    times in ``EVENT_COLUMN`` and ``CREATED_COLUMN``.
    """
    missing = [
        name
        for name in [*columns.join_keys, *columns.features, columns.timestamp]
        + ([columns.created] if columns.created else [])
        if name not in frame.columns
    ]
    if missing:
        raise ValueError(f"the offline source has no column(s) {', '.join(missing)}")
    event = _time_column(frame, columns.timestamp)
    created = (
        _time_column(frame, columns.created) if columns.created else F.lit(None).cast("timestamp")
    )
    selected = [
        *(F.col(_quoted(source)).alias(name) for source, name in columns.join_keys.items()),
        *(F.col(_quoted(source)).alias(name) for source, name in columns.features.items()),
        event.alias(EVENT_COLUMN),
        created.alias(CREATED_COLUMN),
    ]
    rows = frame.select(*selected).where(F.col(EVENT_COLUMN).between(F.lit(start), F.lit(end)))
    keys = [F.col(_quoted(name)) for name in columns.join_keys.values()]
    rows = rows.repartition(partitions, *keys) if partitions else rows.repartition(*keys)
    return rows.sortWithinPartitions(*keys)


_ARROW_RECORDS = "spark.sql.execution.arrow.maxRecordsPerBatch"
_ARROW_BYTES = "spark.sql.execution.arrow.maxBytesPerBatch"
# Spark skips its per-row batch-size accounting when the byte cap is exactly Int.MaxValue.
_NO_BYTE_CAP = str(2**31 - 1)
_BYTE_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}
_BYTE_STRING = re.compile(r"\s*(\d+)\s*([kmgtp]?)b?\s*", re.IGNORECASE)


def parse_byte_string(text: str | None) -> int | None:
    """Bytes in a Spark size setting (``67108864b``, ``64m``, ``1g``); None if unreadable."""
    found = _BYTE_STRING.fullmatch(text or "")
    if found is None:
        return None
    return int(found.group(1)) * _BYTE_UNITS[found.group(2).lower()]


def _fixed_row_bytes(schema: T.StructType) -> int | None:
    """Arrow bytes of one row when every column is fixed-width (with its validity bit)."""
    widths: list[tuple[type, int]] = [
        (T.BooleanType, 1),
        (T.ByteType, 1),
        (T.ShortType, 2),
        (T.IntegerType, 4),
        (T.LongType, 8),
        (T.FloatType, 4),
        (T.DoubleType, 8),
        (T.DecimalType, 16),  # Arrow decimal128
        (T.DateType, 4),
        (T.TimestampType, 8),
        (T.TimestampNTZType, 8),
        (T.NullType, 0),
    ]
    total = 0
    for column in schema.fields:
        width = next((size for kind, size in widths if isinstance(column.dataType, kind)), None)
        if width is None:
            return None  # strings, lists, maps...: their size is not bounded by the row count
        total += width + 1
    return total


def arrow_batch_settings(
    schema: T.StructType, *, batch_rows: int, byte_cap: int | None
) -> dict[str, str]:
    """Session settings that hand rows of ``schema`` to Python in batches of ``batch_rows``.

    Spark also caps a batch's bytes (``maxBytesPerBatch``, 64 MB by default) and, to do so,
    measures the batch after every row it adds: about 9% of the write step's task CPU at
    1M users here (a Java profiler). When every column is fixed-width and ``batch_rows``
    such rows fit in the cap, the row count alone keeps a batch under it, so the cap is
    lifted for this query; otherwise (strings, lists, very wide rows) it stays.

    Args:
        schema: The rows' Spark schema.
        batch_rows: Rows per Arrow batch.
        byte_cap: The session's ``maxBytesPerBatch`` in bytes; None (unknown) keeps it.

    Returns:
        The settings to apply while the query runs (see :func:`session_settings`).
    """
    settings = {_ARROW_RECORDS: str(batch_rows)}
    row_bytes = _fixed_row_bytes(schema)
    if row_bytes is not None and byte_cap is not None and batch_rows * row_bytes <= byte_cap:
        settings[_ARROW_BYTES] = _NO_BYTE_CAP
    return settings


@contextmanager
def session_settings(spark: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    """Apply runtime SQL settings to the session for a block, then put back what was there.

    Args:
        spark: The session (classic or Spark Connect).
        settings: Setting name to value.

    Yields:
        Nothing; the settings hold inside the block.
    """
    previous = {name: spark.conf.get(name, None) for name in settings}
    try:
        for name, value in settings.items():
            spark.conf.set(name, value)
        yield
    finally:
        for name, earlier in previous.items():
            if earlier is None:
                spark.conf.unset(name)
            else:
                spark.conf.set(name, earlier)


def running_session_warning(
    active: SparkSession, *, started: SparkSession | None, settings: Mapping[str, str]
) -> str | None:
    """What to say when the engine materializes in a session that was already running.

    Launch settings (the application's name, JVM options) cannot change on a running
    session, so a ``spark_conf`` the session lacks would look applied without a word.

    Args:
        active: The running session.
        started: The session this engine started, if any (a second view or run reuses it;
            on Spark Connect its conf may not echo launch settings, which the server owns).
        settings: The engine's ``spark_conf``.

    Returns:
        A warning naming the settings the session lacks or holds at other values, or None.
    """
    if active is started:
        return None
    lacking = sorted(
        name for name, value in settings.items() if active.conf.get(name, None) != value
    )
    if not lacking:
        return None
    return (
        f"materializing in this process's running Spark session "
        f"({active.conf.get('spark.app.name', 'unnamed')}), which lacks the batch_engine "
        f"spark_conf's {', '.join(lacking)}: that spark_conf applies only to a session the "
        "engine starts"
    )


class SparkEngine(FallbackEngine[MaterializationJob], AdapterSparkComputeEngine):
    """Our vectorised, newer-wins Redis materialization, run by Spark executors.

    Args:
        repo_config: The repo's configuration (from Feast).
        offline_store: The offline store (from Feast).
        online_store: The online store (from Feast).
        **options: The ``batch_engine:`` block of the yaml, see :class:`SparkEngineConfig`.

    Raises:
        pydantic.ValidationError: An unknown or invalid option.
    """

    fallback_engine: ClassVar[str] = "feast-spark"
    fallback_label: ClassVar[str] = "Feast's spark.engine"
    job_class = SparkMaterializationJob

    def __init__(
        self, *, repo_config: Any, offline_store: Any, online_store: Any, **options: Any
    ) -> None:
        self.config = SparkEngineConfig(**options)
        super().__init__(
            repo_config=repo_config, offline_store=offline_store, online_store=online_store
        )
        self.results: list[MaterializationStats] = []
        self._started: SparkSession | None = None  # the session this engine started

    def spark_session(self) -> SparkSession:
        """The active Spark session, else one from the profile's ``spark_conf``."""
        active = SparkSession.getActiveSession()
        if active is not None:
            warning = running_session_warning(
                active, started=self._started, settings=self.config.spark_conf or {}
            )
            if warning:
                logger.warning(warning)
            return active
        # `feast materialize` does not open the store through core: set the driver up here.
        prepare_spark_driver()
        settings = {"spark.sql.session.timeZone": "UTC"}
        settings |= getattr(self.repo_config.offline_store, "spark_conf", None) or {}
        settings |= self.config.spark_conf or {}
        builder = SparkSession.builder
        for name, value in settings.items():
            builder = builder.config(name, value)
        self._started = builder.getOrCreate()
        return self._started

    def _unsupported_reason(self, view: Any) -> str | None:
        reason = unsupported_view_reason(view)
        if reason is not None:
            return reason
        store_config = self.repo_config.online_store
        if (
            not isinstance(store_config, RedisOnlineStoreConfig)
            or store_config.redis_type != RedisType.redis
        ):
            return "its online store is not a single Redis"
        if self.repo_config.entity_key_serialization_version != 3:
            return "entity_key_serialization_version is not 3"
        return None

    def materialize_view(
        self,
        registry: BaseRegistry,
        task: MaterializationTask,
        *,
        from_offline_store: bool = False,
        **kwargs: Any,
    ) -> MaterializationJob:
        """Materialize one view: on the executors, or by Feast's ``spark.engine`` when the
        view is not ours to take."""
        view = task.feature_view
        spark = self.spark_session()
        reason = self._unsupported_reason(view)
        frame = None
        if reason is None:
            frame = spark_source_frame(spark, view.batch_source)
            if frame is None:
                reason = "its batch source is neither a SparkSource nor Parquet"
        return self.run_view(
            task,
            reason=reason,
            with_feast=lambda: self.materialize_with_feast(
                registry, task, from_offline_store=from_offline_store, **kwargs
            ),
            ours=lambda: self._materialize_spark(registry, task, spark, frame),
        )

    def _partition_writer(self, view: FeatureView) -> PartitionWriter:
        """The executors' writer, with everything Feast-specific worked out here."""
        config = self.repo_config
        store_config = config.online_store
        versioning = bool(config.registry.enable_online_feature_view_versioning)
        layout = RedisLayout()
        view_name = layout.view_name(view, versioning=versioning)
        features = {feature.name: feature.dtype.to_value_type().name for feature in view.features}
        return PartitionWriter(
            redis_arguments=redis_client_arguments(store_config.connection_string),
            project=config.project,
            view_name=view_name,
            join_keys={
                column.name: column.dtype.to_value_type().name for column in view.entity_columns
            },
            features=features,
            ttl_seconds=store_config.key_ttl_seconds,
            batch_rows=self.config.write_batch_rows,
            pipeline_batches=self.config.pipeline_batches,
            label=redis_label(store_config.connection_string),
            layout=HashedFields(
                fields=tuple(
                    (f"{view_name}:{name}", layout.feature_field(view_name, name))
                    for name in features
                )
            ),
        )

    def _materialize_spark(
        self,
        registry: BaseRegistry,
        task: MaterializationTask,
        spark: SparkSession,
        frame: DataFrame | None,
    ) -> MaterializationStats:
        started = time.monotonic()
        view = task.feature_view
        assert isinstance(view, FeatureView) and frame is not None  # checked by the caller
        writer = self._partition_writer(view)
        client = redis.Redis(**writer.redis_arguments)
        try:
            client.ping()  # fail on the driver, naming the store, before any task starts
        except redis.RedisError as error:
            raise OnlineStoreUnavailable(
                f"cannot reach the Redis online store at {writer.label}: {error}"
            ) from error
        finally:
            client.close()
        columns = source_columns(view, registry, task.project)
        rows = entity_rows_frame(
            frame,
            columns,
            start=task.start_time,
            end=task.end_time,
            partitions=self.config.partitions,
        )
        # The only rows the driver receives: one row of counts per task, summed here (an
        # aggregation on the cluster would cost one more shuffle stage for a few rows).
        batches = arrow_batch_settings(
            rows.schema,
            batch_rows=self.config.arrow_batch_rows,
            byte_cap=parse_byte_string(spark.conf.get(_ARROW_BYTES)),
        )
        with session_settings(spark, batches):
            per_task = rows.mapInArrow(writer, COUNTS_DDL).collect()
        totals = {name: sum(int(row[name]) for row in per_task) for name in COUNTS_SCHEMA.names}
        entities, written = totals["entities"], totals["written"]
        rows_in_range, rejected = totals["rows"], totals["rejected"]
        seconds = time.monotonic() - started
        logger.info(
            "%s: %d entities, %d written, %d rows in range (%d without a key), %.1f s on Spark",
            view.name,
            entities,
            written,
            rows_in_range,
            rejected,
            seconds,
        )
        return MaterializationStats(
            view=view.name,
            start=task.start_time,
            end=task.end_time,
            engine="spark",
            entities=entities,
            rows_in_range=rows_in_range,
            rejected_rows=rejected,
            written=written,
            seconds=seconds,
        )
