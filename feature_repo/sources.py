"""Data sources: the offline user-features table and the request-time context.

One definition serves every profile: the batch source is a ``FileSource`` (DuckDB offline
store) or, when ``CHURN_FEAST_PROFILE`` is ``spark``, a ``SparkSource`` over the same table
(the churn commands set that variable when they run ``feast apply``). Both have the same
name, timestamps and columns, so ``churn_v1`` and the views do not change.

The DuckDB offline store resolves a relative path against the current directory, not the
repo, so the table path is made absolute here: ``$CHURN_DATA_DIR/offline`` when set,
otherwise ``data/offline`` next to this repo. On a cluster ``$CHURN_SPARK_OFFLINE_DIR``
(e.g. ``s3a://lake/churn/offline``) says where the executors read the same tables.
"""

import os
from pathlib import Path

from feast import Field, FileSource, PushSource, RequestSource
from feast.data_format import ParquetFormat
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.types import UnixTimestamp

_DATA_DIR = Path(
    os.environ.get("CHURN_DATA_DIR") or Path(__file__).resolve().parent.parent / "data"
)
_ON_SPARK = os.environ.get("CHURN_FEAST_PROFILE") == "spark"
_SPARK_OFFLINE_DIR = os.environ.get("CHURN_SPARK_OFFLINE_DIR") or str(_DATA_DIR / "offline")

_USER_FEATURES = {
    "name": "user_features_source",
    "timestamp_field": "event_timestamp",
    "created_timestamp_column": "created",
    "description": "User feature snapshots written by `churn ingest`.",
}

user_features_source = (
    SparkSource(
        path=f"{_SPARK_OFFLINE_DIR.rstrip('/')}/user_features.parquet",
        file_format="parquet",
        **_USER_FEATURES,
    )
    if _ON_SPARK
    else FileSource(path=str(_DATA_DIR / "offline" / "user_features.parquet"), **_USER_FEATURES)
)

_USER_ACTIVITY = {
    "name": "user_activity_source",
    "timestamp_field": "event_timestamp",
    # No created column: a streamed state is available at its event time (rows of one
    # user have strictly increasing timestamps, so no tie-breaker is needed).
    "description": "Per-user activity tiles written by `churn stream` (one Parquet part "
    "per flush) and by Feast's own push.",
}

user_activity_source = (
    SparkSource(
        path=f"{_SPARK_OFFLINE_DIR.rstrip('/')}/user_activity",
        file_format="parquet",
        **_USER_ACTIVITY,
    )
    if _ON_SPARK
    else FileSource(
        path=str(_DATA_DIR / "offline" / "user_activity"),
        file_format=ParquetFormat(),
        **_USER_ACTIVITY,
    )
)

# The one entry point of streamed activity: `churn stream`, `store.push` and `/push` all
# write the user_activity view through it.
user_activity_push = PushSource(
    name="user_activity_push",
    batch_source=user_activity_source,
    description="Per-minute activity tiles of users, pushed by the stream worker.",
)

# Offline the entity row's own event_timestamp fills this field; online the caller passes
# the time of the request under the same name.
request_time = RequestSource(
    name="request_time",
    schema=[Field(name="event_timestamp", dtype=UnixTimestamp)],
    description="When the prediction is made (the label time, offline).",
)
