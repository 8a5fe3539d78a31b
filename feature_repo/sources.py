"""Data sources: the offline user-features table and the request-time context.

The DuckDB offline store resolves a relative path against the current directory, not the
repo, so the table path is made absolute here: ``$CHURN_DATA_DIR/offline`` when set,
otherwise ``data/offline`` next to this repo.
"""

import os
from pathlib import Path

from feast import Field, FileSource, RequestSource
from feast.types import UnixTimestamp

_DATA_DIR = Path(
    os.environ.get("CHURN_DATA_DIR") or Path(__file__).resolve().parent.parent / "data"
)

user_features_source = FileSource(
    name="user_features_source",
    path=str(_DATA_DIR / "offline" / "user_features.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="User feature snapshots written by `churn ingest`.",
)

# Offline the entity row's own event_timestamp fills this field; online the caller passes
# the time of the request under the same name.
request_time = RequestSource(
    name="request_time",
    schema=[Field(name="event_timestamp", dtype=UnixTimestamp)],
    description="When the prediction is made (the label time, offline).",
)
