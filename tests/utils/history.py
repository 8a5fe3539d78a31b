"""The synthetic history every test draws from: daily-ish snapshots and labels per user.

One generator for training, drift and workflow tests: it writes the offline tables in the
layout ``churn ingest`` writes (core.tables) and returns the rows with the churn_v1
features computed as the feature service does, so a test can check what Feast returns.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core.settings import DataSettings
from core.tables import CREATED, EVENT_TIMESTAMP, LABEL, USER_ID

START = datetime(2026, 9, 7, tzinfo=UTC)  # a Monday


def write_parquet(frame: pd.DataFrame, path: Path, *, offline_table: bool = False) -> Path:
    """Write a frame as one Parquet file (creating the folder).

    An offline table gets microsecond timestamps, as `churn ingest` writes them (Spark, on
    the spark profile, refuses nanosecond ones); other files keep pandas' nanoseconds.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if offline_table:
        frame.to_parquet(
            path, index=False, coerce_timestamps="us", allow_truncated_timestamps=False
        )
    else:
        frame.to_parquet(path, index=False)
    return path


def logistic(values: np.ndarray) -> np.ndarray:
    """The logistic function (labels drawn from log-odds)."""
    return 1.0 / (1.0 + np.exp(-values))


def write_history(
    data: DataSettings,
    *,
    users: int,
    days: int,
    every_days: int = 1,
    start: datetime = START,
    seed: int = 0,
    signal: float = 3.0,
    weekend_effect: float = 0.0,
    feature_2_shift: float = 0.0,
    arrived: datetime | None = None,
    append: bool = True,
) -> pd.DataFrame:
    """Write one snapshot and one label per user every ``every_days`` days.

    Snapshots fall at a random hour of their day, so every weekday is equally represented
    in whole weeks (a 70-day daily history splits into a 49-day training window). Labels
    follow a logistic model of the features, strong enough for a few tuning trials.

    Args:
        data: Where the offline tables are (``user_features`` and ``labels``).
        users: Users 1..users.
        days: Days of history from ``start``.
        every_days: Days between a user's snapshots.
        start: First day.
        seed: Random seed.
        signal: Strength of the features' effect on the label (0 gives random labels).
        weekend_effect: Extra log-odds of churn on weekend snapshots (times ``signal``), so
            the day-of-week features carry signal too.
        feature_2_shift: Moves engagement (a drifted batch).
        arrived: When the batch reached the platform (``created``, as an incremental
            ingest records it); by default each row arrived at its event time (back-fill).
        append: Add to existing tables (False replaces them).

    Returns:
        The snapshots with the seven churn_v1 features and the label.
    """
    rng = np.random.default_rng(seed)
    steps = np.arange(0, days, every_days)
    user_ids = np.tile(np.arange(1, users + 1, dtype=np.int64), steps.size)
    day_index = np.repeat(steps, users)
    hours = rng.integers(0, 24, size=user_ids.size)
    timestamps = pd.to_datetime(start) + pd.to_timedelta(day_index * 24 + hours, unit="h")
    feature_1 = rng.lognormal(1.0, 0.8, size=user_ids.size)
    feature_2 = rng.normal(4.0, 1.5, size=user_ids.size) + feature_2_shift
    day = timestamps.dayofweek.to_numpy()
    weekend = (day >= 5).astype(np.float64)
    logit = signal * (
        -(np.log1p(feature_1) - 1.2) - 0.5 * (feature_2 - 4.0) + weekend_effect * weekend
    )
    labels = (rng.random(user_ids.size) < logistic(logit)).astype(np.int64)
    snapshots = pd.DataFrame(
        {
            USER_ID: user_ids,
            EVENT_TIMESTAMP: timestamps,
            CREATED: timestamps if arrived is None else pd.Timestamp(arrived),
            "feature_1": feature_1,
            "feature_2": feature_2,
        }
    )
    label_frame = pd.DataFrame({USER_ID: user_ids, EVENT_TIMESTAMP: timestamps, LABEL: labels})
    for path, frame in ((data.user_features_path, snapshots), (data.labels_path, label_frame)):
        if append and path.exists():
            frame = pd.concat([pd.read_parquet(path), frame], ignore_index=True)
        write_parquet(frame, path, offline_table=True)
    return snapshots.assign(
        feature_ratio=feature_1 / (feature_2 + 1e-8),
        feature_log=np.log1p(np.maximum(feature_1, 0)),
        day_of_week_sin=np.sin(2 * math.pi * day / 7),
        day_of_week_cos=np.cos(2 * math.pi * day / 7),
        is_weekend=(day >= 5).astype(np.int64),
        label=labels,
    )
