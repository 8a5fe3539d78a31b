"""Reading a plan's features for a batch of users, within a bounded time.

- Redis online store (the production profile) or Redis Cluster (the cluster profile): one
  pipelined ``HMGET`` per user on an async client with timeouts (on a cluster, one
  pipeline per master, sent together), values decoded from Feast's protobufs, the
  on-demand views' own Python functions applied to the rows, everything on plain lists and
  one numpy matrix.
  Keys and fields come from the plan (Feast's layout, self-checked at plan time), at
  about a quarter of the SDK's cost per lookup.
- Any other online store, or a plan the fast path does not cover (pandas-mode or
  aggregating on-demand views, renamed join keys, a failed self-check): Feast's
  ``get_online_features`` in a worker thread, bounded by the same timeout.

Feast does not enforce a feature view's TTL online, so both paths compare each view's event
timestamp with the request time and report stale rows instead of serving them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from redis import asyncio as redis_asyncio
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    MasterDownError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from core.errors import OnlineStoreUnavailable
from core.feast_adapter.layout import RedisLayout
from core.feast_adapter.store import parse_redis_connection
from serving.features.plan import FeaturePlan, Transform, replace_fast_path, resolve_feature_plan
from serving.features.rows import (
    FeatureRows,
    RowProblem,
    decode_value,
    merge_rows,
    non_finite_problem,
    stale_problem,
    to_float_block,
    unknown_problem,
)

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)


class OnlineFeatures:
    """Reads feature rows for a plan from the online store, within a bounded time.

    Args:
        store: The open Feast feature store (registry and the SDK fallback).
        timeout_s: Bound on one lookup, connection included.
        redis_client: Async Redis client of the store's Redis, for the fast path; built
            from the store's connection string when omitted and the store is Redis.
        layout: Feast's Redis layout as the fast path reads it (default: the one the
            engine writes with); self-checked against Feast at each plan resolution.
    """

    def __init__(
        self,
        store: FeatureStore,
        *,
        timeout_s: float,
        redis_client: Any = None,
        layout: RedisLayout | None = None,
    ):
        self.store = store
        self._layout = layout or RedisLayout()
        self._timeout_s = timeout_s
        self._redis = redis_client
        if self._redis is None and getattr(store.config.online_store, "type", None) == "redis":
            self._redis = _redis_client_for(store, timeout_s)
        self._sdk_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="churn-feast")
        self._entity_key_version = int(store.config.entity_key_serialization_version)

    def resolve(
        self, *, service_name: str, features: Sequence[str], project: str | None
    ) -> FeaturePlan:
        """Resolve a feature service once (blocking: call from a worker thread)."""
        plan = resolve_feature_plan(
            self.store,
            service_name=service_name,
            features=features,
            project=project,
            layout=self._layout,
        )
        if plan.fast_path and self._redis is None:
            return replace_fast_path(plan, "no async Redis client")
        return plan

    async def read(
        self, plan: FeaturePlan, user_ids: Sequence[int], request_times: Sequence[datetime]
    ) -> FeatureRows:
        """Features of ``user_ids`` at their request times.

        Raises:
            OnlineStoreUnavailable: The store did not answer within the timeout.
        """
        try:
            async with asyncio.timeout(self._timeout_s):
                if plan.fast_path:
                    return await self._read_redis(plan, user_ids, request_times)
                return await asyncio.get_running_loop().run_in_executor(
                    self._sdk_executor, self._read_sdk, plan, user_ids, request_times
                )
        except TimeoutError as error:
            raise OnlineStoreUnavailable(
                f"the online store did not answer within {self._timeout_s * 1000:.0f} ms"
            ) from error
        except OSError as error:
            raise OnlineStoreUnavailable("the online store is unreachable") from error
        except Exception as error:
            if _is_connection_error(error):
                raise OnlineStoreUnavailable("the online store is unreachable") from error
            raise

    async def ping(self) -> str | None:
        """None when the online store answers, else what went wrong (no internal text).

        The underlying error (host, port, message) is logged, not returned.
        """
        if self._redis is None:
            return None  # embedded stores (SQLite) are files: reachable when opened
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._redis.ping()
        except TimeoutError:
            return f"no answer within {self._timeout_s * 1000:.0f} ms"
        except Exception as error:
            if _is_connection_error(error) or isinstance(error, OSError):
                logger.warning("online store ping failed: %s", error)
                return "unreachable"
            raise
        return None

    async def close(self) -> None:
        """Release connections and threads."""
        if self._redis is not None:
            await self._redis.aclose()
        self._sdk_executor.shutdown(wait=False, cancel_futures=True)

    async def _read_redis(
        self, plan: FeaturePlan, user_ids: Sequence[int], request_times: Sequence[datetime]
    ) -> FeatureRows:
        keys = [
            self._layout.int64_redis_key(
                plan.join_key,
                user_id,
                project=plan.project,
                version=self._entity_key_version,
            )
            for user_id in user_ids
        ]
        pipe = self._redis.pipeline(transaction=False)
        for view in plan.views:
            for key in keys:
                pipe.hmget(key, view.fields)
        replies = await pipe.execute()
        return _rows_from_replies(plan, user_ids, request_times, replies)

    def _read_sdk(
        self, plan: FeaturePlan, user_ids: Sequence[int], request_times: Sequence[datetime]
    ) -> FeatureRows:
        rows: list[dict[str, Any]] = []
        for user_id, when in zip(user_ids, request_times, strict=True):
            row: dict[str, Any] = {plan.join_key: user_id}
            if plan.request_field:
                row[plan.request_field] = when
            rows.append(row)
        try:
            values = self._sdk_values(plan, rows)
        except Exception as error:
            if _is_connection_error(error) or isinstance(error, OSError):
                raise
            if len(rows) > 1:  # one user's row broke the lookup: find it, spare the others
                return merge_rows(
                    [
                        self._read_sdk(plan, [user_id], [when])
                        for user_id, when in zip(user_ids, request_times, strict=True)
                    ]
                )
            problem = RowProblem(
                "feature_transform_failed",
                f"the Feast lookup failed for user {user_ids[0]}: {type(error).__name__}",
            )
            return FeatureRows(matrix=np.full((1, len(plan.features)), np.nan), problems=[problem])
        return _rows_from_sdk(plan, user_ids, request_times, values)

    def _sdk_values(self, plan: FeaturePlan, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
        response = self.store.get_online_features(features=plan.service, entity_rows=rows)
        return dict(response.to_dict(include_event_timestamps=True))


def _rows_from_sdk(
    plan: FeaturePlan,
    user_ids: Sequence[int],
    request_times: Sequence[datetime],
    values: dict[str, list[Any]],
) -> FeatureRows:
    """Rows from the SDK's answer: presence and TTL per view, then value checks."""
    matrix, invalid = to_float_block([values[name] for name in plan.features], plan.features)
    # The SDK reports each batch feature's event time (0 when absent): the first
    # feature of each view returned stands for the view.
    stamped = [
        (view, values[f"{view.features[0]}__ts"])
        for view in plan.views
        if view.features and f"{view.features[0]}__ts" in values
    ]
    problems: list[RowProblem | None] = []
    for index, (user_id, when) in enumerate(zip(user_ids, request_times, strict=True)):
        problem: RowProblem | None = None
        if stamped and not any(stamps[index] for _, stamps in stamped):
            problem = unknown_problem(user_id)
        for view, stamps in stamped:
            if problem is None and stamps[index] and view.ttl is not None:
                age = when - datetime.fromtimestamp(stamps[index], tz=when.tzinfo)
                if age > view.ttl:
                    problem = stale_problem(user_id, view.name, age, view.ttl)
        if problem is None and index in invalid:
            problem = RowProblem(
                "invalid_feature_value",
                f"user {user_id} has a non-numeric value for {invalid[index]}",
            )
        problems.append(problem or non_finite_problem(user_id, plan.features, matrix[index]))
    return FeatureRows(matrix=matrix, problems=problems)


