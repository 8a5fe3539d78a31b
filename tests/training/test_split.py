"""The time-based split: order, proportions, ties and too little data."""

from __future__ import annotations

import pandas as pd
import pytest

from core.errors import InputError
from training.split import split_by_time

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


def _frame(hours: list[int]) -> pd.DataFrame:
    times = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(hours, unit="h")
    return pd.DataFrame({"event_timestamp": times, "x": range(len(hours))})


def test_no_test_row_is_older_than_a_train_row() -> None:
    # Shuffled times, so the split cannot rely on the input order.
    frame = _frame(list(range(100))).sample(frac=1.0, random_state=0)
    split = split_by_time(frame)
    assert split.row_counts() == {"train": 70, "val": 10, "test": 20}
    assert split.train["event_timestamp"].max() < split.val["event_timestamp"].min()
    assert split.val["event_timestamp"].max() < split.test["event_timestamp"].min()
    bounds = split.boundaries()
    assert bounds["data.train_end"] < bounds["data.test_start"]
    assert bounds["data.test_start"].endswith("+00:00")


def test_rows_with_one_timestamp_stay_on_one_side() -> None:
    # Ten snapshots of ten rows each: the cuts fall on whole snapshots.
    frame = _frame([hour for hour in range(10) for _ in range(10)])
    split = split_by_time(frame)
    parts = [split.train, split.val, split.test]
    time_sets = [set(part["event_timestamp"]) for part in parts]
    assert not (time_sets[0] & time_sets[1]) and not (time_sets[1] & time_sets[2])
    assert sum(len(part) for part in parts) == 100


def test_too_few_timestamps_is_an_error_naming_the_empty_part() -> None:
    with pytest.raises(InputError, match="val, test empty"):
        split_by_time(_frame([0, 0, 0, 0]))
