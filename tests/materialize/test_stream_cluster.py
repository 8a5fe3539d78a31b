"""`churn stream` on the cluster profile: a real three-master Redis Cluster.

The stream, the users' hashes and the outbox are keys of the cluster, spread over its hash
slots. Expected as on one Redis (tests/materialize/test_stream.py): online and offline
states equal a replay of the stream, nothing left pending.

Known gap, pinned by ``xfail(strict=True)``: the worker talks to one Redis node
(materialize/stream/worker.py: ``resolve_target`` keeps the first node of the connection
string and ``StreamWorker`` builds a plain ``Redis`` client; one ``MULTI``/``EXEC`` under
``WATCH`` spans every user of a batch, which a cluster refuses across slots). When the
worker supports a cluster this test passes and the mark must go.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from materialize.stream.activity import publish_events
from materialize.stream.tiles import parse_event
from tests.utils.materialize import AppliedRepo
from tests.utils.redis_cluster import ClusterNodes, cluster_client
from tests.utils.stream import (
    activity,
    latest_offline,
    new_stream_key,
    online_tiles,
    replay,
    run_stream,
    stream_environment,
)


@pytest.fixture(scope="module")
def applied(
    tmp_path_factory: pytest.TempPathFactory, redis_cluster: ClusterNodes
) -> Iterator[AppliedRepo]:
    repo = AppliedRepo(
        tmp_path_factory.mktemp("stream-cluster"),
        profile="cluster",
        redis_cluster_nodes=redis_cluster.connection_string,
    )
    yield repo
    repo.close()


@pytest.mark.xfail(
    strict=True,
    reason="churn stream writes one Redis node, not a cluster (materialize/stream/worker.py)",
)
def test_the_stream_on_a_cluster_equals_a_replay(
    applied: AppliedRepo, redis_cluster: ClusterNodes
) -> None:
    repo = applied.fresh()
    users = list(range(1, 21))
    frame = activity(users, per_user=15)
    key = new_stream_key()
    client = cluster_client(redis_cluster.connection_string)
    try:
        publish_events(client, frame, key=key)
        env = {
            **stream_environment(repo, key),
            "CHURN_FEAST_PROFILE": "cluster",
            "CHURN_REDIS_CLUSTER_NODES": redis_cluster.connection_string,
        }

        result = run_stream(env, "--until-idle")

        assert result.returncode == 0, result.stderr[-2000:]
        events = [parse_event(fields) for _, fields in client.xrange(key)]
        expected = {u: (s.minutes, s.counts) for u, s in replay(events).items()}
        assert online_tiles(repo, users) == expected
        assert latest_offline(repo, users) == expected
        assert client.xpending(key, "workers")["pending"] == 0
    finally:
        client.delete(key)
        client.delete(f"{key}:dead")
        client.close()
