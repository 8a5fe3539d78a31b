"""`churn generate --events [--publish]`: activity with churn signal, sent to the stream."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import build_app
from tests.utils.services import redis_client
from tests.utils.stream import new_stream_key


def test_generate_events_writes_fading_activity_and_publishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_available: None
) -> None:
    key = new_stream_key()
    monkeypatch.setenv("CHURN_STREAM_KEY", key)
    monkeypatch.setenv("CHURN_DATA_DIR", str(tmp_path / "data"))

    result = CliRunner().invoke(
        build_app(),
        [
            "generate",
            "--users",
            "300",
            "--days",
            "20",
            "--end",
            "2026-11-01",
            "--events",
            "--publish",
        ],
    )

    assert result.exit_code == 0, result.output
    events = pd.read_parquet(tmp_path / "data" / "raw" / "activity.parquet")
    assert f"published {len(events)} events to {key}" in result.output
    assert redis_client().xlen(key) == len(events) > 0
    assert events["event_id"].is_unique and events["event_time"].is_monotonic_increasing
    # Churners fade: fewer events in the day before a churn label than before the others.
    labels = pd.read_parquet(tmp_path / "data" / "raw" / "events.parquet")
    before = []
    for row in labels.itertuples():
        times = events.loc[events["user_id"] == row.user_id, "event_time"]
        window = (times < row.event_date) & (times >= row.event_date - pd.Timedelta(days=1))
        before.append((row.label, int(window.sum())))
    frame = pd.DataFrame(before, columns=["label", "events"])
    means = frame.groupby("label")["events"].mean()
    assert means[1] < 0.5 * means[0], means
    redis_client().delete(key)


def test_publish_without_events_is_a_usage_error_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(
        build_app(), ["generate", "--users", "5", "--days", "1", "--publish"]
    )

    assert result.exit_code == 2
    assert "--publish needs --events" in result.output
    assert not (tmp_path / "data" / "raw").exists()