def _rows_from_replies(
    plan: FeaturePlan,
    user_ids: Sequence[int],
    request_times: Sequence[datetime],
    replies: list[list[bytes | None]],
) -> FeatureRows:
    """Decode HMGET replies, check presence and TTL, run the on-demand views."""
    count = len(user_ids)
    problems: list[RowProblem | None] = [None] * count
    # As on the SDK path: a user is unknown when no view of the plan has a row for it; a
    # view without one gives None values (the on-demand views and the missing-value policy
    # decide), e.g. user_activity for a user the stream has never seen.
    present = [not plan.views] * count
    # values[v][f][row]: decoded python value of feature f of view v
    values: list[list[list[Any]]] = []
    for view_index, view in enumerate(plan.views):
        columns: list[list[Any]] = [[None] * count for _ in view.features]
        for row in range(count):
            reply = replies[view_index * count + row]
            stamp = reply[-1]
            if stamp is None:
                continue
            present[row] = True
            if view.ttl is not None:
                written = Timestamp.FromString(stamp)
                age = request_times[row] - written.ToDatetime(tzinfo=request_times[row].tzinfo)
                if age > view.ttl and problems[row] is None:
                    problems[row] = stale_problem(user_ids[row], view.name, age, view.ttl)
            for position, raw in enumerate(reply[:-1]):
                if raw:
                    columns[position][row] = decode_value(raw)
        values.append(columns)
    for row in range(count):
        if not present[row]:
            problems[row] = unknown_problem(user_ids[row])

    ok_rows = [row for row in range(count) if problems[row] is None]
    outputs: dict[str, list[Any]] = {}
    if ok_rows and plan.transforms:
        inputs: dict[str, list[Any]] = {plan.join_key: [user_ids[r] for r in ok_rows]}
        if plan.request_field:
            inputs[plan.request_field] = [request_times[r] for r in ok_rows]
        for view, columns in zip(plan.views, values, strict=True):
            for name, column in zip(view.features, columns, strict=True):
                inputs[name] = [column[r] for r in ok_rows]
        outputs, failed = _run_transforms(plan.transforms, inputs, len(ok_rows))
        for position, (transform, error) in failed.items():
            index = ok_rows[position]
            problems[index] = RowProblem(
                "feature_transform_failed",
                f"on-demand view {transform} failed for user {user_ids[index]}: "
                f"{type(error).__name__}",
            )

    matrix = np.full((count, len(plan.features)), np.nan)
    if ok_rows:
        columns = [
            [values[source[1]][source[2]][r] for r in ok_rows]
            if source[0] == "view"
            else outputs[source[1]]
            for source in plan.columns
        ]
        block, invalid = to_float_block(columns, plan.features)
        matrix[ok_rows] = block
        for position, feature in invalid.items():
            index = ok_rows[position]
            if problems[index] is None:
                problems[index] = RowProblem(
                    "invalid_feature_value",
                    f"user {user_ids[index]} has a non-numeric value for {feature}",
                )
        # Missing values (NaN) are the missing-value policy's to decide; infinities are not.
        for unusable in np.flatnonzero(np.isinf(block).any(axis=1)):
            index = ok_rows[int(unusable)]
            if problems[index] is None:
                problems[index] = non_finite_problem(user_ids[index], plan.features, matrix[index])
    return FeatureRows(matrix=matrix, problems=problems)


