"""Factories for drift tests: feature frames shaped like the churn_v1 service output."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from tests.utils.history import START, write_parquet

__all__ = [
    "START",
    "make_drift_samples",
    "make_feature_frame",
    "write_parquet",
    "write_prediction_log",
]


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


def make_drift_samples(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A reference and a drifted current sample: a skewed continuous column with missing and
    infinite values, a four-valued one (categorical) and a score that barely moves."""
    rng = np.random.default_rng(seed)
    reference = pd.DataFrame(
        {
            "usage": rng.lognormal(1.0, 0.8, size=6000),
            "plan": rng.integers(0, 4, size=6000).astype("float64"),
            "score": rng.normal(size=6000),
        }
    )
    current = pd.DataFrame(
        {
            "usage": rng.lognormal(1.2, 0.8, size=4000),
            "plan": rng.choice([0, 1, 2, 3], p=[0.4, 0.3, 0.2, 0.1], size=4000).astype("float64"),
            "score": rng.normal(0.02, 1.0, size=4000),
        }
    )
    reference.loc[reference.sample(frac=0.05, random_state=1).index, "usage"] = np.nan
    current.loc[current.sample(frac=0.10, random_state=2).index, "usage"] = np.inf
    return reference, current
