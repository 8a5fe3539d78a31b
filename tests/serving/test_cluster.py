"""Serving on the cluster profile: the reader on a real Redis Cluster, and a master failover
under `churn serve` (503 with Retry-After only while the replica is promoted, then 200s)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from redis.crc import key_slot

from core.feast_adapter.layout import RedisLayout
from core.feast_store import open_feature_store
from serving.features import OnlineFeatures
from tests.utils.feast_repo import TestRepo, make_feature_repo
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.redis_cluster import ClusterNodes, delete_cluster_project_keys, private_cluster
from tests.utils.services import unique_name
from tests.utils.serving import (
    OnlineUsers,
    churn_serve_environment,
    churn_serve_process,
    free_port,
    load_online_features,
    read_features,
    register_model,
)
from tests.utils.waiting import wait_until


def _cluster_repo(
    root: Path, nodes: ClusterNodes, *, fresh_users: int
) -> tuple[TestRepo, OnlineUsers]:
    repo = make_feature_repo(
        root,
        project=unique_name("churn_cluster"),
        profile="cluster",
        redis_cluster_nodes=nodes.connection_string,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHURN_DATA_DIR", str(repo.data.data_dir))
        users = load_online_features(repo, now=datetime.now(UTC), fresh_users=fresh_users)
    return repo, users


@pytest.fixture(scope="module")
def cluster_repo(
    tmp_path_factory: pytest.TempPathFactory, redis_cluster: ClusterNodes
) -> Iterator[tuple[TestRepo, OnlineUsers]]:
    """A repo on the run's cluster, applied and materialized (our engine) once."""
    repo, users = _cluster_repo(
        tmp_path_factory.mktemp("cluster-serving"), redis_cluster, fresh_users=60
    )
    yield repo, users
    delete_cluster_project_keys(redis_cluster.connection_string, repo.project)


def test_cluster_reader_equals_feast_online_read(
    cluster_repo: tuple[TestRepo, OnlineUsers],
) -> None:
    repo, users = cluster_repo
    when = datetime.now(UTC)
    store = open_feature_store(repo.feast)
    online = OnlineFeatures(store, timeout_s=2)
    plan = online.resolve(service_name="churn_v1", features=CHURN_V1_FEATURES, project=repo.project)
    ids = [*users.fresh, users.unknown, users.stale, users.missing_feature]
    rows = read_features(online, plan, ids, when)
    expected = store.get_online_features(
        features=store.get_feature_service("churn_v1"),
        entity_rows=[{"user_id": user, "event_timestamp": when} for user in users.fresh],
    ).to_dict()

    assert plan.fast_path, plan.fast_path_gap  # our reader, not the SDK fallback
    kinds = [problem.kind if problem else None for problem in rows.problems]
    fresh = len(users.fresh)
    # A null value is no reader problem: the feature service's missing-value policy decides.
    assert kinds == [None] * fresh + ["unknown_user", "stale_features", None]
    assert np.isnan(rows.matrix[-1]).any()
    for column, name in enumerate(CHURN_V1_FEATURES):
        np.testing.assert_allclose(
            rows.matrix[:fresh, column], np.array(expected[name], dtype=float)
        )


def _status(url: str, user: int) -> int:
    try:
        return httpx.post(f"{url}/predict", json={"user_id": user}, timeout=5).status_code
    except httpx.TransportError:
        return -1


def _master_port_of(nodes: ClusterNodes, repo: TestRepo, user: int) -> int:
    key = RedisLayout().int64_redis_key("user_id", user, project=repo.project, version=3)
    client = nodes.client()
    try:
        return int(client.nodes_manager.get_node_from_slot(key_slot(key)).port)
    finally:
        client.close()


def test_a_master_killed_under_load_costs_only_the_failover(
    tmp_path: Path, tracking_uri: str
) -> None:
    with private_cluster(tmp_path / "cluster", replicas=1) as nodes:
        repo, users = _cluster_repo(tmp_path / "repo", nodes, fresh_users=30)
        register_model(tracking_uri, project=repo.project)
        victim = _master_port_of(nodes, repo, users.fresh[0])
        port = free_port()
        environment = churn_serve_environment(
            repo, tracking_uri, port=port, log_dir=tmp_path / "served", online_timeout_s="0.3"
        )
        environment.update(
            CHURN_FEAST_PROFILE="cluster", CHURN_REDIS_CLUSTER_NODES=nodes.connection_string
        )
        answers: list[tuple[float, int, str | None, str]] = []  # sent at, status, Retry-After, kind
        stop = threading.Event()

        def load(url: str) -> None:
            with httpx.Client(base_url=url, timeout=5) as client:
                index = 0
                while not stop.is_set():
                    user = users.fresh[index % len(users.fresh)]
                    index += 1
                    sent = time.monotonic()
                    response = client.post("/predict", json={"user_id": user})
                    answers.append(
                        (
                            sent,
                            response.status_code,
                            response.headers.get("Retry-After"),
                            response.json().get("kind", ""),
                        )
                    )
                    time.sleep(0.005)

        with churn_serve_process(environment) as (url, process):
            before = httpx.post(f"{url}/predict", json={"user_id": users.fresh[0]}).json()
            loader = threading.Thread(target=load, args=(url,), daemon=True)
            loader.start()
            time.sleep(1.0)
            killed_at = time.monotonic()
            nodes.kill(victim)  # SIGKILL: its replica is promoted after the node timeout
            wait_until(
                lambda: victim not in nodes.masters(),
                timeout_s=30,
                what="the cluster did not fail over",
                interval_s=0.2,
            )
            # Recovered: the killed master's users answer 200 again, without a restart.
            wait_until(
                lambda: _status(url, users.fresh[0]) == 200,
                timeout_s=30,
                what="serving did not recover by itself after the failover",
                interval_s=0.2,
            )
            recovered_at = time.monotonic()
            time.sleep(2.0)  # two more seconds of load after recovery
            stop.set()
            loader.join(timeout=10)
            after = httpx.post(f"{url}/predict", json={"user_id": users.fresh[0]}).json()
            stop.set()
    output = process.output  # type: ignore[attr-defined]

    statuses = {status for _, status, _, _ in answers}
    failures = [(t, status, retry, kind) for t, status, retry, kind in answers if status != 200]
    assert statuses <= {200, 503}, (statuses, output)
    assert failures, "the kill cost no request: the test did not hit the killed master"
    for _, _, retry, kind in failures:
        assert kind == "store_unavailable" and retry is not None and int(retry) >= 1
    # 503s only during the failover: after the kill, and not after recovery.
    assert all(killed_at <= t <= recovered_at for t, _, _, _ in failures)
    assert recovered_at - killed_at < timedelta(seconds=20).total_seconds()
    tail = [status for t, status, _, _ in answers if t > recovered_at + 0.5]
    assert tail and set(tail) == {200}
    assert after["churn_probability"] == before["churn_probability"]
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output, output
