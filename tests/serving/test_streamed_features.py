"""A churn_v2 champion (churn_v1 + the streamed activity windows) served as a churn_v1 one.

A private repo (production profile: Redis), user snapshots materialized by Feast, activity
streamed by `churn stream` for some users and never for another, a model version on
churn_v2's eleven columns. `/predict`, `/predict/batch` and `churn score` (run_score) must
answer every user, with the windows the events give at the request time, and agree to
1e-9 with each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from core.settings import MlflowSettings
from materialize.stream.activity import publish_events
from materialize.stream.tiles import window_counts
from serving.app import create_app
from serving.batch.run import ScoreRequest, run_score
from serving.settings import ServingSettings
from tests.utils.feast_repo import TestRepo, make_feature_repo
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.services import delete_project_keys, redis_client, unique_name
from tests.utils.serving import (
    OnlineUsers,
    load_online_features,
    register_model,
    tracking_uri_in,
)
from tests.utils.stream import (
    activity,
    new_stream_key,
    run_stream,
    stream_environment,
)

STREAMED = ["events_1h", "events_24h", "events_7d", "minutes_since_last_event"]
CHURN_V2_FEATURES = [*CHURN_V1_FEATURES, *STREAMED]


def _churn_v2_model() -> Any:
    """A HistGradientBoosting model on churn_v2's columns: churn falls with activity."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(5)
    rows = 1500
    frame = pd.DataFrame(rng.normal(size=(rows, len(CHURN_V1_FEATURES))), columns=CHURN_V1_FEATURES)
    frame["events_1h"] = rng.poisson(1.0, rows)
    frame["events_24h"] = frame["events_1h"] + rng.poisson(8.0, rows)
    frame["events_7d"] = frame["events_24h"] + rng.poisson(40.0, rows)
    frame["minutes_since_last_event"] = rng.integers(0, 7 * 24 * 60 + 1, rows)
    odds = 2.0 - 0.05 * frame["events_7d"] + frame["minutes_since_last_event"] / 4000
    labels = (rng.random(rows) < 1 / (1 + np.exp(-odds))).astype(int)
    model = HistGradientBoostingClassifier(max_iter=40, early_stopping=False, random_state=0)
    return model.fit(frame[CHURN_V2_FEATURES], labels)


class Streamed:
    """The module's repo, its users, the streamed events and the registry."""

    def __init__(self, repo: TestRepo, users: OnlineUsers, events: pd.DataFrame, uri: str):
        self.repo, self.users, self.events, self.tracking_uri = repo, users, events, uri


@pytest.fixture(scope="module")
def streamed(tmp_path_factory: pytest.TempPathFactory, redis_available: None) -> Iterator[Streamed]:
    root = tmp_path_factory.mktemp("streamed-serving")
    repo = make_feature_repo(root, project=unique_name("churn_v2_serving"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHURN_DATA_DIR", str(repo.data.data_dir))
        users = load_online_features(repo, now=datetime.now(UTC), fresh_users=6)
    # Users 1-4 were active up to minutes ago (40 events each, 7-23 minutes apart), users
    # 5 and 6 never on the stream.
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=12)
    events = activity([1, 2, 3, 4], per_user=40, start=start)
    events = events[events["event_time"] < datetime.now(UTC)]
    key = new_stream_key()
    publish_events(redis_client(), events, key=key)
    drained = run_stream(stream_environment(repo, key), "--until-idle")
    assert drained.returncode == 0, drained.stderr
    uri = tracking_uri_in(root / "mlflow")
    register_model(
        uri,
        project=repo.project,
        model=_churn_v2_model(),
        feature_service="churn_v2",
        features=CHURN_V2_FEATURES,
    )
    yield Streamed(repo, users, events, uri)
    delete_project_keys(repo.project)
    redis_client().delete(key, f"{key}:dead")


@pytest.fixture(autouse=True)
def _trusted_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")


def _expected_windows(events: pd.DataFrame, user: int, when: datetime) -> dict[str, int]:
    times = events.loc[events["user_id"] == user, "event_time"]
    micros = [int(pd.Timestamp(t).value // 1000) for t in times if t <= when]
    return window_counts(micros, int(pd.Timestamp(when).value // 1000))


def test_predict_and_score_serve_a_churn_v2_champion_with_the_streamed_windows(
    streamed: Streamed, tmp_path: Path
) -> None:
    wanted = streamed.users.fresh  # 1-4 streamed, 5-6 never
    log_dir = tmp_path / "predictions"
    app = create_app(
        ServingSettings(poll_interval_s=0),
        feast=streamed.repo.feast,
        mlflow=MlflowSettings(tracking_uri=streamed.tracking_uri),
        data=streamed.repo.data.model_copy(update={"prediction_log_dir": log_dir}),
    )
    with TestClient(app) as client:
        batch = client.post("/predict/batch", json={"user_ids": wanted}).json()
        single = client.post("/predict", json={"user_id": 5, "explain": True})
    assert batch["errors"] == [], batch
    answered = {p["user_id"]: p["churn_probability"] for p in batch["predictions"]}
    assert sorted(answered) == wanted
    assert single.status_code == 200, single.text
    explained = {item["feature"]: item["value"] for item in single.json()["reasons"]}
    assert sorted(explained) == sorted(CHURN_V2_FEATURES)
    # Never streamed: no activity, on the same terms as in a training set.
    assert [explained[name] for name in STREAMED] == [0, 0, 0, 7 * 24 * 60]

    log = pd.read_parquet(log_dir)
    log = log[log["user_id"].isin(wanted)]
    batch_time = pd.to_datetime(log["event_timestamp"], utc=True).min()
    served = log[pd.to_datetime(log["event_timestamp"], utc=True) == batch_time]
    served = served.set_index("user_id")
    request_time = batch_time.to_pydatetime()
    for user in wanted:
        expected = _expected_windows(streamed.events, user, request_time)
        assert {name: int(served.at[user, name]) for name in STREAMED} == expected, user
    assert served.loc[[1, 2, 3, 4], "events_24h"].gt(0).all()

    out = tmp_path / "scores.parquet"
    result = run_score(
        ScoreRequest(
            out=out,
            at=request_time,
            users=np.array(wanted),
            feast=streamed.repo.feast,
            mlflow=MlflowSettings(tracking_uri=streamed.tracking_uri),
        )
    )
    scores = pd.read_parquet(out).set_index("user_id")
    assert result.scored == len(wanted)
    for user in wanted:
        assert (
            abs(scores.at[user, "churn_probability"] - served.at[user, "churn_probability"]) <= 1e-9
        )
        assert round(scores.at[user, "churn_probability"], 4) == answered[user]
