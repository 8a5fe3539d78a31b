"""``churn stream``: activity events from a Redis Stream into the ``user_activity`` view.

Per batch of entries (``XREADGROUP`` in a consumer group, up to ``batch_size``):

1. parse them as columns; malformed entries are bound for the dead-letter stream with
   their reason (:func:`materialize.stream.tiles.parse_entries`);
2. group the events by user, read every user's state (tiles, stamp, bookkeeping) in one
   script (:class:`materialize.stream.store.StateStore`);
3. apply each user's events once (:func:`materialize.stream.tiles.apply_columns`:
   idempotent by ``event_id``, late events refused) and encode the user's tiles once;
4. one atomic script: check that no user's stamp moved since step 2 (else recompute the
   batch), write the new online values in Feast's layout (newer-wins by construction:
   stamps increase per user; ``EXPIRE`` as the store's ``key_ttl_seconds``), the offline
   rows into an outbox hash, the dead letters, and acknowledge the entries (``XACK``).

A batch is thus committed and acknowledged at once, or not at all: after a ``kill -9`` the
worker reads its pending entries again (and a redelivered entry finds its event id seen).
Every ``flush_interval_s`` (or ``flush_rows`` rows) a background thread claims this
worker's outbox entries and writes them as one Parquet part into the push source's batch
source directory; a claim a crash left is finished at start-up, so every offline row lands
in exactly one part. At start-up the whole outbox is written (what a crashed worker
committed), then the worker's own pending entries are read, then idle entries of other
consumers are claimed.
"""

from __future__ import annotations

import gc
import logging
import signal
import struct
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from redis import Redis
from redis.exceptions import ResponseError

from core.feast_adapter.layout import RedisLayout
from materialize.stream.metrics import Latencies, freshness
from materialize.stream.settings import StreamSettings
from materialize.stream.store import OFFLINE_SCHEMA, StateStore, UserWrite, ipc_bytes, ipc_table
from materialize.stream.target import (
    TILE_FEATURES,
    StreamTarget,
    ensure_offline_dir,
    resolve_target,
    write_part,
)
from materialize.stream.tiles import Applied, UserState, apply_columns, parse_entries

if TYPE_CHECKING:
    from core.settings import FeastSettings

logger = logging.getLogger(__name__)

# Users whose Redis key is remembered (computing one costs more than applying an event).
KEY_CACHE_USERS = 1 << 18
_INT64 = struct.Struct("<q")
FULL_COLLECTION_S = 60.0


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
    """What the worker did; latencies per event (arrival = the entry id's time)."""

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
    busy_s: float = 0.0  # from the first entry read to the last batch committed
    arrival: Latencies = field(default_factory=Latencies)
    event_time: Latencies = field(default_factory=Latencies)

    def summary(self) -> str:
        """Lines for the terminal: counts, rate, then latencies to online."""
        p50, p99, worst = self.arrival.percentiles()
        e50, e99, eworst = self.event_time.percentiles()
        rate = self.entries / self.busy_s if self.busy_s else 0.0
        return (
            self._counts()
            + f"\n{self.batches} batches, {rate:,.0f} entries/s from the first entry read to "
            f"the last batch committed ({self.busy_s:.1f} s)"
            + f"\narrival to online (every event): p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
            f"max {worst:.1f} ms"
            + f"\nevent time to online (every event): p50 {e50:.1f} ms, p99 {e99:.1f} ms, "
            f"max {eworst:.1f} ms"
        )

    def _counts(self) -> str:
        return (
            f"{self.entries} entries: {self.applied} applied, {self.duplicates} duplicates, "
            f"{self.late} late (dropped), {self.dead_lettered} dead-lettered; "
            f"{self.online_writes} online writes, {self.offline_rows} offline rows in "
            f"{self.parts} parts"
        )


