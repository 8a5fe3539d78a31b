"""Redis going away and coming back, under a running server (real HTTP)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.utils.feast_repo import TestRepo, make_feature_repo
from tests.utils.serving import (
    OnlineUsers,
    ThrowawayRedis,
    load_online_features,
    register_model,
    running_server,
)

TIMEOUT_S = 0.3


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis(tmp_path / "redis")
    server.start()
    yield server
    server.close()


@pytest.fixture
def repo_on_own_redis(
    tmp_path: Path, feast_project: str, own_redis: ThrowawayRedis
) -> tuple[TestRepo, OnlineUsers]:
    root = tmp_path / "own"
    root.mkdir()
    repo = make_feature_repo(root, project=feast_project)
    repo = TestRepo(
        repo.project, repo.feast.model_copy(update={"redis_url": own_redis.url}), repo.data
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHURN_DATA_DIR", str(repo.data.data_dir))
        users = load_online_features(repo, now=datetime.now(UTC), fresh_users=3)
    return repo, users


def _timed_post(client: httpx.Client, user: int) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.post("/predict", json={"user_id": user})
    return response, time.monotonic() - started


def test_redis_down_gives_503_in_bounded_time_and_service_recovers_alone(
    make_app, tracking_uri, own_redis: ThrowawayRedis, repo_on_own_redis
) -> None:
    repo, users = repo_on_own_redis
    register_model(tracking_uri, project=repo.project)
    user = users.fresh[0]
    app = make_app(feast=repo.feast, online_timeout_s=TIMEOUT_S)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        before, _ = _timed_post(client, user)

        own_redis.freeze()  # accepts connections, never answers
        frozen, frozen_s = _timed_post(client, user)
        frozen_ready = client.get("/ready")
        own_redis.thaw()
        thawed, _ = _timed_post(client, user)

        own_redis.stop()  # connections refused
        down, down_s = _timed_post(client, user)
        down_batch = client.post("/predict/batch", json={"user_ids": [user]})
        down_ready = client.get("/ready")
        own_redis.start()  # same data, from its dump file
        after, _ = _timed_post(client, user)
        after_ready = client.get("/ready")
        metrics = client.get("/metrics").text

    assert before.status_code == 200
    assert frozen.status_code == 503, frozen.text
    assert frozen.json()["kind"] == "store_unavailable"
    assert f"did not answer within {TIMEOUT_S * 1000:.0f} ms" in frozen.json()["detail"]
    assert frozen_s < TIMEOUT_S + 1.0
    assert frozen_ready.status_code == 503 and "no answer" in frozen_ready.json()["online_store"]
    assert thawed.status_code == 200

    assert down.status_code == 503 and down.json()["kind"] == "store_unavailable"
    # Callers learn what is wrong, not where: no host, port or exception text.
    for body in (frozen.text, frozen_ready.text, down.text, down_ready.text):
        assert str(own_redis.port) not in body and "127.0.0.1" not in body
        assert "Error" not in body and "refused" not in body.lower()
    assert down.headers["retry-after"] == "1"
    assert down_s < TIMEOUT_S + 1.0
    assert down_batch.status_code == 503
    assert down_ready.status_code == 503 and down_ready.json()["model_loaded"] is True

    assert after.status_code == 200, after.text
    assert after.json()["churn_probability"] == before.json()["churn_probability"]
    assert after_ready.status_code == 200
    assert 'churn_prediction_errors_total{kind="store_unavailable"} 3.0' in metrics
