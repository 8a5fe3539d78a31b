"""``churn stream``: activity events from a Redis Stream into the ``user_activity`` view.

Per batch of entries (``XREADGROUP`` in a consumer group):

1. parse; malformed entries are bound for the dead-letter stream with their reason;
2. ``WATCH`` the users' online hashes, read their states (tiles, stamp, bookkeeping);
3. apply the events (:func:`materialize.stream.tiles.apply_events`: idempotent by
   ``event_id``, late events refused);
4. one ``MULTI``/``EXEC``: the new online values in Feast's layout (newer-wins by
   construction: stamps increase per user; ``EXPIRE`` as the store's ``key_ttl_seconds``),
   the bookkeeping, the offline rows into an outbox hash, the dead letters. A concurrent
   writer of one of the users aborts the transaction and the batch is recomputed.

Every ``flush_interval_s`` the outbox is written as one Parquet part into the push source's
batch source directory, its outbox entries deleted, and the batches' entries acknowledged
(``XACK``): at-least-once delivery, and a redelivered entry finds its event id already
seen. After a crash the outbox is flushed first, then the worker's own pending entries are
read again, then idle entries of other consumers are claimed.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from redis import Redis
from redis.exceptions import ResponseError, WatchError

from core.errors import ConfigurationError
from core.feast_adapter.layout import RedisLayout
from core.feast_adapter.store import parse_redis_connection
from materialize.stream.settings import StreamSettings
from materialize.stream.tiles import Applied, Event, MalformedEvent, UserState, apply_events

if TYPE_CHECKING:
    from core.settings import FeastSettings

logger = logging.getLogger(__name__)

TILE_FEATURES = ("tile_minutes", "tile_counts")
OFFLINE_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("event_timestamp", pa.timestamp("us", tz="UTC")),
        ("tile_minutes", pa.list_(pa.int64())),
        ("tile_counts", pa.list_(pa.int64())),
    ]
)


@dataclass(frozen=True)
class StreamTarget:
    """Where the worker writes, read from the Feast registry through the push source."""

    project: str
    view: str
    join_key: str
    offline_dir: Path
    key_version: int
    key_ttl_seconds: int | None
    redis_arguments: dict[str, Any]


def resolve_target(feast: FeastSettings, push_source: str) -> StreamTarget:
    """The feature view fed by ``push_source``, its batch directory and the online store.

    Raises:
        ConfigurationError: No such push source, not exactly one view fed by it, the view
            lacks the tile features, or the online store is not Redis.
    """
    from core.feast_store import feature_store_session

    with feature_store_session(feast) as store:
        views = [
            view
            for view in store.list_feature_views()
            if getattr(view.stream_source, "name", None) == push_source
        ]
        if len(views) != 1:
            raise ConfigurationError(
                f"push source {push_source!r} feeds {len(views)} feature views; expected one"
            )
        [view] = views
        missing = [name for name in TILE_FEATURES if name not in {f.name for f in view.features}]
        if missing or len(view.entity_columns) != 1:
            raise ConfigurationError(
                f"feature view {view.name!r} needs one join key and {', '.join(TILE_FEATURES)}"
            )
        online = store.config.online_store
        if getattr(online, "type", None) != "redis":
            raise ConfigurationError(
                "churn stream needs a Redis online store (this profile's is not)"
            )
        batch_source: Any = view.batch_source
        path = Path(batch_source.path)
        if not path.is_absolute():
            path = Path(store.repo_path) / path
        nodes, params = parse_redis_connection(online.connection_string)
        params.update(host=nodes[0]["host"], port=int(nodes[0]["port"]))
        return StreamTarget(
            project=store.project,
            view=RedisLayout().view_name(
                view,
                versioning=bool(
                    getattr(store.config.registry, "enable_online_feature_view_versioning", False)
                ),
            ),
            join_key=view.entity_columns[0].name,
            offline_dir=path,
            key_version=int(store.config.entity_key_serialization_version),
            key_ttl_seconds=getattr(online, "key_ttl_seconds", None) or None,
            redis_arguments=params,
        )


def prepare_push_directories(feast: FeastSettings) -> list[Path]:
    """Create the local part directories of the repo's push-fed views (after apply).

    A point-in-time join over a view whose directory holds no part fails in DuckDB, so
    each gets an empty part with the schema before any event is streamed.
    """
    from core.feast_store import feature_store_session

    created = []
    with feature_store_session(feast) as store:
        for view in store.list_feature_views():
            source: Any = view.batch_source
            path = str(getattr(source, "path", "") or "")
            if view.stream_source is None or not path or "://" in path:
                continue
            if set(TILE_FEATURES) <= {f.name for f in view.features}:
                directory = Path(path)
                ensure_offline_dir(directory)
                created.append(directory)
    return created


def ensure_offline_dir(directory: Path) -> None:
    """Create the batch source directory with an empty part, so readers find its schema."""
    directory.mkdir(parents=True, exist_ok=True)
    if not any(directory.glob("*.parquet")):
        _write_part(directory, "part-0-schema", OFFLINE_SCHEMA.empty_table())


def _write_part(directory: Path, name: str, table: pa.Table) -> None:
    """Write a part atomically: a hidden file outside the directory, then a rename."""
    temporary = directory.parent / f".{directory.name}.{name}.{os.getpid()}.tmp"
    pq.write_table(table, temporary)
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, directory / f"{name}.parquet")


@dataclass(frozen=True)
class StreamRequest:
    """What ``churn stream`` is asked to do.

    Attributes:
        feast: The Feast repo and profile.
        stream: Stream settings.
        until_idle: Stop once the stream is drained (nothing new, nothing pending).
        max_seconds: Stop after this long (None: run until stopped or idle).
    """

    feast: FeastSettings
    stream: StreamSettings
    until_idle: bool = False
    max_seconds: float | None = None


@dataclass
class StreamOutcome:
    """What the worker did."""

    entries: int = 0
    applied: int = 0
    duplicates: int = 0
    late: int = 0
    dead_lettered: int = 0
    online_writes: int = 0
    offline_rows: int = 0
    parts: int = 0
    batches: int = 0
    retries: int = 0
    claimed: int = 0
    lag_ms: list[float] = field(default_factory=list)  # entry id time -> committed online

    def lag_percentiles(self) -> tuple[float, float, float]:
        """p50, p99 and max of arrival-to-online per batch (its oldest entry), milliseconds."""
        if not self.lag_ms:
            return (0.0, 0.0, 0.0)
        ordered = sorted(self.lag_ms)
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
        return (pick(0.5), pick(0.99), ordered[-1])

    def summary(self) -> str:
        """Lines for the terminal: counts, then arrival-to-online latency."""
        p50, p99, worst = self.lag_percentiles()
        return (
            self._counts()
            + f"\n{self.batches} batches, arrival to online (oldest entry of each batch): "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms"
        )

    def _counts(self) -> str:
        return (
            f"{self.entries} entries: {self.applied} applied, {self.duplicates} duplicates, "
            f"{self.late} late (dropped), {self.dead_lettered} dead-lettered; "
            f"{self.online_writes} online writes, {self.offline_rows} offline rows in "
            f"{self.parts} parts"
        )


class StreamWorker:
    """One consumer of the group (see the module docstring for the protocol).

    Args:
        target: Where to write (:func:`resolve_target`).
        settings: Stream settings.
        client: Redis client of the stream and the online store (built from the target
            when omitted).
        layout: Feast's Redis layout.
    """

    def __init__(
        self,
        target: StreamTarget,
        settings: StreamSettings,
        *,
        client: Redis | None = None,
        layout: RedisLayout | None = None,
    ) -> None:
        self.target = target
        self.settings = settings
        # Any: redis-py's stubs mix the sync and async return types.
        self.redis: Any = client or Redis(**target.redis_arguments)
        self.layout = layout or RedisLayout()
        self.outcome = StreamOutcome()
        self.stopping = threading.Event()
        self._fields = tuple(self.layout.feature_field(target.view, n) for n in TILE_FEATURES)
        self._ts_field = self.layout.timestamp_field(target.view)
        self._book_field = f"_stream:{target.view}".encode()
        self._outbox = f"{settings.key}:outbox:{target.project}:{target.view}"
        self._unflushed: list[str] = []  # outbox entries committed by this worker
        self._unacked: list[bytes] = []
        self._lateness = round(settings.allowed_lateness_s * 1_000_000)
        from feast.protos.feast.types.Value_pb2 import Int64List, Value
        from google.protobuf.timestamp_pb2 import Timestamp

        self._value, self._int64_list, self._timestamp = Value, Int64List, Timestamp

    # --- the loop -------------------------------------------------------------------------

    def run(self, *, until_idle: bool = False, max_seconds: float | None = None) -> StreamOutcome:
        """Consume until stopped (``stopping``), idle (``until_idle``) or ``max_seconds``."""
        self._create_group()
        ensure_offline_dir(self.target.offline_dir)
        self.flush(everything=True)  # what a crashed worker committed but did not write
        started = last_flush = time.monotonic()
        reading_own_pending = True
        pending_cursor = "0"
        while not self.stopping.is_set():
            if max_seconds is not None and time.monotonic() - started > max_seconds:
                break
            entries = []
            if reading_own_pending:
                entries = self._read(pending_cursor, block=None)
                if entries:
                    pending_cursor = entries[-1][0].decode()
                else:
                    reading_own_pending = False
                    entries = self._claim()
            if not entries and not reading_own_pending:
                entries = self._read(">", block=self.settings.block_ms) or self._claim()
            if entries:
                self.process(entries)
            if time.monotonic() - last_flush >= self.settings.flush_interval_s:
                self.flush()
                last_flush = time.monotonic()
            if not entries and until_idle and not reading_own_pending:
                break
        self.flush(everything=until_idle)
        return self.outcome

    def _create_group(self) -> None:
        try:
            self.redis.xgroup_create(self.settings.key, self.settings.group, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def _read(self, start: str, *, block: int | None) -> list[tuple[bytes, dict[bytes, bytes]]]:
        reply = self.redis.xreadgroup(
            self.settings.group,
            self.settings.consumer,
            {self.settings.key: start},
            count=self.settings.batch_size,
            block=block,
        )
        if not reply:
            return []
        entries = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
        # Own pending entries already acknowledged come back with no fields.
        return [(entry_id, fields) for entry_id, fields in entries if fields]

    def _claim(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        if not self.settings.claim_idle_ms:
            return []
        reply = self.redis.xautoclaim(
            self.settings.key,
            self.settings.group,
            self.settings.consumer,
            min_idle_time=self.settings.claim_idle_ms,
            start_id="0-0",
            count=self.settings.batch_size,
        )
        entries = [(entry_id, fields) for entry_id, fields in reply[1] if fields]
        if entries:
            self.outcome.claimed += len(entries)
            logger.info("took over %d idle entries of other consumers", len(entries))
        return entries

    # --- one batch ------------------------------------------------------------------------

    def process(self, entries: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Apply a batch of entries online and to the outbox, in one transaction."""
        by_user: dict[int, list[Event]] = defaultdict(list)
        dead: list[tuple[bytes, dict[bytes, bytes], str]] = []
        for entry_id, fields in entries:
            try:
                event = _parse(fields)
            except MalformedEvent as error:
                dead.append((entry_id, fields, str(error)))
                continue
            by_user[event.user_id].append(event)
        users = list(by_user)
        keys = [
            self.layout.int64_redis_key(
                self.target.join_key,
                user,
                project=self.target.project,
                version=self.target.key_version,
            )
            for user in users
        ]
        batch_id = f"{entries[0][0].decode()}-{uuid.uuid4().hex[:8]}"
        while True:
            try:
                results = self._commit(batch_id, users, keys, by_user, dead)
                break
            except WatchError:
                self.outcome.retries += 1
        committed = time.time()
        # Arrival (the entry id's milliseconds) to servable, for the oldest entry.
        self.outcome.lag_ms.append(committed * 1000 - int(entries[0][0].split(b"-")[0]))
        # One observation per batch, its oldest event: per-event observations cost more
        # than the rest of the event's processing.
        if by_user:
            oldest = min(events[0].micros for events in by_user.values())
            observe_freshness([committed - oldest / 1e6])
        self.outcome.batches += 1
        self.outcome.entries += len(entries)
        self.outcome.dead_lettered += len(dead)
        for user, applied in zip(users, results, strict=True):
            self.outcome.applied += applied.applied
            self.outcome.duplicates += applied.duplicates
            self.outcome.late += len(applied.late)
            for event in applied.late:
                logger.warning(
                    "late event %s of user %d dropped (more than %.0f s before the user's "
                    "newest event)",
                    event.event_id,
                    user,
                    self.settings.allowed_lateness_s,
                )
        for _, _, reason in dead:
            logger.warning("malformed event sent to %s: %s", self.settings.dead_letter_key, reason)
        self._unacked.extend(entry_id for entry_id, _ in entries)

    def _commit(
        self,
        batch_id: str,
        users: list[int],
        keys: list[bytes],
        by_user: dict[int, list[Event]],
        dead: list[tuple[bytes, dict[bytes, bytes], str]],
    ) -> list[Applied]:
        with self.redis.pipeline(transaction=True) as transaction:
            if keys:
                transaction.watch(*keys)
            reads = self.redis.pipeline(transaction=False)
            for key in keys:
                reads.hmget(key, [*self._fields, self._ts_field, self._book_field])
            stored = reads.execute() if keys else []
            results: list[Applied] = []
            rows_user: list[int] = []
            rows_stamp: list[int] = []
            rows_minutes: list[list[int]] = []
            rows_counts: list[list[int]] = []
            transaction.multi()
            for user, key, reply in zip(users, keys, stored, strict=True):
                state = self._restore(reply)
                applied = apply_events(state, by_user[user], lateness_micros=self._lateness)
                results.append(applied)
                if not applied.rows:
                    continue
                for stamp, minutes, counts in applied.rows:
                    rows_user.append(user)
                    rows_stamp.append(stamp)
                    rows_minutes.append(minutes)
                    rows_counts.append(counts)
                transaction.hset(key, mapping=self._online_values(state))
                if self.target.key_ttl_seconds:
                    transaction.expire(key, self.target.key_ttl_seconds)
            if rows_user:
                table = pa.table(
                    [
                        pa.array(rows_user, pa.int64()),
                        pa.array(rows_stamp, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                        pa.array(rows_minutes, pa.list_(pa.int64())),
                        pa.array(rows_counts, pa.list_(pa.int64())),
                    ],
                    schema=OFFLINE_SCHEMA,
                )
                transaction.hset(self._outbox, batch_id, _ipc_bytes(table))
            for entry_id, fields, reason in dead:
                letter = {**fields, b"reason": reason.encode(), b"entry_id": entry_id}
                transaction.xadd(self.settings.dead_letter_key, letter)
            transaction.execute()
        if rows_user:
            self._unflushed.append(batch_id)
            self.outcome.offline_rows += len(rows_user)
        self.outcome.online_writes += sum(1 for applied in results if applied.rows)
        return results

    def _restore(self, reply: list[bytes | None]) -> UserState:
        minutes_raw, counts_raw, stamp_raw, book = reply
        minutes = (
            list(self._value.FromString(minutes_raw).int64_list_val.val) if minutes_raw else []
        )
        counts = list(self._value.FromString(counts_raw).int64_list_val.val) if counts_raw else []
        stamp = 0
        if stamp_raw:
            parsed = self._timestamp.FromString(stamp_raw)
            stamp = parsed.seconds * 1_000_000 + parsed.nanos // 1000
        if len(minutes) != len(counts):
            minutes, counts = [], []
        return UserState.restore(minutes, counts, stamp, book)

    def _online_values(self, state: UserState) -> dict[bytes, bytes]:
        stamp = self._timestamp(
            seconds=state.stamp // 1_000_000, nanos=(state.stamp % 1_000_000) * 1000
        )
        return {
            self._fields[0]: self._value(
                int64_list_val=self._int64_list(val=state.minutes)
            ).SerializeToString(),
            self._fields[1]: self._value(
                int64_list_val=self._int64_list(val=state.counts)
            ).SerializeToString(),
            self._ts_field: stamp.SerializeToString(),
            self._book_field: state.book(),
        }

    # --- offline and acknowledgements -----------------------------------------------------

    def flush(self, *, everything: bool = False) -> int:
        """Write outbox entries as one Parquet part, delete them, acknowledge the entries.

        Args:
            everything: Flush every outbox entry (left by any worker), not only this
                worker's: at start-up and when draining.
        """
        names = (
            sorted(name.decode() for name in self.redis.hkeys(self._outbox))
            if everything
            else list(self._unflushed)
        )
        written = 0
        if names:
            payloads = self.redis.hmget(self._outbox, names)
            tables = [_table(payload) for payload in payloads if payload]
            if tables:
                table = pa.concat_tables(tables)
                _write_part(self.target.offline_dir, f"part-{names[0]}-{len(names)}", table)
                written = table.num_rows
                self.outcome.parts += 1
            self.redis.hdel(self._outbox, *names)
        self._unflushed = []
        if self._unacked:
            self.redis.xack(self.settings.key, self.settings.group, *self._unacked)
            self._unacked = []
        return written


_FRESHNESS: Any = None


def observe_freshness(seconds: Sequence[float]) -> None:
    """Record event time to servable of applied events (Prometheus histogram)."""
    global _FRESHNESS
    if _FRESHNESS is None:
        from prometheus_client import Histogram

        _FRESHNESS = Histogram(
            "churn_stream_freshness_seconds",
            "Event time to servable online (committed by churn stream), seconds.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
        )
    for value in seconds:
        _FRESHNESS.observe(value)


def _parse(fields: Any) -> Event:
    from materialize.stream.tiles import parse_event

    return parse_event(fields)


def _ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _table(payload: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(payload)).read_all()


def run_stream(request: StreamRequest) -> StreamOutcome:
    """``churn stream``: run one worker of the group until stopped, idle or timed out.

    SIGTERM (and SIGINT) stop it cleanly: the current batch is committed, the outbox
    written, the entries acknowledged.

    Raises:
        ConfigurationError: The push source, its view or the online store do not fit.
    """
    target = resolve_target(request.feast, request.stream.push_source)
    worker = StreamWorker(target, request.stream)
    if request.stream.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(request.stream.metrics_port, addr="127.0.0.1")
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGTERM, signal.SIGINT):
            previous[number] = signal.signal(number, lambda *_: worker.stopping.set())
    try:
        return worker.run(until_idle=request.until_idle, max_seconds=request.max_seconds)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        worker.redis.close()
