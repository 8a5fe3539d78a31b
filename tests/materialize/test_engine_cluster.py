"""FastEngine into a real Redis Cluster: Feast's bytes on every master, newer-wins, TTL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from core.feast_store import open_feature_store, run_feast_cli
from tests.utils.feast_repo import TestRepo
from tests.utils.materialize import (
    END,
    ISO,
    START,
    AppliedRepo,
    decode_redis,
    expected_online,
    feast_fields,
    materialize_range,
    online_values,
    set_key_ttl,
    use_engine,
    write_user_features,
)
from tests.utils.redis_cluster import ClusterNodes, cluster_hashes, cluster_ttls, private_cluster


@pytest.fixture(scope="module")
def applied(
    tmp_path_factory: pytest.TempPathFactory, redis_cluster: ClusterNodes
) -> Iterator[AppliedRepo]:
    """A repo applied on the cluster profile (our engine), reset per test."""
    repo = AppliedRepo(
        tmp_path_factory.mktemp("cluster"),
        profile="cluster",
        redis_cluster_nodes=redis_cluster.connection_string,
    )
    yield repo
    repo.close()


@pytest.fixture
def repo(applied: AppliedRepo) -> TestRepo:
    return applied.fresh()


@pytest.fixture
def offline(applied: AppliedRepo) -> pd.DataFrame:
    return applied.write_table(users=400)


def test_our_engine_writes_on_the_cluster_what_feasts_engine_writes(
    tmp_path: Path, repo: TestRepo, offline: pd.DataFrame, redis_cluster: ClusterNodes
) -> None:
    stock_repo = AppliedRepo(
        tmp_path, profile="cluster", redis_cluster_nodes=redis_cluster.connection_string
    )
    try:
        stock = stock_repo.fresh()
        use_engine(stock, "stock")
        write_user_features(stock.data.user_features_path, offline)
        open_feature_store(stock.feast).materialize(START, END)  # Feast's local engine
        use_engine(repo, "fast", chunk_rows=128, write_batch_rows=16, pipeline_batches=2)
        completed = run_feast_cli(repo.feast, "materialize", START.strftime(ISO), END.strftime(ISO))

        assert "chunk 4/4" in completed.stderr  # our engine ran, in several chunks
        ours = cluster_hashes(redis_cluster.connection_string, repo.project)
        theirs = cluster_hashes(redis_cluster.connection_string, stock.project)
        expected = expected_online(offline, start=START, end=END)
        assert len(ours) == len(expected) > 300
        # Byte for byte, field order aside; ours also keeps the row's created time.
        assert feast_fields(ours) == theirs
        assert decode_redis(ours) == expected
        # Feast's SDK reads the same values and event times from both.
        users = sorted(offline["user_id"].unique().tolist())
        assert online_values(repo, users) == online_values(stock, users)
        # The keys are spread over every master (the writes were grouped by slot).
        client = redis_cluster.client()
        try:
            per_master = [
                len(list(client.get_redis_connection(node).scan_iter(match=f"*{repo.project}")))
                for node in client.get_primaries()
            ]
        finally:
            client.close()
        assert len(per_master) == 3 and min(per_master) > 50 and sum(per_master) == len(ours)
    finally:
        stock_repo.close()


def test_older_values_never_replace_newer_ones_on_the_cluster(
    offline: pd.DataFrame, repo: TestRepo, redis_cluster: ClusterNodes
) -> None:
    nodes = redis_cluster.connection_string
    older_start, older_end = START - timedelta(days=30), END - timedelta(days=10)

    (first,) = materialize_range(repo, START, END)
    newer = cluster_hashes(nodes, repo.project)
    (again,) = materialize_range(repo, START, END)
    (older,) = materialize_range(repo, older_start, older_end)
    after = cluster_hashes(nodes, repo.project)

    assert first.engine == "fast" and first.written == len(newer)
    assert again.written == 0 and again.skipped == len(newer)  # a re-run changes nothing
    assert {key: after[key] for key in newer} == newer
    added = set(after) - set(newer)
    assert older.written == len(added) > 0  # users whose only rows are older
    assert decode_redis(after) == expected_online(offline, start=older_start, end=END)


def test_newer_values_replace_older_ones_on_the_cluster(
    offline: pd.DataFrame, repo: TestRepo, redis_cluster: ClusterNodes
) -> None:
    materialize_range(repo, START, END - timedelta(days=10))
    (newer,) = materialize_range(repo, START, END)

    assert newer.written > 0
    online = decode_redis(cluster_hashes(redis_cluster.connection_string, repo.project))
    assert online == expected_online(offline, start=START, end=END)
    assert online[2][1] == {"feature_1": 2.0, "feature_2": 20.0}  # tie: later `created` wins


def test_key_ttl_is_set_on_every_key_of_the_cluster(
    offline: pd.DataFrame, repo: TestRepo, redis_cluster: ClusterNodes
) -> None:
    set_key_ttl(repo, 3600)
    materialize_range(repo, START, END)

    ttls = cluster_ttls(redis_cluster.connection_string, repo.project)
    assert len(ttls) == len(expected_online(offline, start=START, end=END))
    assert all(3500 < ttl <= 3600 for ttl in ttls.values())


def test_a_run_during_a_master_failover_retries_and_writes_everything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with private_cluster(tmp_path / "cluster", replicas=1) as nodes:
        own = AppliedRepo(
            tmp_path / "repo", profile="cluster", redis_cluster_nodes=nodes.connection_string
        )
        repo = own.fresh()
        offline = own.write_table(users=300)
        use_engine(repo, "fast", chunk_rows=50, chunk_pause_seconds=1)
        victim = nodes.masters()[0]

        def kill_after_the_first_chunk() -> None:
            deadline = time.monotonic() + 120
            while not cluster_hashes(nodes.connection_string, repo.project):
                if time.monotonic() > deadline:
                    return
                time.sleep(0.1)
            nodes.kill(victim)  # mid-run: its slots have no master until a replica's promotion

        killer = threading.Thread(target=kill_after_the_first_chunk)
        killer.start()
        (stats,) = materialize_range(repo, START, END)
        killer.join()

        assert victim not in nodes.masters()  # the run waited for the failover
        assert "reloading the slot map and sending them again" in caplog.text
        online = decode_redis(cluster_hashes(nodes.connection_string, repo.project))
        assert stats.engine == "fast" and stats.written == len(online)
        assert online == expected_online(offline, start=START, end=END)
