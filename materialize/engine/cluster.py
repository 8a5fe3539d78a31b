"""Writing into a Redis Cluster: the single-Redis script, one call per hash slot.

A script call may only touch keys of one hash slot, and Feast's keys (serialized entity key
+ project, no hash tag) spread over all 16,384. So each chunk is sorted by slot, every run of
one slot becomes script calls of at most ``batch_rows`` keys, and the calls of the slots a
master owns go to that master in pipelines (redis-py's per-node client of the
``RedisCluster``), one thread per master so the masters work at the same time. Newer-wins,
the created-time tie-break and the key TTL are the single-Redis script's, unchanged.

A slot that moved (resharding) or a master that died and whose replica took over answers
``MOVED``, ``CLUSTERDOWN``, ``TRYAGAIN`` or a connection error: the writer reloads the slot
map and sends the failed calls again, for up to ``retry_seconds``. Re-sending is safe: the
script rewrites nothing that is as new as what is stored.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Any

import numpy as np
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from materialize.engine.writers import RedisWriter

logger = logging.getLogger(__name__)

# Errors after which the slot map is reloaded and the calls sent again.
_RETRIED = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ReadOnlyError,
)


def slot_order(keys: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The hash slot of each key and the stable order that sorts the keys by slot."""
    slots = np.fromiter((key_slot(key) for key in keys), dtype=np.int32, count=len(keys))
    return slots, np.argsort(slots, kind="stable")


class ClusterRedisWriter(RedisWriter):
    """Feast's Redis layout on a Redis Cluster, newer-wins and TTL as on one Redis.

    Args:
        client: Feast's own ``RedisCluster`` client (nodes, password and TLS are the
            profile's).
        retry_seconds: How long a failed call is retried (slot map reloaded each time)
            before the run fails: longer than the cluster's failover time.
        **options: Those of :class:`RedisWriter`.
    """

    def __init__(self, client: RedisCluster, *, retry_seconds: float = 30.0, **options: Any):
        super().__init__(client, **options)  # type: ignore[arg-type]  # same commands used
        self._cluster = client
        self._retry_seconds = retry_seconds
        self._count_lock = threading.Lock()

    def _apply(
        self, keys: list[bytes], matrix: np.ndarray, layout: list[Any], written: list[int]
    ) -> None:
        """Send the rows grouped by slot, one pipeline thread per master; retry failures."""
        slots, order = slot_order(keys)
        keys = [keys[index] for index in order]
        slots = slots[order]
        matrix = np.ascontiguousarray(matrix[order])
        row_width = matrix.shape[1]
        blob = matrix.tobytes()
        # Script calls (first row, end row), each inside one slot, at most batch_rows long.
        bounds = [0, *(np.flatnonzero(np.diff(slots)) + 1).tolist(), len(keys)]
        calls = [
            (low, min(high, low + self._batch_rows))
            for start, high in pairwise(bounds)
            for low in range(start, high, self._batch_rows)
        ]
        deadline = time.monotonic() + self._retry_seconds
        while calls:
            by_node: dict[str, tuple[ClusterNode, list[tuple[int, int]]]] = {}
            for call in calls:
                node = self._cluster.nodes_manager.get_node_from_slot(int(slots[call[0]]))
                by_node.setdefault(node.name, (node, []))[1].append(call)

            def send(
                node: ClusterNode, node_calls: list[tuple[int, int]]
            ) -> tuple[list[tuple[int, int]], Exception | None]:
                return self._send_to(node, node_calls, keys, blob, row_width, layout, written)

            with ThreadPoolExecutor(
                max_workers=len(by_node), thread_name_prefix="materialize-cluster"
            ) as pool:
                outcomes = list(pool.map(lambda item: send(*item), by_node.values()))
            calls = [call for failed, _ in outcomes for call in failed]
            errors = [error for _, error in outcomes if error is not None]
            if not calls:
                return
            if time.monotonic() > deadline:
                raise errors[0]
            logger.warning(
                "Redis Cluster at %s: %d script calls failed (%s); reloading the slot map "
                "and sending them again",
                self._label,
                len(calls),
                errors[0],
            )
            time.sleep(0.5)
            try:
                self._cluster.nodes_manager.initialize()
            except redis.RedisError as error:  # the cluster is still electing: wait more
                logger.warning("reloading the slot map failed: %s", error)

    def _send_to(
        self,
        node: ClusterNode,
        calls: list[tuple[int, int]],
        keys: list[bytes],
        blob: bytes,
        row_width: int,
        layout: list[Any],
        written: list[int],
    ) -> tuple[list[tuple[int, int]], Exception | None]:
        """Send one master's calls in pipelines of about ``batch_rows * pipeline_batches``
        rows; return the calls not applied (from the first failed pipeline on)."""
        client = self._cluster.get_redis_connection(node)
        budget = self._batch_rows * self._pipeline_batches
        start = 0
        while start < len(calls):
            stop, rows = start, 0
            while stop < len(calls) and rows < budget:
                rows += calls[stop][1] - calls[stop][0]
                stop += 1
            pipe = client.pipeline(transaction=False)
            for low, high in calls[start:stop]:
                args = self.script_args(blob[low * row_width : high * row_width], layout)
                self._script(keys=keys[low:high], args=args, client=pipe)
            try:
                replies = pipe.execute()
            except _RETRIED as error:
                return calls[start:], error
            with self._count_lock:  # one count, added to by a thread per master
                written[0] += sum(int(count) for count in replies)
            start = stop
        return [], None
