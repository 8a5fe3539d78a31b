"""The local backend's windows and aggregates (core/compute/local/statistics.py).

The spark backend's are compared with these figures in tests/monitoring/test_spark_drift.py
and tests/monitoring/test_spark_pipeline.py.
"""

from __future__ import annotations

from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from core.compute.local.statistics import LocalStatistics, count_bins
from core.compute.statistics import FrameSample, SnapshotSource
from core.errors import InputError, TableReadError
from tests.utils.history import write_parquet

pytestmark = pytest.mark.unit

LOCAL = LocalStatistics()
T = pd.Timestamp("2026-01-05", tz="UTC")


def _sample(**columns: list[object]) -> FrameSample:
    return FrameSample(pd.DataFrame(columns))


def test_missing_values_are_counted_apart_and_text_is_parsed() -> None:
    sample = _sample(x=[1.0, 2.0, np.nan, np.inf, -np.inf, 3.0], t=["1", "2", "x", None, "3", "4"])

    summary = LOCAL.summarize(sample, "x")
    assert (summary.count, summary.nulls) == (3, 3)
    assert summary.mean == pytest.approx(2.0)
    assert summary.std == pytest.approx(np.std([1.0, 2.0, 3.0]))  # population
    assert summary.null_rate == 0.5
    assert (LOCAL.summarize(sample, "t").count, LOCAL.summarize(sample, "t").nulls) == (4, 2)
    empty = LOCAL.summarize(_sample(x=[np.nan, None]), "x")
    assert (empty.count, empty.nulls, empty.mean, empty.std) == (0, 2, None, None)


def test_bins_are_closed_on_the_right_and_open_at_both_ends() -> None:
    values = np.array([-5.0, 1.0, 1.5, 2.0, 2.0, 9.0])
    edges = np.array([1.0, 2.0])

    counts = count_bins(values, edges)

    # (-inf, 1], (1, 2], (2, inf)
    assert counts.tolist() == [2, 3, 1]
    assert LOCAL.bin_counts(_sample(x=[*values, np.nan]), "x", edges).tolist() == [2, 3, 1]


def test_quantiles_distinct_values_and_categories_pool_the_samples() -> None:
    first, second = _sample(x=[1.0, 2.0, 2.0, np.nan]), _sample(x=[3.0, 3.0, 3.0, 4.0])
    probabilities = [0.1, 0.5, 0.9]

    pooled = LOCAL.quantiles([first, second], "x", probabilities, exact=True)

    assert pooled == pytest.approx(np.quantile([1, 2, 2, 3, 3, 3, 4], probabilities))
    assert LOCAL.distinct_values([first, second], "x", limit=10) == 4
    assert LOCAL.category_counts(second, "x").to_dict() == {3.0: 3, 4.0: 1}


def test_scores_are_added_per_row_and_rows_read_back() -> None:
    sample = _sample(a=[1.0, 2.0, 3.0], b=[0.5, 0.5, 0.5])

    with ExitStack() as stack:
        scored = LOCAL.add_scores(
            sample, lambda frame: (frame["a"] * frame["b"]).to_numpy(), column="s", stack=stack
        )

    assert scored.columns == ["a", "b", "s"]
    assert LOCAL.to_pandas(scored, ["s"])["s"].tolist() == [0.5, 1.0, 1.5]
    assert sample.columns == ["a", "b"]  # the sample itself is left as it was


def test_a_row_sample_is_seeded_bounded_and_whole_when_small() -> None:
    sample = _sample(x=list(range(100)), y=[f"v{i}" for i in range(100)], z=[0.0] * 100)

    drawn = LOCAL.sample_rows(sample, ["x", "y"], rows=10, seed=3)

    assert list(drawn.columns) == ["x", "y"] and len(drawn) == 10
    assert drawn["x"].is_unique and set(drawn["x"]) <= set(range(100))
    assert (drawn["y"] == "v" + drawn["x"].astype(str)).all()  # whole rows
    pd.testing.assert_frame_equal(drawn, LOCAL.sample_rows(sample, ["x", "y"], rows=10, seed=3))
    assert not drawn.equals(LOCAL.sample_rows(sample, ["x", "y"], rows=10, seed=4))
    assert len(LOCAL.sample_rows(sample, ["x"], rows=500, seed=3)) == 100


def test_the_snapshot_window_ends_at_the_newest_snapshot(tmp_path: Path) -> None:
    stamps = [T, T + timedelta(days=1), T + timedelta(days=2), T + timedelta(days=2)]
    write_parquet(
        pd.DataFrame({"uid": [1, 2, 3, 3], "ts": stamps, "x": [0.0, 1.0, 2.0, 2.0]}),
        tmp_path / "snapshots.parquet",
    )
    source = SimpleNamespace(
        path=str(tmp_path / "snapshots.parquet"),
        timestamp_field="ts",
        field_mapping={"uid": "user_id"},
    )
    rows, (start, end) = LOCAL.snapshot_window(
        [SnapshotSource(source=source, keys=["user_id"])], window=timedelta(days=1), until=None
    )

    assert (start, end) == (T + timedelta(days=1), T + timedelta(days=2))
    frame = LOCAL.to_pandas(rows)
    assert frame.columns.tolist() == ["user_id", "event_timestamp"]
    assert frame["user_id"].tolist() == [3]  # (start, end]: once, though stored twice
    missing = SimpleNamespace(path=str(tmp_path / "nope.parquet"), timestamp_field="ts")
    with pytest.raises(TableReadError, match="does not exist"):
        LOCAL.snapshot_window(
            [SnapshotSource(source=missing, keys=["user_id"])],
            window=timedelta(days=1),
            until=None,
        )


def test_the_local_backend_reads_local_tables_only(tmp_path: Path) -> None:
    write_parquet(
        pd.DataFrame({"user_id": [1, 2], "event_timestamp": [T, T + timedelta(days=9)]}),
        tmp_path / "labels.parquet",
    )

    window = LOCAL.read_window(
        str(tmp_path / "labels.parquet"), ["user_id"], start=T, end=T + timedelta(days=1)
    )

    assert window["user_id"].tolist() == [1]
    with pytest.raises(InputError, match="only the cluster reads needs --profile spark"):
        LOCAL.read_window("s3a://lake/labels", ["user_id"], start=T, end=T)
