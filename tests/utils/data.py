"""Factories for raw-event frames and files, typed the way `churn generate` writes them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

RawRow = tuple[int | None, datetime | str | None, float | None, float | None, float | None]

# When the rows of :func:`good_rows` start by default.
GOOD_ROWS_START = datetime(2026, 5, 20, 9, tzinfo=UTC)


def good_rows(count: int, *, start: datetime = GOOD_ROWS_START) -> list[RawRow]:
    """``count`` usable raw rows: users 1..count, one hour apart from ``start``."""
    return [
        (user, start + user * timedelta(hours=1), 1.0 + user, 3.0, user % 2)
        for user in range(1, count + 1)
    ]


def raw_events(rows: Sequence[RawRow]) -> pd.DataFrame:
    """A raw events frame from (user_id, event_date, feature_1, feature_2, label) rows.

    Without nulls the columns have the generator's types (int64 ids and labels); a null id
    or label makes that column nullable (``Int64``/float), as a real file with gaps would.
    """
    frame = pd.DataFrame(rows, columns=["user_id", "event_date", "feature_1", "feature_2", "label"])
    frame["user_id"] = frame["user_id"].astype(
        "Int64" if frame["user_id"].isna().any() else "int64"
    )
    frame["feature_1"] = frame["feature_1"].astype("float64")
    frame["feature_2"] = frame["feature_2"].astype("float64")
    frame["label"] = frame["label"].astype("float64" if frame["label"].isna().any() else "int64")
    frame["event_date"] = pd.to_datetime(frame["event_date"], utc=True)
    return frame[["user_id", "feature_1", "feature_2", "label", "event_date"]]


def write_raw_events(path: Path, frame: pd.DataFrame) -> Path:
    """Write a raw frame as Parquet or CSV, by the suffix of ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path
