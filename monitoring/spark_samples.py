"""The samples of ``churn drift`` on the spark profile, built and kept on the cluster.

The same samples as :mod:`monitoring.snapshots`, but the entity rows are Spark frames (the
labels of the champion's training window; the keys and times of the last window of
snapshots), the point-in-time join runs in Feast's Spark offline store, and the joined rows
(on-demand features included) are staged by the executors in the profile's staging
location. Nothing here collects a window on the driver: the caller either aggregates the
staged frames in Spark (:mod:`monitoring.spark_statistics`) or reads them in bounded Arrow
batches.

Imported only on the spark profile (pyspark inside the functions).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from monitoring.snapshots import (
    SCORE_COLUMN,
    TIMESTAMP,
    ChampionLineage,
    champion_service_features,
    service_features,
    snapshot_sources,
)
from monitoring.statistics import DriftInputError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from feast import FeatureStore
    from pyspark.sql import DataFrame as SparkFrame

    from core.compute.spark.io import StagedRetrieval
    from core.feast_adapter.services import ServiceFeatures

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FAR_FUTURE = datetime(2200, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SparkSample:
    """One side of the comparison: rows staged by the executors, still on the cluster."""

    staged: StagedRetrieval
    features: ServiceFeatures
    rows: int
    frame: SparkFrame  # keys, event_timestamp and the features under their short names

    def to_pandas(self) -> pd.DataFrame:
        """The rows on the driver (for a window that fits), read in bounded Arrow batches."""
        columns = [*self.features.join_keys, TIMESTAMP, *self.features.columns]
        frame = self.staged.to_pandas(columns)
        frame = frame.rename(
            columns=dict(zip(self.features.columns, self.features.names, strict=True))
        )
        frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
        return frame[[*self.features.join_keys, TIMESTAMP, *self.features.names]]


def _stage_join(
    store: FeatureStore,
    features: ServiceFeatures,
    entity_rows: Any,
    *,
    expected: int,
    as_available_then: bool,
    stack: ExitStack,
) -> SparkSample:
    """Join ``expected`` entity rows (pandas or Spark) through the service on the cluster.

    The joined rows are staged, with their on-demand features, until ``stack`` closes.
    """
    from pyspark.sql import functions as F

    from core.compute.spark.io import historical_features, staged_retrieval

    job = stack.enter_context(
        historical_features(
            store,
            entity_rows,
            label="drift",
            features=features.feast_service,
            full_feature_names=True,
            filter_by_created_timestamp=as_available_then,
        )
    )
    staged = stack.enter_context(
        staged_retrieval(store, job, label="drift", on_demand_on_executors=True)
    )
    rows = staged.frame.count()
    if rows != expected:
        raise DriftInputError(f"the offline store returned {rows} rows for {expected} entity rows")
    renamed = staged.frame.select(
        *[F.col(key) for key in features.join_keys],
        F.col(TIMESTAMP),
        *[
            F.col(f"`{column}`").alias(name)
            for column, name in zip(features.columns, features.names, strict=True)
        ],
    )
    return SparkSample(staged=staged, features=features, rows=rows, frame=renamed)


def reference_on_spark(
    store: FeatureStore, lineage: ChampionLineage, *, stack: ExitStack
) -> SparkSample:
    """The champion's training rows, rebuilt on the cluster from its labels table.

    The labels of the training window are read here (the table is the one training read
    on this side, where its lineage points), staged for the executors, and joined there.

    Raises:
        DriftInputError: Labels missing, another Feast project, or no label in the window.
    """
    from core.tables import TableReadError, read_time_window

    features = champion_service_features(store, lineage)
    keys = [*features.join_keys, *features.request_fields]
    try:
        labels = read_time_window(
            lineage.labels_path,
            list(dict.fromkeys([*keys, TIMESTAMP])),
            start=lineage.train_start,
            end=lineage.train_end,
        )
    except TableReadError as error:
        raise DriftInputError(f"the champion's labels: {error}") from error
    if labels.empty:
        raise DriftInputError(
            f"no label rows in the champion's training window {lineage.train_start} - "
            f"{lineage.train_end} in {lineage.labels_path}"
        )
    return _stage_join(
        store, features, labels, expected=len(labels), as_available_then=True, stack=stack
    )


def current_on_spark(
    store: FeatureStore,
    service_name: str,
    *,
    window: timedelta,
    until: datetime | None,
    stack: ExitStack,
) -> tuple[SparkSample, tuple[pd.Timestamp, pd.Timestamp]]:
    """The last ``window`` of snapshots joined through the service, on the cluster.

    The window ends at ``until`` or at the newest snapshot, as in
    :func:`monitoring.snapshots.build_current_from_snapshots`.

    Raises:
        DriftInputError: The service reads no batch source, or the window holds no snapshot.
    """
    from feast.infra.offline_stores.offline_utils import get_offline_store_from_config
    from pyspark.sql import functions as F

    features = service_features(store, service_name)
    offline = get_offline_store_from_config(store.config.offline_store)
    frames = []
    for source, keys in snapshot_sources(store, service_name):
        reverse = {mapped: column for column, mapped in (source.field_mapping or {}).items()}
        job = offline.pull_all_from_table_or_query(
            config=store.config,
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
        raise DriftInputError(f"feature service {service_name} reads no batch source")
    snapshots = frames[0]
    for frame in frames[1:]:
        snapshots = snapshots.unionByName(frame)
    if until is not None:
        end = (
            pd.Timestamp(until).tz_convert("UTC") if until.tzinfo else pd.Timestamp(until, tz="UTC")
        )
    else:
        # As epoch microseconds: a collected timestamp would be naive in the local zone.
        newest = snapshots.agg(F.max(F.unix_micros(TIMESTAMP)).alias("newest")).first()
        if newest is None or newest["newest"] is None:
            raise DriftInputError(f"feature service {service_name}'s sources hold no snapshot")
        end = pd.Timestamp(int(newest["newest"]), unit="us", tz="UTC")
    start = end - pd.Timedelta(window)
    rows = snapshots.where(
        (F.col(TIMESTAMP) > F.lit(start.to_pydatetime()))
        & (F.col(TIMESTAMP) <= F.lit(end.to_pydatetime()))
    ).distinct()
    if features.request_fields:  # the request time is event_timestamp, not listed here
        raise DriftInputError(
            f"feature service {service_name} needs request field(s) "
            f"{', '.join(features.request_fields)}, which offline snapshots do not carry"
        )
    expected = rows.count()
    if expected == 0:
        raise DriftInputError(f"no offline snapshot between {start} and {end}")
    sample = _stage_join(
        store, features, rows, expected=expected, as_available_then=False, stack=stack
    )
    return sample, (start, end)


class ScoreOnExecutors:
    """``mapInArrow`` function adding the model's churn probability to each batch."""

    def __init__(self, model: Any, features: list[str]) -> None:
        self._model = model
        self._features = features

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Each batch with ``churn_probability`` (NaN where a feature is missing)."""
        from monitoring.snapshots import score_rows

        for batch in batches:
            frame = batch.to_pandas()
            scores = score_rows(self._model, frame, self._features).to_numpy(dtype=np.float64)
            yield batch.append_column(SCORE_COLUMN, pa.array(scores, type=pa.float64()))


def score_on_spark(
    store: FeatureStore, sample: SparkSample, model: Any, features: list[str], *, stack: ExitStack
) -> SparkSample:
    """The sample with the model's score, computed where the rows are.

    The scored rows are staged too (until ``stack`` closes): every statistic reads them
    again, and the model runs once per row, not once per aggregate.
    """
    from pyspark.sql.types import DoubleType, StructField, StructType

    from core.compute.spark.io import spark_uri, staged_parquet, staging_location

    schema = StructType([*sample.frame.schema.fields, StructField(SCORE_COLUMN, DoubleType())])
    scored = sample.frame.mapInArrow(ScoreOnExecutors(model, features), schema)
    uri = stack.enter_context(staged_parquet(scored, staging_location(store), label="drift-scored"))
    return replace(sample, frame=scored.sparkSession.read.parquet(spark_uri(uri)))
