"""Windows of rows and their summaries, quantile edges and bin counts on the spark backend.

A window is joined through Feast's Spark offline store and staged by the executors in the
profile's staging location (:mod:`core.compute.spark.io`), on-demand features included;
nothing here collects a window on the driver. Only small aggregates reach it (counts, means,
quantiles, per-bin counts: each executor bins its own partition inside ``mapInArrow``), or
the rows themselves in bounded Arrow batches (:meth:`SparkStatistics.to_pandas`).

- Quantiles with ``exact=True`` use Spark's ``percentile`` (linear interpolation, numpy's
  default); otherwise ``percentile_approx`` (rank error at most rows / 100,000).
- Rows already in this process (:class:`FrameSample`) are aggregated here, as the local
  backend does; mixed with staged rows, they are shipped to the cluster.

pyspark is imported inside the methods (importing this module needs no JVM).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from core.compute.local.statistics import (
    LocalStatistics,
    count_bins,
    short_feature_names,
    utc_timestamp,
)
from core.compute.spark.io import (
    historical_features,
    iter_arrow_batches,
    spark_session,
    spark_uri,
    staged_parquet,
    staged_retrieval,
    staging_location,
)
from core.compute.statistics import (
    TIMESTAMP,
    FrameSample,
    Sample,
    SampleSummary,
    Scorer,
    SnapshotSource,
)
from core.errors import InputError, TableReadError

if TYPE_CHECKING:
    from feast import FeatureStore
    from pyspark.sql import Column
    from pyspark.sql import DataFrame as SparkFrame

    from core.feast_adapter.services import ServiceFeatures

_APPROX_ACCURACY = 100_000  # percentile_approx: rank error at most n / accuracy
_DRAW_RANGE = 1 << 40  # a row's draw in sample_rows: its hash modulo this
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FAR_FUTURE = datetime(2200, 1, 1, tzinfo=UTC)
# Rows of this process are aggregated here, exactly as on the local backend.
_IN_PROCESS = LocalStatistics()


@dataclass(frozen=True)
class SparkSample:
    """Rows on the cluster: a Spark frame, staged as Parquet at ``uri`` when this backend
    built it (read back from there in bounded batches)."""

    frame: SparkFrame
    rows: int
    uri: str | None = None
    # Sample column -> column of the staged files, where they differ (full feature names).
    file_columns: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, frame: SparkFrame) -> SparkSample:
        """A caller's Spark frame as a sample (counted once here)."""
        return cls(frame=frame, rows=frame.count())

    @property
    def columns(self) -> list[str]:
        """Column names."""
        return list(self.frame.columns)


def _finite(column: Column) -> Column:
    from pyspark.sql import functions as F

    return column.isNotNull() & ~F.isnan(column) & (F.abs(column) != F.lit(float("inf")))


def _values(frame: SparkFrame, name: str) -> SparkFrame:
    """The column as doubles, finite values only, in one column named ``v``."""
    from pyspark.sql import functions as F

    value = F.col(f"`{name}`").cast("double")
    return frame.select(value.alias("v")).where(_finite(F.col("v")))


class _CountBins:
    """``mapInArrow`` function: each partition's counts per bin (only ``k + 1`` travel)."""

    def __init__(self, edges: np.ndarray) -> None:
        self._edges = np.asarray(edges, dtype=np.float64)

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        totals = np.zeros(self._edges.size + 1, dtype=np.int64)
        for batch in batches:
            totals += count_bins(batch.column(0).to_numpy(zero_copy_only=False), self._edges)
        yield pa.RecordBatch.from_arrays(
            [pa.array(np.arange(totals.size, dtype=np.int64)), pa.array(totals)],
            names=["bin", "n"],
        )


class _ScoreBatches:
    """``mapInArrow`` function adding a scorer's value to each batch, on the executors."""

    def __init__(self, scorer: Scorer, column: str) -> None:
        self._scorer = scorer
        self._column = column

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            scores = np.asarray(self._scorer(batch.to_pandas()), dtype=np.float64)
            yield batch.append_column(self._column, pa.array(scores, type=pa.float64()))