def _run_transforms(
    transforms: Sequence[Transform], inputs: dict[str, list[Any]], rows: int
) -> tuple[dict[str, list[Any]], dict[int, tuple[str, Exception]]]:
    """Run the on-demand views on every row; a failing row is isolated, not the batch.

    The batch call is tried first (one call for all rows). If it raises, each row is run
    alone, so a value that breaks the function (a division by zero, a wrong type) is that
    user's problem; rows that fail get NaN outputs and are reported by position.
    """
    outputs: dict[str, list[Any]] = {}
    failed: dict[int, tuple[str, Exception]] = {}
    for transform in transforms:
        columns = {name: [None] * rows for name in transform.outputs}
        if not transform.singleton:
            try:
                result = transform.function(inputs)
                for name in transform.outputs:
                    column = list(result[name])
                    if len(column) != rows:
                        raise ValueError(f"{name}: {len(column)} values for {rows} rows")
                    columns[name] = column
                outputs.update(columns)
                continue
            except Exception:  # isolate the row(s) below
                pass
        for row in range(rows):
            single = {key: value[row] for key, value in inputs.items()}
            try:
                if transform.singleton:
                    result = transform.function(single)
                    for name in transform.outputs:
                        columns[name][row] = result[name]
                else:
                    result = transform.function({k: [v] for k, v in single.items()})
                    for name in transform.outputs:
                        [columns[name][row]] = list(result[name])
            except Exception as error:
                failed.setdefault(row, (transform.name, error))
        outputs.update(columns)
    return outputs, failed


# What a Redis Cluster answers while a failed master's replica is being promoted (the
# cluster is down, a slot has no master yet, a slot is moving): the store is unavailable
# for now, as with a lost connection.
_UNAVAILABLE_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    ClusterError,
    MasterDownError,
    SlotNotCoveredError,
    TryAgainError,
)


def _is_connection_error(error: Exception) -> bool:
    return isinstance(error, _UNAVAILABLE_ERRORS)


def _redis_client_for(store: FeatureStore, timeout_s: float) -> Any:
    """An async client for the store's Redis, with timeouts and one quick retry.

    The connection string is parsed by Feast's own parser so both read the same server;
    the single retry lets the first request after a Redis restart reconnect instead of
    failing on a dead pooled connection. On a Redis Cluster (``redis_type:
    redis_cluster``) the client is redis-py's async ``RedisCluster``: its pipeline sends
    each master the ``HMGET`` of the slots it owns, all masters at once, and after a
    failover it reloads the slot map by itself (the requests in between fail fast and are
    answered 503).
    """
    config = store.config.online_store
    nodes, params = parse_redis_connection(config.connection_string)
    params.update(
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), retries=1),
    )
    if getattr(config.redis_type, "value", config.redis_type) == "redis_cluster":
        params.pop("db", None)  # a cluster has database 0 only
        return redis_asyncio.RedisCluster(
            startup_nodes=[
                redis_asyncio.cluster.ClusterNode(node["host"], int(node["port"])) for node in nodes
            ],
            **params,
        )
    params.update(host=nodes[0]["host"], port=int(nodes[0]["port"]))
    return redis_asyncio.Redis(**params)
