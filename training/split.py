"""Time-based train/validation/test split: never at random, never across a timestamp.

Rows are ordered by ``event_timestamp``; the cut points are the timestamps at 70% and 80%
of the rows, and every row with the same timestamp lands on the same side. Hence every
validation row is newer than every train row and every test row newer than every
validation row (strictly), and the fractions are approximate when timestamps repeat.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from core.errors import InputError
from core.tables import EVENT_TIMESTAMP

TIMESTAMP = EVENT_TIMESTAMP
FRACTIONS = (0.7, 0.1, 0.2)


@dataclass(frozen=True)
class TimeSplit:
    """The three parts, each sorted by time."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame

    def boundaries(self) -> dict[str, str]:
        """First and last timestamp of each part, ISO 8601 in UTC."""
        values: dict[str, str] = {}
        for part, frame in (("train", self.train), ("val", self.val), ("test", self.test)):
            values[f"data.{part}_start"] = _iso(frame[TIMESTAMP].min())
            values[f"data.{part}_end"] = _iso(frame[TIMESTAMP].max())
        return values

    def row_counts(self) -> dict[str, int]:
        """Rows per part."""
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _iso(value: pd.Timestamp) -> str:
    return value.tz_convert("UTC").isoformat()


def split_by_time(
    frame: pd.DataFrame, *, fractions: tuple[float, float, float] = FRACTIONS
) -> TimeSplit:
    """Split rows by time into train, validation and test (70/10/20 by default).

    Raises:
        InputError: A part would be empty (too few distinct timestamps) or the
            fractions do not add up to one.
    """
    if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) <= 0:
        raise InputError(f"split fractions must be positive and sum to 1, got {fractions}")
    ordered = frame.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)
    times = ordered[TIMESTAMP]
    n = len(ordered)
    # round(): 1000 * (0.7 + 0.1) is 799.999... in floating point.
    train_cut = times.iloc[max(round(n * fractions[0]) - 1, 0)]
    val_cut = times.iloc[max(round(n * (fractions[0] + fractions[1])) - 1, 0)]
    train = ordered.loc[times <= train_cut]
    val = ordered.loc[(times > train_cut) & (times <= val_cut)]
    test = ordered.loc[times > val_cut]
    empty = [name for name, part in (("train", train), ("val", val), ("test", test)) if part.empty]
    if empty:
        raise InputError(
            f"time split of {n} rows over {times.nunique()} distinct timestamps leaves "
            f"{', '.join(empty)} empty; more labels or more distinct times are needed"
        )
    return TimeSplit(
        train=train.reset_index(drop=True),
        val=val.reset_index(drop=True),
        test=test.reset_index(drop=True),
    )
