"""Factories for drift tests: feature frames shaped like the churn_v1 service output."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

START = datetime(2026, 9, 7, tzinfo=UTC)  # a Monday


def make_feature_frame(
    rows: int,
    *,
    seed: int,
    feature_1_scale: float = 1.0,
    feature_2_shift: float = 0.0,
    start: datetime = START,
    days: int = 28,
) -> pd.DataFrame:
    """A frame with user_id, event_timestamp and the seven churn_v1 features.

    ``feature_1_scale`` multiplies usage and ``feature_2_shift`` moves engagement, so
    tests can shift exactly the features they name (the derived ratio and log follow
    feature_1 and feature_2 as they do in the feature service).
    """
    rng = np.random.default_rng(seed)
    offsets = rng.integers(0, days * 24, size=rows)
    timestamps = pd.to_datetime(start) + pd.to_timedelta(offsets, unit="h")
    day = timestamps.dayofweek.to_numpy()
    feature_1 = rng.gamma(2.0, 10.0, size=rows) * feature_1_scale
    feature_2 = rng.normal(5.0, 2.0, size=rows) + feature_2_shift
    return pd.DataFrame(
        {
            "user_id": np.arange(rows, dtype=np.int64),
            "event_timestamp": timestamps,
            "feature_1": feature_1,
            "feature_2": feature_2,
            "feature_ratio": feature_1 / (feature_2 + 1e-8),
            "feature_log": np.log1p(np.maximum(feature_1, 0)),
            "day_of_week_sin": np.sin(2 * math.pi * day / 7),
            "day_of_week_cos": np.cos(2 * math.pi * day / 7),
            "is_weekend": (day >= 5).astype(np.int64),
        }
    )


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write a frame as one Parquet file (creating the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def days_ago(now: datetime, days: float) -> datetime:
    """``now`` minus a number of days (for window tests)."""
    return now - timedelta(days=days)