class SparkStatistics:
    """:class:`core.compute.statistics.StatisticsCompute` on the spark backend."""

    distributed = True
    store: FeatureStore

    # --- windows -----------------------------------------------------------------------

    def read_window(
        self, location: str, columns: list[str], *, start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        """See :meth:`core.compute.statistics.StatisticsCompute.read_window`.

        The executors filter the table at ``location`` (any location the cluster reads,
        ``s3a://...``) and stage the window, read back in bounded Arrow batches.
        """
        from pyspark.sql import functions as F

        try:
            table = spark_session(self.store).read.parquet(spark_uri(location))
        except Exception as error:  # Spark's AnalysisException for a missing path
            raise TableReadError(f"table {location} is not readable: {error}") from error
        missing = [column for column in [*columns, TIMESTAMP] if column not in table.columns]
        if missing:
            raise TableReadError(f"table {location} lacks {', '.join(dict.fromkeys(missing))}")
        stamp = F.col(TIMESTAMP).cast("timestamp")
        window = table.where(
            (stamp >= F.lit(start.to_pydatetime())) & (stamp <= F.lit(end.to_pydatetime()))
        ).select(*[stamp.alias(c) if c == TIMESTAMP else F.col(c) for c in columns])
        with staged_parquet(window, staging_location(self.store), label="window") as uri:
            parts = [batch.to_pandas() for batch in iter_arrow_batches(uri) if batch.num_rows]
        frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
        if TIMESTAMP in frame.columns:
            frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
        return frame

    def snapshot_window(
        self, sources: Sequence[SnapshotSource], *, window: timedelta, until: datetime | None
    ) -> tuple[Sample, tuple[pd.Timestamp, pd.Timestamp]]:
        """See :meth:`core.compute.statistics.StatisticsCompute.snapshot_window`.

        The snapshots are read and filtered on the cluster; the window stays there.
        """
        from feast.infra.offline_stores.offline_utils import get_offline_store_from_config
        from pyspark.sql import functions as F

        offline = get_offline_store_from_config(self.store.config.offline_store)
        frames = []
        for snapshot in sources:
            source, keys = snapshot.source, snapshot.keys
            reverse = {mapped: column for column, mapped in (source.field_mapping or {}).items()}
            job = offline.pull_all_from_table_or_query(
                config=self.store.config,
                data_source=source,
                join_key_columns=[reverse.get(key, key) for key in keys],
                feature_name_columns=[],
                timestamp_field=source.timestamp_field,
                start_date=_EPOCH,
                end_date=_FAR_FUTURE,
            )
            pulled: SparkFrame = job.to_spark_df()  # type: ignore[attr-defined]
            frames.append(
                pulled.select(
                    *[F.col(reverse.get(key, key)).alias(key) for key in keys],
                    F.col(source.timestamp_field).cast("timestamp").alias(TIMESTAMP),
                )
            )
        if not frames:
            raise InputError("the snapshot tables hold no snapshot")
        snapshots = frames[0]
        for frame in frames[1:]:
            snapshots = snapshots.unionByName(frame)
        if until is not None:
            end = utc_timestamp(until)
        else:
            # As epoch microseconds: a collected timestamp would be naive in the local zone.
            newest = snapshots.agg(F.max(F.unix_micros(TIMESTAMP)).alias("newest")).first()
            if newest is None or newest["newest"] is None:
                raise InputError("the snapshot tables hold no snapshot")
            end = pd.Timestamp(int(newest["newest"]), unit="us", tz="UTC")
        start = end - pd.Timedelta(window)
        rows = snapshots.where(
            (F.col(TIMESTAMP) > F.lit(start.to_pydatetime()))
            & (F.col(TIMESTAMP) <= F.lit(end.to_pydatetime()))
        ).distinct()
        return SparkSample.of(rows), (start, end)

    def join_features(
        self,
        features: ServiceFeatures,
        entity_rows: Sample,
        *,
        as_available_then: bool,
        stack: ExitStack,
    ) -> Sample:
        """See :meth:`core.compute.statistics.StatisticsCompute.join_features`.

        Rows of this process are staged for the executors by pyarrow
        (:func:`core.compute.spark.io.historical_features`); the joined rows are staged with
        their on-demand features, computed on the executors.
        """
        from pyspark.sql import functions as F

        entities = entity_rows.frame if isinstance(entity_rows, FrameSample | SparkSample) else None
        if entities is None:
            raise TypeError(f"the spark backend cannot join {type(entity_rows)}")
        job = stack.enter_context(
            historical_features(
                self.store,
                entities,
                label="window",
                features=features.feast_service,
                full_feature_names=True,
                filter_by_created_timestamp=as_available_then,
            )
        )
        staged = stack.enter_context(
            staged_retrieval(self.store, job, label="window", on_demand_on_executors=True)
        )
        short = short_feature_names(features)
        renamed = staged.frame.select(
            *[F.col(key) for key in features.join_keys],
            F.col(TIMESTAMP),
            *[F.col(f"`{column}`").alias(name) for column, name in short.items()],
        )
        return SparkSample(
            frame=renamed,
            rows=staged.frame.count(),
            uri=staged.uri,
            file_columns={name: column for column, name in short.items()},
        )

    def to_pandas(self, sample: Sample, columns: list[str] | None = None) -> pd.DataFrame:
        """See :meth:`core.compute.statistics.StatisticsCompute.to_pandas`.

        A frame this backend did not stage (a caller's) is collected through Arrow at once.
        """
        if isinstance(sample, FrameSample):
            return _IN_PROCESS.to_pandas(sample, columns)
        spark = _spark_sample(sample)
        wanted = columns or spark.columns
        if spark.uri is None:
            frame = spark.frame.select(*[f"`{c}`" for c in wanted]).toArrow().to_pandas()
        else:
            read = [spark.file_columns.get(column, column) for column in wanted]
            parts = [batch.to_pandas() for batch in iter_arrow_batches(spark.uri, columns=read)]
            frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=read)
            frame.columns = wanted
        if TIMESTAMP in frame.columns:
            frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
        return frame

    def add_scores(
        self, sample: Sample, scorer: Scorer, *, column: str, stack: ExitStack
    ) -> Sample:
        """See :meth:`core.compute.statistics.StatisticsCompute.add_scores`.

        The scored rows are staged: every aggregate reads them again, and the scorer runs
        once per row, not once per aggregate.
        """
        from pyspark.sql.types import DoubleType, StructField, StructType

        if isinstance(sample, FrameSample):
            return _IN_PROCESS.add_scores(sample, scorer, column=column, stack=stack)
        spark = _spark_sample(sample)
        schema = StructType([*spark.frame.schema.fields, StructField(column, DoubleType())])
        scored = spark.frame.mapInArrow(_ScoreBatches(scorer, column), schema)
        location = staging_location(self.store)
        uri = stack.enter_context(staged_parquet(scored, location, label="scored"))
        return SparkSample(
            frame=scored.sparkSession.read.parquet(spark_uri(uri)), rows=spark.rows, uri=uri
        )

    def sample_rows(
        self, sample: Sample, columns: list[str], *, rows: int, seed: int
    ) -> pd.DataFrame:
        """See :meth:`core.compute.statistics.StatisticsCompute.sample_rows`.

        Each row's draw is a seeded hash of its values, not of where it sits, so the same
        rows are drawn however the cluster partitions them. The executors keep the rows
        whose draw falls under a share that leaves a few more than ``rows`` (ten standard
        deviations of room); the ``rows`` lowest draws of those travel, through Arrow.
        """
        from pyspark.sql import functions as F

        if isinstance(sample, FrameSample):
            return _IN_PROCESS.sample_rows(sample, columns, rows=rows, seed=seed)
        spark = _spark_sample(sample)
        values = [F.col(f"`{column}`") for column in columns]
        frame = spark.frame.select(*values)
        if spark.rows > rows:
            fraction = min(1.0, (rows + 10 * rows**0.5 + 10) / spark.rows)
            draw = F.pmod(F.xxhash64(F.lit(seed), *values), F.lit(_DRAW_RANGE))
            frame = (
                frame.withColumn("__draw", draw)
                .where(F.col("__draw") < F.lit(int(fraction * _DRAW_RANGE)))
                .orderBy("__draw")
                .limit(rows)
                .drop("__draw")
            )
        return frame.toArrow().to_pandas()

    # --- aggregates ----------------------------------------------------------------------

    def summarize(self, sample: Sample, column: str) -> SampleSummary:
        """See :meth:`core.compute.statistics.StatisticsCompute.summarize`."""
        from pyspark.sql import functions as F

        if isinstance(sample, FrameSample):
            return _IN_PROCESS.summarize(sample, column)
        value = F.col(f"`{column}`").cast("double")
        finite = _finite(value)
        row = (
            self._frames([sample], column)[0]
            .agg(
                F.count(F.lit(1)).alias("rows"),
                F.sum(F.when(finite, 1).otherwise(0)).alias("count"),
                F.avg(F.when(finite, value)).alias("mean"),
                F.stddev_pop(F.when(finite, value)).alias("std"),
            )
            .first()
        )
        assert row is not None  # an aggregate always returns one row
        count = int(row["count"] or 0)
        if count == 0:
            return SampleSummary(count=0, nulls=int(row["rows"]), mean=None, std=None)
        return SampleSummary(
            count=count,
            nulls=int(row["rows"]) - count,
            mean=float(row["mean"]),
            std=float(row["std"]),
        )

    def distinct_values(self, samples: Sequence[Sample], column: str, *, limit: int) -> int:
        """See :meth:`core.compute.statistics.StatisticsCompute.distinct_values`."""
        if all(isinstance(sample, FrameSample) for sample in samples):
            return _IN_PROCESS.distinct_values(samples, column, limit=limit)
        return _pooled(self._frames(samples, column), column).distinct().limit(limit + 1).count()

    def category_counts(self, sample: Sample, column: str) -> pd.Series:
        """See :meth:`core.compute.statistics.StatisticsCompute.category_counts`."""
        if isinstance(sample, FrameSample):
            return _IN_PROCESS.category_counts(sample, column)
        frame = self._frames([sample], column)[0]
        rows = _values(frame, column).groupBy("v").count().collect()
        return pd.Series({row["v"]: int(row["count"]) for row in rows}, dtype="int64")

    def quantiles(
        self,
        samples: Sequence[Sample],
        column: str,
        probabilities: Sequence[float],
        *,
        exact: bool,
    ) -> np.ndarray:
        """See :meth:`core.compute.statistics.StatisticsCompute.quantiles`."""
        from pyspark.sql import functions as F

        if all(isinstance(sample, FrameSample) for sample in samples):
            return _IN_PROCESS.quantiles(samples, column, probabilities, exact=exact)
        wanted = [float(p) for p in probabilities]
        quantile = (
            F.percentile("v", wanted)
            if exact
            else F.percentile_approx("v", wanted, _APPROX_ACCURACY)
        )
        row = _pooled(self._frames(samples, column), column).agg(quantile.alias("q")).first()
        assert row is not None
        return np.asarray(row["q"], dtype=np.float64)

    def bin_counts(self, sample: Sample, column: str, edges: np.ndarray) -> np.ndarray:
        """See :meth:`core.compute.statistics.StatisticsCompute.bin_counts`."""
        from pyspark.sql import functions as F

        if isinstance(sample, FrameSample):
            return _IN_PROCESS.bin_counts(sample, column, edges)
        inner = np.asarray(edges, dtype=np.float64)
        rows = (
            _values(self._frames([sample], column)[0], column)
            .mapInArrow(_CountBins(inner), "bin long, n long")
            .groupBy("bin")
            .agg(F.sum("n").alias("n"))
            .collect()
        )
        counts = np.zeros(inner.size + 1, dtype=np.int64)
        for row in rows:
            counts[int(row["bin"])] = int(row["n"])
        return counts

    def _frames(self, samples: Sequence[Sample], column: str) -> list[SparkFrame]:
        """The samples as Spark frames (rows of this process shipped: only ``column``)."""
        frames = []
        for sample in samples:
            if isinstance(sample, FrameSample):
                local = sample.frame[[column]]
                frames.append(spark_session(self.store).createDataFrame(local))
            else:
                frames.append(_spark_sample(sample).frame)
        return frames


def _spark_sample(sample: Sample) -> SparkSample:
    if not isinstance(sample, SparkSample):
        raise TypeError(f"the spark backend holds rows as SparkSample, not {type(sample)}")
    return sample


def _pooled(frames: list[SparkFrame], column: str) -> SparkFrame:
    """The finite values of ``column`` over all frames, in one column ``v``."""
    pooled = _values(frames[0], column)
    for frame in frames[1:]:
        pooled = pooled.unionByName(_values(frame, column))
    return pooled
