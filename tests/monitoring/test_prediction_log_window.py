"""Reading the prediction log's window: streamed, never the whole log at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from monitoring.snapshots import read_prediction_log
from tests.utils.monitoring import write_prediction_log

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


def test_the_prediction_log_is_streamed_and_only_the_window_is_held(tmp_path: Path) -> None:
    # One day of predictions in 100 files (serving writes one every few seconds); only the
    # last 2 hours are wanted.
    day = pd.Timestamp("2026-11-02", tz="UTC")
    rows = 200_000
    frame = pd.DataFrame(
        {
            "user_id": np.arange(rows, dtype=np.int64),
            "event_timestamp": day + pd.to_timedelta(np.linspace(0, 80_000, rows), unit="s"),
            "feature_1": np.random.default_rng(0).normal(size=rows),
        }
    )
    folder = tmp_path / "predictions" / "date=2026-11-02"
    for index in range(100):
        part = frame.iloc[index * 2000 : (index + 1) * 2000]
        staging = tmp_path / "staging"
        write_prediction_log(
            staging, part, scores=np.full(len(part), 0.5), features=["feature_1"],
            delay=pd.Timedelta(0),
        )  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        (staging / "predictions" / "date=2026-11-02" / "part-test.parquet").rename(
            folder / f"part-{index:03d}.parquet"
        )
    full_bytes = pa.Table.from_pandas(frame).nbytes * 3  # more columns in the log than here
    pool = pa.proxy_memory_pool(pa.default_memory_pool())

    window, (start, end) = read_prediction_log(
        tmp_path / "predictions", window=pd.Timedelta(hours=2), memory_pool=pool
    )

    assert end == frame["event_timestamp"].max()
    expected = frame[frame["event_timestamp"] > end - pd.Timedelta(hours=2)]
    assert len(window) == len(expected)
    assert window["event_timestamp"].min() > start
    # Streamed: arrow never held more than a fraction of the day's rows at once.
    assert pool.max_memory() < full_bytes / 4, (pool.max_memory(), full_bytes)
