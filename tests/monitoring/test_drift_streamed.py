"""`churn drift` on a churn_v2 champion: the streamed activity windows are compared too.

A private repo (production profile: the stream needs Redis), 70 days of daily snapshots
and labels, each user's activity streamed by `churn stream` (a steady rate per user, five
times that rate in the last week), `churn train --feature-service churn_v2`, then
`churn drift` on a week before the burst and on the last week, as a user runs them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from materialize.apply import apply_feature_repo
from materialize.stream.activity import publish_events
from tests.utils.feast_repo import TestRepo, make_feature_repo
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.history import START, write_history
from tests.utils.services import delete_project_keys, redis_client, unique_name
from tests.utils.stream import new_stream_key, run_stream, stream_environment

pytestmark = pytest.mark.filterwarnings(
    # MLflow 3.17's SQLite tracking store uses a loader option that SQLAlchemy 2.1 deprecates.
    "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
)

CHURN = str(Path(sys.executable).with_name("churn"))
DAYS = 70  # whole weeks: the weekday features do not drift
USERS = 60
STREAMED = ["events_1h", "events_24h", "events_7d", "minutes_since_last_event"]
BURST = 5.0  # activity in the last week, times each user's usual rate


@dataclass(frozen=True)
class StreamedChampion:
    """A churn_v2 champion trained on streamed activity, and its history."""

    repo: TestRepo
    env: dict[str, str]
    last: pd.Timestamp  # the newest snapshot
    last_week_rows: int  # snapshots in the week up to it


def _activity(last: pd.Timestamp, *, seed: int) -> pd.DataFrame:
    """Each user's events at a steady rate (1-6 a day) from 8 days before the history,
    ``BURST`` times that in the 7 days up to ``last``."""
    rng = np.random.default_rng(seed)
    begin = pd.Timestamp(START) - pd.Timedelta(days=8)
    burst_start = last - pd.Timedelta(days=7)
    rows = []
    for user in range(1, USERS + 1):
        rate = rng.uniform(1.0, 6.0) / 86_400  # per second
        for start, end, factor in ((begin, burst_start, 1.0), (burst_start, last, BURST)):
            seconds = (end - start).total_seconds()
            count = rng.poisson(rate * factor * seconds)
            offsets = np.sort(rng.uniform(0, seconds, count))
            rows.extend((user, start + pd.Timedelta(seconds=float(s))) for s in offsets)
    frame = pd.DataFrame(rows, columns=["user_id", "event_time"])
    frame = frame.sort_values("event_time", kind="stable", ignore_index=True)
    frame.insert(0, "event_id", [f"d{i}" for i in range(len(frame))])
    frame.insert(2, "event_type", "page_view")
    return frame


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHURN, *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def champion(
    tmp_path_factory: pytest.TempPathFactory, redis_available: None
) -> Iterator[StreamedChampion]:
    repo = make_feature_repo(tmp_path_factory.mktemp("drift_v2"), project=unique_name("drift_v2"))
    key = new_stream_key()
    env = {
        **stream_environment(repo, key),
        "CHURN_FEAST_PROFILE": "production",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "CHURN_TRAIN_MIN_AUC": "0.6",
        "CHURN_MONITORING_MAX_DATA_LAG_HOURS": "0",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    history = write_history(repo.data, users=USERS, days=DAYS, seed=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHURN_DATA_DIR", str(repo.data.data_dir))
        apply_feature_repo(repo.feast)
    last = pd.Timestamp(history["event_timestamp"].max())
    publish_events(redis_client(), _activity(last, seed=2), key=key)
    streamed = run_stream(env, "--until-idle")
    assert streamed.returncode == 0, streamed.stderr
    trained = _run(env, "train", "--feature-service", "churn_v2", "--trials", "2", "--no-progress")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    week = int((history["event_timestamp"] > last - timedelta(days=7)).sum())
    yield StreamedChampion(repo=repo, env=env, last=last, last_week_rows=week)
    delete_project_keys(repo.project)
    redis_client().delete(key, f"{key}:dead")


def _drift(champion: StreamedChampion, out: Path, *args: str) -> dict:
    completed = _run(champion.env, "drift", "--out", str(out), *args)
    assert completed.returncode in (0, 4), completed.stdout + completed.stderr
    document: dict = json.loads((out / "drift.json").read_text())
    document["exit_code"] = completed.returncode
    return document


def test_drift_compares_the_streamed_windows_like_the_snapshot_features(
    champion: StreamedChampion, tmp_path: Path
) -> None:
    # A week before the burst: the steady activity does not drift.
    before = _drift(
        champion, tmp_path / "before", "--until", (champion.last - timedelta(days=7)).isoformat()
    )
    assert [item["feature"] for item in before["features"]] == [*CHURN_V1_FEATURES, *STREAMED]
    assert before["summary"]["major"] == []
    assert before["summary"]["multivariate"]["features"] == [*CHURN_V1_FEATURES, *STREAMED]

    # The last week: five times the activity. The windows drift, the snapshots do not.
    burst = _drift(champion, tmp_path / "burst")
    assert burst["exit_code"] == 4
    major = set(burst["summary"]["major"])
    assert {"events_24h", "events_7d", "minutes_since_last_event"} <= major
    assert major <= set(STREAMED)
    # The window's rows are the week's snapshots (streamed states are joined to them, not
    # counted as rows of their own).
    assert burst["summary"]["current_rows"] == champion.last_week_rows
    by_feature = {item["feature"]: item for item in burst["features"]}
    assert (
        by_feature["events_7d"]["current"]["mean"]
        > 3 * by_feature["events_7d"]["reference"]["mean"]
    )
