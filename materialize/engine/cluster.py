"""Writing into a Redis Cluster: the single-Redis script, called on each master for its keys.

Feast's keys (serialized entity key + project, no hash tag) spread over all 16,384 hash
slots, and a script's declared keys must share one slot: per slot, a 250,000-row chunk
gives about 15 keys per call. Instead each chunk is grouped by the master that owns each
key's slot, and the script (flag ``allow-cross-slot-keys``, Redis 7+) receives that
master's keys in its arguments, ``batch_rows`` per call, pipelined (redis-py's per-node
client of the ``RedisCluster``), one thread per master so the masters work at the same
time. The server still checks every key it touches is served by that master (a moved slot
fails the call, which is then retried). Newer-wins, the created-time tie-break and the key
TTL are the single-Redis script's, unchanged.

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
from typing import Any

import numpy as np
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from materialize.engine.writers import _WRITE_NEWER_LUA, RedisWriter

logger = logging.getLogger(__name__)

# The single-Redis script, its keys taken from its arguments: ARGV[1] is the key count,
# then the keys, then the single-Redis script's own arguments.
_WRITE_NEWER_ON_NODE_LUA = (
    "#!lua flags=allow-cross-slot-keys\n"
    "local count = tonumber(ARGV[1])\n"
    "local KEYS, rest = {}, {}\n"
    "for k = 1, count do KEYS[k] = ARGV[k + 1] end\n"
    "for j = count + 2, #ARGV do rest[#rest + 1] = ARGV[j] end\n"
    "local ARGV = rest\n" + _WRITE_NEWER_LUA
)
# What a master answers when a key's slot moved to another master between our reading of
# the slot map and the call.
_NON_LOCAL_KEY = "non local key"

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


def key_slots(keys: list[bytes]) -> np.ndarray:
    """The hash slot of each key (CRC16 as the server computes it, hash tags included)."""
    return np.fromiter((key_slot(key) for key in keys), dtype=np.int32, count=len(keys))


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
        self._node_script = self._client.register_script(_WRITE_NEWER_ON_NODE_LUA)

    def _owners(self) -> tuple[list[ClusterNode], np.ndarray]:
        """The masters, and the index in that list of the master of each of the 16,384 slots."""
        masters: dict[str, int] = {}
        nodes: list[ClusterNode] = []
        owner = np.empty(16_384, dtype=np.int32)
        for slot in range(16_384):
            node = self._cluster.nodes_manager.get_node_from_slot(slot)
            if node.name not in masters:
                masters[node.name] = len(nodes)
                nodes.append(node)
            owner[slot] = masters[node.name]
        return nodes, owner

    def _apply(
        self, keys: list[bytes], matrix: np.ndarray, layout: list[Any], written: list[int]
    ) -> None:
        """Send each master its rows, one pipeline thread per master; retry failures."""
        slots = key_slots(keys)
        pending = np.arange(len(keys))
        deadline = time.monotonic() + self._retry_seconds
        while pending.size:
            nodes, owner = self._owners()
            node_of_row = owner[slots[pending]]
            work = [(node, pending[node_of_row == index]) for index, node in enumerate(nodes)]
            work = [(node, rows) for node, rows in work if rows.size]
            with ThreadPoolExecutor(
                max_workers=len(work), thread_name_prefix="materialize-cluster"
            ) as pool:
                outcomes = list(
                    pool.map(
                        lambda item: self._send_to(item[0], item[1], keys, matrix, layout, written),
                        work,
                    )
                )
            failed = [rows for rows, _ in outcomes if rows.size]
            errors = [error for _, error in outcomes if error is not None]
            if not failed:
                return
            pending = np.concatenate(failed)
            if time.monotonic() > deadline:
                raise errors[0]
            logger.warning(
                "Redis Cluster at %s: %d rows not written (%s); reloading the slot map "
                "and sending them again",
                self._label,
                pending.size,
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
        rows: np.ndarray,
        keys: list[bytes],
        matrix: np.ndarray,
        layout: list[Any],
        written: list[int],
    ) -> tuple[np.ndarray, Exception | None]:
        """Send one master its rows: script calls of ``batch_rows``, ``pipeline_batches``
        per round trip; return the rows not applied (from the first failed pipeline on)."""
        client = self._cluster.get_redis_connection(node)
        step = self._batch_rows * self._pipeline_batches
        for start in range(0, rows.size, step):
            pipe = client.pipeline(transaction=False)
            for low in range(start, min(rows.size, start + step), self._batch_rows):
                call = rows[low : low + self._batch_rows]
                call_keys = [keys[index] for index in call.tolist()]
                args = self.script_args(matrix[call].tobytes(), layout)
                self._node_script(keys=[], args=[len(call_keys), *call_keys, *args], client=pipe)
            try:
                replies = pipe.execute()
            except _RETRIED as error:
                return rows[start:], error
            except redis.ResponseError as error:
                if _NON_LOCAL_KEY not in str(error):
                    raise
                return rows[start:], error
            with self._count_lock:  # one count, added to by a thread per master
                written[0] += sum(int(count) for count in replies)
        return rows[:0], None
