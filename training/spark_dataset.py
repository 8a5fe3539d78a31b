"""Training sets on the spark profile: the join and the leakage audit run on the cluster.

The executors write the joined rows to the profile's staging location (``core.compute.spark.io``);
the leakage audit reads them back *in Spark* (only counts reach the driver), and training
receives the rows as Arrow record batches of bounded size, each cut down to the columns the
model needs before the next one is read (never one ``toPandas()``, Feast issue #5671).

Imported only when the store's offline store is Spark (it imports pyspark).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from core.compute.spark.io import ARROW_BATCH_ROWS, historical_features, staged_retrieval
from training.leakage import source_pull

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore, FeatureView
    from pyspark.sql import DataFrame as SparkFrame


@dataclass(frozen=True)
class SparkRetrieval:
    """What the cluster returned: the joined frame (columns asked for) and audit counts."""

    frame: pd.DataFrame
    rows: int
    distinct_row_ids: int
    leaking_rows: int
    audited: list[str]
    batches: int  # Arrow batches read on the driver


def retrieve_on_spark(
    store: FeatureStore,
    service: FeatureService,
    entity_frame: pd.DataFrame,
    *,
    row_id: str,
    columns: list[str],
    batch_rows: int = ARROW_BATCH_ROWS,
) -> SparkRetrieval:
    """Point-in-time join on the cluster, audited there, read back in bounded batches.

    Args:
        store: A feature store on the spark profile.
        service: The feature service.
        entity_frame: Labels with entity keys, ``event_timestamp`` and the row id column.
        row_id: Name of the row id column carried through the join.
        columns: Columns the caller needs (others are dropped batch by batch).
        batch_rows: Largest Arrow batch read on the driver.
    """
    times = entity_frame["event_timestamp"]
    with (
        historical_features(
            store,
            entity_frame,
            label="training",
            features=service,
            full_feature_names=True,
            # A value back-filled after the label time (created later) must not be used.
            filter_by_created_timestamp=True,
        ) as job,
        staged_retrieval(store, job, label="training") as staged,
    ):
        rows = staged.frame.count()
        distinct_ids = staged.frame.select(row_id).distinct().count()
        leaking, audited = audit_on_spark(
            store,
            staged.frame,
            service=service,
            row_id=row_id,
            label_times=(times.min(), times.max()),
        )
        parts = [table.to_pandas() for table in staged.batches(columns, batch_rows=batch_rows)]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    return SparkRetrieval(
        frame=frame,
        rows=rows,
        distinct_row_ids=distinct_ids,
        leaking_rows=leaking,
        audited=audited,
        batches=len(parts),
    )


def audit_on_spark(
    store: FeatureStore,
    joined: SparkFrame,
    *,
    service: FeatureService,
    row_id: str,
    label_times: tuple[pd.Timestamp, pd.Timestamp],
) -> tuple[int, list[str]]:
    """The leakage audit of ``training.dataset.audit_point_in_time``, computed by Spark.

    A used value is legitimate only if its entity has a source row with that value whose
    event time is at or before the label time (and within the view's ttl) and whose
    created time, when recorded, is at or before the label time. Only counts come back.

    Args:
        store: A feature store on the spark profile.
        joined: Feast's joined rows (full feature names, ``event_timestamp``, the row id).
        service: The feature service used.
        row_id: The row id column.
        label_times: Earliest and latest label time (UTC), to bound the source read.

    Returns:
        The number of leaking rows and the refs audited.
    """
    from feast.errors import FeatureViewNotFoundException
    from pyspark.sql import functions as F

    leaking: SparkFrame | None = None
    audited: list[str] = []
    for projection in service.feature_view_projections:
        try:
            view = store.get_feature_view(projection.name)
        except FeatureViewNotFoundException:
            continue  # on-demand: derived from audited inputs and the label time
        source = _source_frame(store, view, label_times=label_times)
        keys = [column.name for column in view.entity_columns]
        label_keys = [projection.join_key_map.get(key, key) for key in keys]
        ttl_us = int(view.ttl.total_seconds() * 1_000_000) if view.ttl else None
        for feature in projection.features:
            column = f"{projection.name_to_use()}__{feature.name}"
            if column not in joined.columns:
                continue
            used = joined.where(F.col(column).isNotNull()).select(
                F.col(row_id),
                F.unix_micros(F.col("event_timestamp")).alias("_label_us"),
                *[F.col(lk).alias(k) for lk, k in zip(label_keys, keys, strict=True)],
                F.col(column).cast("double").alias("_value"),
            )
            candidates = source.where(F.col(feature.name).isNotNull()).select(
                *keys,
                F.col(feature.name).cast("double").alias("_value"),
                "_source_us",
                *(["_created_us"] if "_created_us" in source.columns else []),
            )
            pairs = used.join(candidates, on=[*keys, "_value"])
            valid = F.col("_source_us") <= F.col("_label_us")
            if "_created_us" in source.columns:
                valid &= F.col("_created_us") <= F.col("_label_us")
            if ttl_us:
                valid &= F.col("_source_us") >= F.col("_label_us") - F.lit(ttl_us)
            legitimate = pairs.where(valid).select(row_id).distinct()
            bad = used.select(row_id).distinct().join(legitimate, on=row_id, how="left_anti")
            leaking = bad if leaking is None else leaking.unionByName(bad)
            audited.append(f"{projection.name_to_use()}:{feature.name}")
    count = 0 if leaking is None else leaking.distinct().count()
    return count, audited


def _source_frame(
    store: FeatureStore, view: FeatureView, *, label_times: tuple[pd.Timestamp, pd.Timestamp]
) -> SparkFrame:
    """The view's source rows that could serve the label times, as a Spark frame."""
    from pyspark.sql import functions as F

    job, mapping = source_pull(store, view, label_times=label_times)
    source = view.batch_source
    assert source is not None  # checked by source_pull
    frame: SparkFrame = job.to_spark_df()
    for original, target in mapping.items():
        frame = frame.withColumnRenamed(original, target)
    frame = frame.withColumn("_source_us", F.unix_micros(F.col(source.timestamp_field)))
    if source.created_timestamp_column:
        frame = frame.withColumn(
            "_created_us", F.unix_micros(F.col(source.created_timestamp_column))
        )
    return frame
