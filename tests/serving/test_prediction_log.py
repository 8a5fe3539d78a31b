"""The prediction log: every prediction, in the contract's layout, nothing lost on stop."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from core.feast_store import open_feature_store
from tests.utils.feast_repo import TestRepo
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.serving import OnlineUsers, running_server
from tests.utils.waiting import wait_until

CONTRACT_COLUMNS = [
    "request_id",
    "user_id",
    "event_timestamp",
    "model_name",
    "model_version",
    "churn_probability",
    "churn_predicted",
    *CHURN_V1_FEATURES,
]


# The written-rows counter at a count (str.format): the state the write tests wait for.
_WRITTEN = 'churn_prediction_log_rows_total{{outcome="written"}} {}.0'


def _read_log(root: Path) -> pd.DataFrame:
    files = sorted(root.glob("date=*/part-*.parquet"))
    assert files, f"no prediction log under {root}"
    return pd.concat([pd.read_parquet(path) for path in files], ignore_index=True)


def test_every_prediction_is_in_the_log_after_a_graceful_stop(
    make_app, champion, repo: TestRepo, users: OnlineUsers, tmp_path: Path
) -> None:
    root = tmp_path / "predictions"
    started = datetime.now(UTC)
    # A long interval: only the shutdown write can have written these rows.
    with (
        running_server(make_app(log_flush_interval_s=3600)) as url,
        httpx.Client(base_url=url) as client,
    ):
        singles = [client.post("/predict", json={"user_id": u}).json() for u in users.fresh[:10]]
        batch = client.post(
            "/predict/batch", json={"user_ids": [*users.fresh[10:20], users.unknown]}
        ).json()
        refused = client.post("/predict", json={"user_id": users.stale})
        assert not list(root.glob("date=*/part-*.parquet")), "written before the stop"
    answers = singles + batch["predictions"]
    log = _read_log(root).set_index("request_id")

    assert refused.status_code == 404
    assert sorted(log.index) == sorted(a["request_id"] for a in answers)
    assert list(log.reset_index().columns) == CONTRACT_COLUMNS
    assert str(log["event_timestamp"].dtype) == "datetime64[ns, UTC]"
    assert log["user_id"].dtype == np.int64
    for name in ["churn_probability", *CHURN_V1_FEATURES]:
        assert log[name].dtype == np.float64, name
    assert log["churn_predicted"].dtype == bool
    assert set(log["model_name"]) == {"churn-predictor"} and set(log["model_version"]) == {"1"}
    assert (log["event_timestamp"] >= pd.Timestamp(started)).all()
    for answer in answers:
        row = log.loc[answer["request_id"]]
        assert row["user_id"] == answer["user_id"]
        assert round(row["churn_probability"], 4) == answer["churn_probability"]
        assert row["churn_predicted"] == answer["churn_predicted"]
    # The logged features are the ones Feast serves for those users.
    store = open_feature_store(repo.feast)
    online = store.get_online_features(
        features=store.get_feature_service("churn_v1"),
        entity_rows=[{"user_id": u, "event_timestamp": started} for u in users.fresh[:20]],
    ).to_dict()
    by_user = log.drop_duplicates("user_id").set_index("user_id")
    for name in ["feature_1", "feature_2", "feature_ratio", "feature_log"]:
        np.testing.assert_allclose(by_user.loc[users.fresh[:20], name], online[name])
    day = f"date={log['event_timestamp'].iloc[0].date().isoformat()}"
    assert {path.parent.name for path in root.glob("*/part-*.parquet")} == {day}


def test_rows_are_written_while_serving_and_kept_when_a_write_fails(
    make_app, champion, users: OnlineUsers, tmp_path: Path
) -> None:
    blocker, root = _unwritable_log_root(tmp_path)
    app = make_app(prediction_log_dir=root, log_flush_interval_s=0.1)
    with running_server(app) as url, httpx.Client(base_url=url) as client:
        ids = [
            client.post("/predict", json={"user_id": u}).json()["request_id"]
            for u in users.fresh[:5]
        ]
        wait_until(
            lambda: 'outcome="kept_after_failure"' in client.get("/metrics").text,
            timeout_s=20,
            what="the failed write was not counted",
        )
        blocker.unlink()  # the disk is writable again: the kept rows go out on the next try
        # The file can appear before the counter moves: wait for the count itself.
        wait_until(
            lambda: _WRITTEN.format(5) in client.get("/metrics").text,
            timeout_s=20,
            what="the kept rows were not written",
        )
    assert sorted(_read_log(root)["request_id"]) == sorted(ids)


def test_the_buffer_is_capped_while_writes_fail_and_drops_are_counted(
    make_app, champion, users: OnlineUsers, tmp_path: Path
) -> None:
    blocker, root = _unwritable_log_root(tmp_path)
    app = make_app(prediction_log_dir=root, log_flush_interval_s=0.1, log_max_buffer_rows=3)
    with running_server(app) as url, httpx.Client(base_url=url) as client:
        ids = [
            client.post("/predict", json={"user_id": u}).json()["request_id"]
            for u in users.fresh[:8]
        ]
        # Memory holds at most 3 rows: the 5 oldest are dropped and counted.
        wait_until(
            lambda: (
                'churn_prediction_log_rows_total{outcome="dropped"} 5.0'
                in client.get("/metrics").text
            ),
            timeout_s=20,
            what="the 5 oldest rows were not dropped and counted",
        )
        blocker.unlink()
        wait_until(
            lambda: _WRITTEN.format(3) in client.get("/metrics").text,
            timeout_s=20,
            what="the kept rows were not written",
        )
    # The newest were kept and written.
    assert sorted(_read_log(root)["request_id"]) == sorted(ids[-3:])


def _unwritable_log_root(tmp_path: Path) -> tuple[Path, Path]:
    """A log root under a file: every write fails until the file is removed."""
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the log folder should be")
    return blocker, blocker / "predictions"


def test_a_flush_of_many_chunks_splits_by_day_and_feature_set(tmp_path: Path) -> None:
    from serving.prediction_log import LogChunk, _write_chunks

    def chunk(request: str, user: int, at: str, version: str, features: tuple[str, ...]):
        return LogChunk(
            request_ids=[request],
            user_ids=np.array([user], dtype=np.int64),
            timestamps=np.array([at], dtype="datetime64[ns]"),
            model_name="churn",
            model_version=version,
            probabilities=np.array([user / 10]),
            predicted=np.array([user > 5]),
            features=features,
            matrix=np.array([[float(user)] * len(features)]),
        )

    v1, v2 = ("feature_1", "feature_2"), ("feature_1", "feature_2", "events_1h")
    chunks = [
        chunk("a", 1, "2026-05-01T23:59:59", "1", v1),
        chunk("b", 2, "2026-05-02T00:00:01", "1", v1),
        chunk("c", 3, "2026-05-01T12:00:00", "2", v2),
        chunk("d", 7, "2026-05-01T13:00:00", "1", v1),
    ]
    written = _write_chunks(tmp_path, chunks)

    parts = {(path.parent.name, tuple(pd.read_parquet(path).columns[7:])) for path in written}
    assert parts == {("date=2026-05-01", v1), ("date=2026-05-02", v1), ("date=2026-05-01", v2)}
    rows = pd.concat([pd.read_parquet(path) for path in written]).set_index("request_id")
    assert sorted(rows.index) == ["a", "b", "c", "d"]
    assert rows.loc["c", "model_version"] == "2" and rows.loc["c", "events_1h"] == 3.0
    assert rows.loc["d", "user_id"] == 7 and bool(rows.loc["d", "churn_predicted"])
    assert rows.loc["a", "churn_probability"] == 0.1 and rows.loc["b", "feature_2"] == 2.0