@dataclass
class _Batch:
    """One batch's writes, rows and counts, as computed from the states read."""

    writes: list[UserWrite]
    rows: list[tuple[int, int, list[int], list[int]]]  # user, stamp, tiles
    results: list[tuple[int, Applied]]
    states: list[tuple[int, UserState, bytes]]  # user, state, its stored stamp


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
        fields = tuple(self.layout.feature_field(target.view, n) for n in TILE_FEATURES)
        self.store = StateStore(
            self.redis,
            stream=settings.key,
            group=settings.group,
            dead_letter_key=settings.dead_letter_key,
            outbox=f"{settings.key}:outbox:{target.project}:{target.view}",
            # The stamp first: the commit compares it; then tiles and bookkeeping.
            fields=(
                self.layout.timestamp_field(target.view),
                *fields,
                f"_stream:{target.view}".encode(),
            ),
            ttl_seconds=target.key_ttl_seconds,
        )
        self._unflushed: list[str] = []  # outbox entries committed by this worker
        self._unflushed_rows = 0
        self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-flush")
        self._flushing: Future[int] | None = None
        self._lateness = round(settings.allowed_lateness_s * 1_000_000)
        self._first_read: float | None = None
        self._redis_key = self._key_function()
        # Users' states as this worker last committed or read them, with their stamp.
        self._states: OrderedDict[int, tuple[UserState, bytes]] = OrderedDict()
        from feast.protos.feast.types.Value_pb2 import Int64List, Value
        from google.protobuf.timestamp_pb2 import Timestamp

        self._value, self._int64_list, self._timestamp = Value, Int64List, Timestamp

    # --- the loop -------------------------------------------------------------------------

    def run(self, *, until_idle: bool = False, max_seconds: float | None = None) -> StreamOutcome:
        """Consume until stopped (``stopping``), idle (``until_idle``) or ``max_seconds``."""
        self._create_group()
        ensure_offline_dir(self.target.offline_dir)
        self.recover()  # what a crashed worker committed or claimed but did not write
        started = last_flush = last_full_collection = time.monotonic()
        reading_own_pending = True
        pending_cursor = "0"
        # The cyclic collector, left automatic, runs mid-batch and promotes the batch's
        # short-lived rows to the old generation, whose full passes over the cached states
        # then take most of the time: collect the young generation between batches, and
        # everything once a minute.
        collecting = gc.isenabled()
        gc.disable()
        try:
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
                if collecting:
                    gc.collect(1)
                    if time.monotonic() - last_full_collection >= FULL_COLLECTION_S:
                        gc.collect()
                        last_full_collection = time.monotonic()
                due = time.monotonic() - last_flush >= self.settings.flush_interval_s
                if due or self._unflushed_rows >= self.settings.flush_rows:
                    self._flush_in_background()
                    last_flush = time.monotonic()
                if not entries and until_idle and not reading_own_pending:
                    break
        finally:
            if collecting:
                gc.enable()
            self._wait_for_flush()
            self._flusher.shutdown()
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
        """Apply a batch of entries online, to the outbox and acknowledge it, atomically."""
        if self._first_read is None:
            self._first_read = time.monotonic()
        parsed = parse_entries([fields for _, fields in entries])
        by_user: dict[int, list[int]] = {}
        for index, user in enumerate(parsed.user_ids):
            by_user.setdefault(user, []).append(index)
        users = list(by_user)
        keys = [self._redis_key(user) for user in users]
        entry_ids = [entry_id for entry_id, _ in entries]
        letters = [
            {**entries[position][1], b"reason": reason.encode(), b"entry_id": entry_ids[position]}
            for position, reason in parsed.dead
        ]
        batch_id = f"{entry_ids[0].decode()}-{uuid.uuid4().hex[:8]}"
        while True:
            batch = self._compute(users, keys, by_user, parsed.event_ids, parsed.micros)
            payload = ipc_bytes(_rows_table(batch.rows)) if batch.rows else b""
            moved = self.store.commit(
                batch_id=batch_id,
                writes=batch.writes,
                payload=payload,
                entry_ids=entry_ids,
                letters=letters,
            )
            if not moved:
                break
            # Another writer moved a user: forget the batch's users (their cached states
            # were changed by this attempt), read them again, recompute.
            self.outcome.retries += 1
            for user in users:
                self._states.pop(user, None)
        self._remember(batch)
        committed = time.time()
        applied_micros = parsed.micros
        skipped = [by_user[user][i] for user, applied in batch.results for i in applied.skipped]
        if skipped:  # redelivered or late: not made servable by this batch
            refused = set(skipped)
            applied_micros = [t for i, t in enumerate(parsed.micros) if i not in refused]
        self._observe(committed, entry_ids, applied_micros)
        if batch.rows:
            self._unflushed.append(batch_id)
            self._unflushed_rows += len(batch.rows)
        outcome = self.outcome
        outcome.offline_rows += len(batch.rows)
        outcome.online_writes += len(batch.writes)
        outcome.batches += 1
        outcome.entries += len(entries)
        outcome.dead_lettered += len(parsed.dead)
        for user, applied in batch.results:
            outcome.applied += applied.applied
            outcome.duplicates += applied.duplicates
            outcome.late += len(applied.late)
            for index in applied.late:
                logger.warning(
                    "late event %s of user %d dropped (more than %.0f s before the user's "
                    "newest event)",
                    parsed.event_ids[by_user[user][index]],
                    user,
                    self.settings.allowed_lateness_s,
                )
        for _, reason in parsed.dead:
            logger.warning("malformed event sent to %s: %s", self.settings.dead_letter_key, reason)
        assert self._first_read is not None
        outcome.busy_s = time.monotonic() - self._first_read

    def _compute(
        self,
        users: list[int],
        keys: list[bytes],
        by_user: dict[int, list[int]],
        event_ids: list[str],
        micros: list[int],
    ) -> _Batch:
        """Take the users' states (cached, else read), apply their events, encode them."""
        cache = self._states
        unknown = [index for index, user in enumerate(users) if user not in cache]
        read = dict(zip(unknown, self.store.read([keys[i] for i in unknown]), strict=True))
        batch = _Batch(writes=[], rows=[], results=[], states=[])
        for index, (user, key) in enumerate(zip(users, keys, strict=True)):
            if index in read:
                stored = read[index]
                state, stamp = self._restore(stored), stored[0] or b""
            else:
                state, stamp = cache[user]
            indices = by_user[user]
            applied = apply_columns(
                state,
                [event_ids[i] for i in indices],
                [micros[i] for i in indices],
                lateness_micros=self._lateness,
            )
            batch.results.append((user, applied))
            if applied.rows:
                values = self._online_values(state)
                batch.writes.append(UserWrite(key, stamp, values))
                stamp = values[0]
                for stamp_micros, minutes, counts in applied.rows:
                    batch.rows.append((user, stamp_micros, minutes, counts))
            batch.states.append((user, state, stamp))
        return batch

    def _remember(self, batch: _Batch) -> None:
        """Keep the committed states: the next batch of these users reads nothing."""
        cache, size = self._states, self.settings.state_cache_users
        if not size:
            return
        for user, state, stamp in batch.states:
            cache[user] = (state, stamp)
            cache.move_to_end(user)
        while len(cache) > size:
            cache.popitem(last=False)

    def _observe(self, committed: float, entry_ids: list[bytes], micros: list[int]) -> None:
        """Latencies: arrival to online of the batch's entries, event time to online (and
        freshness) of its applied events."""
        arrived = np.fromiter((int(i.partition(b"-")[0]) for i in entry_ids), np.int64)
        self.outcome.arrival.add(committed * 1000 - arrived)
        if micros:
            lag = committed - np.asarray(micros, dtype=np.int64) / 1e6
            self.outcome.event_time.add(lag * 1000)
            freshness().observe(lag)

    def _key_function(self) -> Callable[[int], bytes]:
        """Redis key of a user: Feast's bytes around the packed id, checked against Feast's
        own encoding (else Feast's, remembered for the most recent users)."""
        target = self.target

        def feast_key(user: int) -> bytes:
            return self.layout.int64_redis_key(
                target.join_key, user, project=target.project, version=target.key_version
            )

        probe = 0x0102030405060708
        head, found, tail = feast_key(probe).partition(_INT64.pack(probe))
        samples = (0, 1, 255, 123_456_789, 2**63 - 1)
        if found and all(feast_key(u) == head + _INT64.pack(u) + tail for u in samples):
            pack = _INT64.pack
            return lambda user: head + pack(user) + tail
        return lru_cache(maxsize=KEY_CACHE_USERS)(feast_key)

    def _restore(self, stored: list[bytes | None]) -> UserState:
        stamp_raw, minutes_raw, counts_raw, book = stored
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

    def _online_values(self, state: UserState) -> tuple[bytes, ...]:
        """Stamp, tiles and bookkeeping, in the order of the store's fields."""
        stamp = self._timestamp(
            seconds=state.stamp // 1_000_000, nanos=(state.stamp % 1_000_000) * 1000
        )
        return (
            stamp.SerializeToString(),
            self._value(int64_list_val=self._int64_list(val=state.minutes)).SerializeToString(),
            self._value(int64_list_val=self._int64_list(val=state.counts)).SerializeToString(),
            state.book(),
        )

    # --- offline --------------------------------------------------------------------------

    def _flush_in_background(self) -> None:
        """Hand this worker's outbox entries to the flush thread (unless it is busy)."""
        if self._flushing is not None:
            if not self._flushing.done():
                return
            self._flushing.result()  # a failed write stops the worker
        names, self._unflushed, self._unflushed_rows = self._unflushed, [], 0
        if names:
            self._flushing = self._flusher.submit(self._write, names)

    def _wait_for_flush(self) -> None:
        if self._flushing is not None:
            self._flushing.result()
            self._flushing = None

    def flush(self, *, everything: bool = False) -> int:
        """Write outbox entries as one Parquet part; return its rows.

        Args:
            everything: Every outbox entry (left by any worker), not only this worker's:
                at start-up and when draining.
        """
        names = self.store.outbox_names() if everything else self._unflushed
        self._unflushed, self._unflushed_rows = [], 0
        return self._write(names)

    def _write(self, names: list[str]) -> int:
        """Claim the outbox entries, write them as one part, release the claim."""
        if not names:
            return 0
        part = f"part-{names[0]}-{len(names)}"
        return self._write_claimed(part, self.store.claim(part, names))

    def _write_claimed(self, part: str, claimed: list[tuple[str, bytes]]) -> int:
        written = 0
        if claimed:
            table = pa.concat_tables([ipc_table(payload) for _, payload in claimed])
            write_part(self.target.offline_dir, part, table)
            written = table.num_rows
            self.outcome.parts += 1
            self.store.release(part)
        return written

    def recover(self) -> None:
        """Finish the claims a crash left (write their part unless it exists), then write
        the whole outbox."""
        for part, claimed in self.store.open_claims().items():
            if (self.target.offline_dir / f"{part}.parquet").exists():
                self.store.release(part)
            else:
                self._write_claimed(part, claimed)
        self.flush(everything=True)


