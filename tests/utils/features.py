"""Factories for offline feature tables written the way `churn ingest` writes them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pandas as pd

CHURN_V1_FEATURES = [
    "feature_1",
    "feature_2",
    "feature_ratio",
    "feature_log",
    "day_of_week_sin",
    "day_of_week_cos",
    "is_weekend",
]


def write_user_features(
    path: Path, rows: Sequence[tuple[int, datetime, float | None, float | None]]
) -> pd.DataFrame:
    """Write a user-features table from (user_id, event_timestamp, feature_1, feature_2)."""
    frame = pd.DataFrame(rows, columns=["user_id", "event_timestamp", "feature_1", "feature_2"])
    frame["user_id"] = frame["user_id"].astype("int64")
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame["created"] = frame["event_timestamp"]
    frame["feature_1"] = frame["feature_1"].astype("float64")
    frame["feature_2"] = frame["feature_2"].astype("float64")
    frame = frame[["user_id", "event_timestamp", "created", "feature_1", "feature_2"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return frame


def entity_frame(rows: Sequence[tuple[int, datetime]]) -> pd.DataFrame:
    """An entity frame of (user_id, event_timestamp) rows."""
    frame = pd.DataFrame(rows, columns=["user_id", "event_timestamp"])
    frame["user_id"] = frame["user_id"].astype("int64")
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame
