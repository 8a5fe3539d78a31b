"""Point-in-time joins, staged reads and the leakage audit's source reads on the spark backend.

The entity rows are staged for the executors, the executors write the joined rows to the
profile's staging location (:mod:`core.compute.spark.io`), counts and the leakage audit run
on the staged rows *in Spark* (only numbers reach the driver), and the driver reads the
columns it needs as Arrow batches of bounded size (never one ``toPandas()``, Feast issue
#5671).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pandas as pd

from core.compute.retrieval import SourceCheck, pull_source_rows
from core.compute.spark import io
from core.compute.spark.io import (
    ARROW_BATCH_ROWS,
    StagedRetrieval,
    historical_features,
    staged_retrieval,
)

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore
    from feast.infra.offline_stores.offline_store import RetrievalJob
    from pyspark.sql import DataFrame as SparkFrame


class SparkRetrieval:
    """:class:`core.compute.retrieval.RetrievalCompute` on the spark backend."""

    store: FeatureStore

    @contextmanager
    def point_in_time_join(
        self,
        entity_rows: pd.DataFrame,
        *,
        features: FeatureService | list[str],
        label: str,
        filter_by_created_timestamp: bool = True,
    ) -> Iterator[SparkJoinedRows]:
        """See :meth:`core.compute.retrieval.RetrievalCompute.point_in_time_join`."""
        with (
            historical_features(
                self.store,
                entity_rows,
                label=label,
                features=features,
                full_feature_names=True,
                filter_by_created_timestamp=filter_by_created_timestamp,
            ) as job,
            staged_retrieval(self.store, job, label=label) as staged,
        ):
            yield SparkJoinedRows(staged, store=self.store)

    @contextmanager
    def historical_features(
        self, entity_df: pd.DataFrame, *, label: str, **options: Any
    ) -> Iterator[RetrievalJob]:
        """The entity rows staged for the executors (not shipped from the driver's JVM)."""
        with io.historical_features(self.store, entity_df, label=label, **options) as job:
            yield job

    def retrieval_to_pandas(
        self, job: RetrievalJob, columns: list[str], *, label: str
    ) -> pd.DataFrame:
        """Staged by the executors, read back in bounded Arrow batches, then removed."""
        with io.staged_retrieval(self.store, job, label=label) as staged:
            return staged.to_pandas(columns)


class SparkJoinedRows:
    """:class:`core.compute.retrieval.JoinedRows` staged by the executors."""

    def __init__(
        self, staged: StagedRetrieval, *, store: FeatureStore, batch_rows: int = ARROW_BATCH_ROWS
    ):
        self.staged = staged
        self.store = store
        self.batch_rows = batch_rows

    @property
    def columns(self) -> list[str]:
        """The staged rows' columns (on-demand features are added as the driver reads)."""
        return list(self.staged.frame.columns)

    def count(self) -> int:
        """Number of joined rows (counted by the executors)."""
        return int(self.staged.frame.count())

    def count_distinct(self, column: str) -> int:
        """Number of distinct values of one column (counted by the executors)."""
        return int(self.staged.frame.select(column).distinct().count())

    def to_pandas(self, columns: list[str]) -> pd.DataFrame:
        """The rows with only ``columns``, read in bounded Arrow batches."""
        return self.staged.to_pandas(columns, batch_rows=self.batch_rows)

    def count_rows_without_source(
        self, checks: Sequence[SourceCheck], *, row_id: str, time_column: str
    ) -> int:
        """See :meth:`core.compute.retrieval.JoinedRows.count_rows_without_source`.

        The joins and the union of row ids run on the cluster; one count comes back.
        """
        joined = self.staged.frame
        sources: dict[tuple[object, ...], SparkFrame] = {}
        leaking: SparkFrame | None = None
        for check in checks:
            key = (check.view.name, check.start, check.end)
            if key not in sources:
                sources[key] = _source_rows(self.store, check)
            bad = _unsupported_rows(
                joined, sources[key], check, row_id=row_id, time_column=time_column
            )
            leaking = bad if leaking is None else leaking.unionByName(bad)
        return 0 if leaking is None else int(leaking.distinct().count())


def _source_rows(store: FeatureStore, check: SourceCheck) -> SparkFrame:
    """The view's source rows in the check's range, with ``_source_us`` (and ``_created_us``)."""
    from pyspark.sql import functions as F

    source = check.view.batch_source
    job = pull_source_rows(store, check.view, start=check.start, end=check.end)
    assert source is not None  # checked by pull_source_rows
    frame: SparkFrame = job.to_spark_df()  # type: ignore[attr-defined]
    for original, target in (source.field_mapping or {}).items():
        frame = frame.withColumnRenamed(original, target)
    frame = frame.withColumn("_source_us", F.unix_micros(F.col(source.timestamp_field)))
    if source.created_timestamp_column:
        frame = frame.withColumn(
            "_created_us", F.unix_micros(F.col(source.created_timestamp_column))
        )
    return frame


def _unsupported_rows(
    joined: SparkFrame, source: SparkFrame, check: SourceCheck, *, row_id: str, time_column: str
) -> SparkFrame:
    """Row ids whose value of one feature has no source row available at the row's time."""
    from pyspark.sql import functions as F

    keys, label_keys = check.keys, list(check.label_keys)
    created = ["_created_us"] if "_created_us" in source.columns else []
    used = joined.where(F.col(check.column).isNotNull()).select(
        F.col(row_id),
        F.unix_micros(F.col(time_column)).alias("_label_us"),
        *[F.col(lk).alias(k) for lk, k in zip(label_keys, keys, strict=True)],
        F.col(check.column).cast("double").alias("_value"),
    )
    candidates = source.where(F.col(check.feature).isNotNull()).select(
        *keys, F.col(check.feature).cast("double").alias("_value"), "_source_us", *created
    )
    pairs = used.join(candidates, on=[*keys, "_value"])
    valid = F.col("_source_us") <= F.col("_label_us")
    if created:
        valid &= F.col("_created_us") <= F.col("_label_us")
    if check.view.ttl:
        valid &= F.col("_source_us") >= F.col("_label_us") - F.lit(
            int(check.view.ttl.total_seconds() * 1_000_000)
        )
    legitimate = pairs.where(valid).select(row_id).distinct()
    return used.select(row_id).distinct().join(legitimate, on=row_id, how="left_anti")