def _rows_table(rows: list[tuple[int, int, list[int], list[int]]]) -> pa.Table:
    users, stamps, minutes, counts = zip(*rows, strict=True)
    return pa.table(
        [
            pa.array(users, pa.int64()),
            pa.array(stamps, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            pa.array(minutes, pa.list_(pa.int64())),
            pa.array(counts, pa.list_(pa.int64())),
        ],
        schema=OFFLINE_SCHEMA,
    )


def run_stream(request: StreamRequest) -> StreamOutcome:
    """``churn stream``: run one worker of the group until stopped, idle or timed out.

    SIGTERM (and SIGINT) stop it cleanly: the current batch is committed, the outbox
    written. With ``metrics_port`` set, ``/metrics`` serves ``churn_stream_freshness_seconds``.

    Raises:
        ConfigurationError: The push source, its view or the online store do not fit.
    """
    target = resolve_target(request.feast, request.stream.push_source)
    worker = StreamWorker(target, request.stream)
    freshness()  # exported from the start, empty until a batch commits
    # What start-up built (Feast, pandas, the registry) lives as long as the process: keep
    # it out of the cyclic collector's full passes, which would otherwise pause the loop.
    gc.freeze()
    if request.stream.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(request.stream.metrics_port, addr=request.stream.metrics_host)
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
