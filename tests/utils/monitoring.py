"""Factories for drift tests: feature frames shaped like the churn_v1 service output."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from core.settings import DataSettings

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


def _logistic(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


def write_daily_history(
    data: DataSettings,
    *,
    users: int,
    days: int,
    start: datetime = START,
    seed: int = 0,
    feature_2_shift: float = 0.0,
    arrived: datetime | None = None,
) -> pd.DataFrame:
    """Append one snapshot and one label per user and day to the offline tables.

    ``arrived`` is when the batch reached the platform (``created``, as an incremental
    ingest records it); by default each row arrived at its event time (a back-fill).

    Snapshots fall at a random hour of each day, so every weekday is equally represented
    in whole weeks (a 70-day history splits into a 49-day training window). Labels follow
    a logistic model of the features, strong enough for a few tuning trials. Returns the
    snapshots with the seven churn_v1 features computed as the feature service does.
    """
    rng = np.random.default_rng(seed)
    user_ids = np.tile(np.arange(1, users + 1, dtype=np.int64), days)
    day_index = np.repeat(np.arange(days), users)
    hours = rng.integers(0, 24, size=user_ids.size)
    timestamps = pd.to_datetime(start) + pd.to_timedelta(day_index * 24 + hours, unit="h")
    feature_1 = rng.lognormal(1.0, 0.8, size=user_ids.size)
    feature_2 = rng.normal(4.0, 1.5, size=user_ids.size) + feature_2_shift
    logit = 3.0 * (-(np.log1p(feature_1) - 1.2) - 0.5 * (feature_2 - 4.0))
    labels = (rng.random(user_ids.size) < _logistic(logit)).astype(np.int64)
    snapshots = pd.DataFrame(
        {
            "user_id": user_ids,
            "event_timestamp": timestamps,
            "created": timestamps if arrived is None else pd.Timestamp(arrived),
            "feature_1": feature_1,
            "feature_2": feature_2,
        }
    )
    label_frame = pd.DataFrame(
        {"user_id": user_ids, "event_timestamp": timestamps, "label": labels}
    )
    for path, frame in ((data.user_features_path, snapshots), (data.labels_path, label_frame)):
        if path.exists():
            frame = pd.concat([pd.read_parquet(path), frame], ignore_index=True)
        write_parquet(frame, path, offline_table=True)
    day = timestamps.dayofweek.to_numpy()
    return snapshots.assign(
        feature_ratio=feature_1 / (feature_2 + 1e-8),
        feature_log=np.log1p(np.maximum(feature_1, 0)),
        day_of_week_sin=np.sin(2 * math.pi * day / 7),
        day_of_week_cos=np.cos(2 * math.pi * day / 7),
        is_weekend=(day >= 5).astype(np.int64),
        label=labels,
    )


def write_prediction_log(
    data_dir: Path,
    frame: pd.DataFrame,
    *,
    scores: np.ndarray,
    features: list[str],
    delay: timedelta = timedelta(hours=1),
    model_version: str = "1",
) -> pd.DataFrame:
    """Write the serving prediction log (contract layout) for the rows of ``frame``.

    Each prediction is made ``delay`` after the row's snapshot, with the row's features.
    """
    predicted_at = pd.to_datetime(frame["event_timestamp"], utc=True) + delay
    log = pd.DataFrame(
        {
            "request_id": [f"req-{index}" for index in range(len(frame))],
            "user_id": frame["user_id"].to_numpy(dtype=np.int64),
            "event_timestamp": predicted_at.to_numpy(),
            "model_name": "churn-predictor",
            "model_version": model_version,
            "churn_probability": scores,
            "churn_predicted": scores >= 0.5,
            **{name: frame[name].to_numpy(dtype=np.float64) for name in features},
        }
    )
    log["event_timestamp"] = pd.to_datetime(log["event_timestamp"], utc=True)
    for date, part in log.groupby(log["event_timestamp"].dt.strftime("%Y-%m-%d")):
        write_parquet(part, data_dir / "predictions" / f"date={date}" / "part-test.parquet")
    return log
