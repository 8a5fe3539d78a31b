"""Writing encoded chunks into the online store, byte-compatible with Feast's own writes.

- :class:`RedisWriter`: Feast's Redis layout (hash per entity key + project, one field per
  feature named by the murmur3 of ``view:feature``, plus ``_ts:<view>``). A Lua script
  applies a whole batch server-side: it writes a row only when its (event time, created
  time) is newer than the stored one, so a correction (same event time, later created)
  replaces the value it corrects; Feast's rule compares the event time only. The created
  time is kept in an extra hash field ``_created:<view>`` that Feast never reads. The
  script restarts the key's TTL when it writes (``key_ttl_seconds``). One script call per
  batch replaces thousands of per-row commands.
- :class:`SqliteWriter`: Feast's SQLite table layout (one row per entity and feature),
  upserted unless the stored (event time, created time) is newer (Feast keeps whole
  seconds there).
- :class:`FeastWriter`: any other online store, through Feast's ``online_write_batch``
  (still chunked, so memory stays bounded). Those stores apply their own rule: Feast's
  Redis and PostgreSQL stores compare the event time only, so a correction reaches them
  only through the two writers above (see the README, "Reliability").
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis

from core.errors import OnlineStoreFullError, OnlineStoreUnavailable
from core.feast_adapter.layout import RedisLayout
from materialize.engine.encoding import (
    CREATED_COLUMN,
    EVENT_COLUMN,
    Cells,
    EncodedChunk,
    ValueKind,
    concat_cells,
    constant_cells,
    kind_name,
    split_micros,
)

if TYPE_CHECKING:
    from feast import FeatureView, RepoConfig
    from feast.infra.online_stores.online_store import OnlineStore


def is_out_of_memory(error: Exception) -> bool:
    """Whether a Redis error is its refusal to grow past ``maxmemory``."""
    text = str(error)
    return isinstance(error, redis.exceptions.OutOfMemoryError) or (
        isinstance(error, redis.ResponseError) and ("OOM" in text or "maxmemory" in text)
    )


class OnlineWriter(Protocol):
    """Writes chunks into one feature view's online table."""

    def check(self) -> None:
        """Fail early, naming the store, when it cannot be written."""

    def write(self, chunk: EncodedChunk) -> int:
        """Write the rows newer than what is online; return how many were written."""

    def expire(self, *, start: datetime, end: datetime) -> int:
        """Delete rows older than the key TTL after a run over [start, end]; return how many.

        Stores with their own expiry (Redis ``EXPIRE``) delete nothing here.
        """

    def close(self) -> None:
        """Release connections."""


# KEYS: entity hash keys. ARGV: ts field, created field, TTL seconds (0: none), packed rows,
# row width, width of the timestamp slot, then (field name, slot width) per feature. Each
# packed row is: seconds (int64) and nanos (uint32) of the event time, the created time in
# microseconds (int64; -1 when the source has none), then for the timestamp and each
# feature a uint32 length followed by the value in a fixed-width slot. Lua numbers are
# doubles: microseconds are exact up to 2**53 (year 2255); ingest quarantines times outside
# 1970..2200, which the stores cannot order.
_WRITE_NEWER_LUA = """
-- Replicate the writes, not the script (TIME below): the default since Redis 5, the only
-- mode since 7 (where the call is a deprecated no-op); before, writes after TIME are refused.
if redis.replicate_commands then redis.replicate_commands() end
local ts_field = ARGV[1]
local created_field = ARGV[2]
local ttl = tonumber(ARGV[3])
-- PEXPIREAT at (server time + TTL) gives each key the deadline EXPIRE would, to within the
-- script's few milliseconds; on Redis 7 EXPIRE costs about 10% more CPU per key here, as it
-- rewrites itself into this form for replication.
local expire_at = false
if ttl > 0 then
  local now = redis.call('TIME')
  expire_at = string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000) + ttl * 1000)
end
local blob = ARGV[4]
local row_width = tonumber(ARGV[5])
local ts_width = tonumber(ARGV[6])
local names, widths = {}, {}
for j = 7, #ARGV, 2 do
  names[#names + 1] = ARGV[j]
  widths[#widths + 1] = tonumber(ARGV[j + 1])
end

local function varint(s, i)
  local value, scale = 0, 1
  while true do
    local b = string.byte(s, i)
    i = i + 1
    value = value + (b % 128) * scale
    if b < 128 then return value, i end
    scale = scale * 128
  end
end

-- -1, 0 or 1 as the stored serialized Timestamp is before, equal to or after (sec, nanos).
-- Like Feast, an epoch (empty) timestamp counts as nothing stored (-1). A negative
-- seconds value is a ten-byte varint (two's complement): read it as negative, so a
-- pre-1970 value stored by another writer is older than any later one.
local function compare_stored(prev, sec, nanos)
  local psec, pnanos, i = 0, 0, 1
  while i <= #prev do
    local tag = string.byte(prev, i)
    local v
    v, i = varint(prev, i + 1)
    if tag == 8 then
      if v >= 9223372036854775808 then v = v - 18446744073709551616 end
      psec = v
    elseif tag == 16 then pnanos = v end
  end
  if psec == 0 and pnanos == 0 then return -1 end
  if psec < sec or (psec == sec and pnanos < nanos) then return -1 end
  if psec == sec and pnanos == nanos then return 0 end
  return 1
end

-- HSET arguments, reused for every key: ts field, ts, created field, created, then field
-- name, value pairs.
local args = {ts_field, "", created_field, ""}
for j = 1, #names do
  args[2 * j + 3] = names[j]
  args[2 * j + 4] = ""
end

local written = 0
for k = 1, #KEYS do
  local base = (k - 1) * row_width + 1
  local sec, nanos, created = struct.unpack('<i8I4i8', blob, base)
  local created_bytes = string.sub(blob, base + 12, base + 19)
  local pos = base + 20
  local len = struct.unpack('<I4', blob, pos)
  local ts = string.sub(blob, pos + 4, pos + 3 + len)
  local stored = redis.call('HMGET', KEYS[k], ts_field, created_field)
  local prev, prev_created = stored[1], stored[2]
  -- Newer wins, ordered by (event time, created time). Same bytes: the same event time
  -- is online already (the common case on a re-run), then the created time decides.
  local write = not prev
  if prev then
    local order = 0
    if prev ~= ts then order = compare_stored(prev, sec, nanos) end
    if order < 0 then
      write = true
    elseif order == 0 then
      -- No created time stored (written by Feast itself or before it was recorded):
      -- write once, the values are those of the latest row of the range.
      write = (not prev_created) or created > struct.unpack('<i8', prev_created)
    end
  end
  if write then
    args[2] = ts
    args[4] = created_bytes
    pos = pos + 4 + ts_width
    for j = 1, #names do
      len = struct.unpack('<I4', blob, pos)
      args[2 * j + 4] = string.sub(blob, pos + 4, pos + 3 + len)
      pos = pos + 4 + widths[j]
    end
    redis.call('HSET', KEYS[k], unpack(args))
    if expire_at then redis.call('PEXPIREAT', KEYS[k], expire_at) end
    written = written + 1
  end
end
return written
"""

# Field of each entity hash where the writer keeps the created time of the stored row
# (int64 little-endian microseconds). Feast reads only the fields it asks for (HMGET of
# feature fields and ``_ts:<view>``), so the extra field changes nothing it reads.
CREATED_FIELD_PREFIX = "_created:"


def created_micros(column: pa.ChunkedArray) -> np.ndarray:
    """Created times in microseconds since the epoch; -1 where there is none."""
    if pa.types.is_null(column.type):
        return np.full(len(column), -1, dtype=np.int64)
    unit = pa.timestamp("us", tz=getattr(column.type, "tz", None))
    micros = pc.cast(column, unit, safe=False).cast(pa.int64()).fill_null(-1)
    return np.asarray(micros.to_numpy(zero_copy_only=False), dtype=np.int64)


def _slot(cells: Cells) -> np.ndarray:
    """A uint32 length followed by the padded value, per row."""
    lengths = cells.lengths.astype("<u4").view(np.uint8).reshape(-1, 4)
    return np.hstack([lengths, cells.matrix])


class RedisWriter:
    """Feast's Redis layout, newer-wins and TTL applied server-side in one script per batch.

    Args:
        client: A redis-py client (Feast's own, so connection settings are the profile's).
        project: Feast project (suffix of every key).
        view_name: Feature view name as Feast stores it (with version suffix if enabled).
        feature_names: The view's features, in the view's order.
        ttl_seconds: ``key_ttl_seconds`` of the store; None or 0 for no expiry.
        batch_rows: Entities per script call (bounds the time Redis is busy per call).
        pipeline_batches: Script calls sent per round trip.
        label: How to name the store in errors (host:port).
        layout: Feast's Redis layout (field names, key suffix), shared with the reader.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        project: str,
        view_name: str,
        feature_names: list[str],
        ttl_seconds: int | None,
        batch_rows: int,
        pipeline_batches: int,
        label: str,
        layout: RedisLayout | None = None,
    ) -> None:
        layout = layout or RedisLayout()
        self._client = client
        self._project = layout.key_suffix(project)
        self._ts_field = layout.timestamp_field(view_name)
        self._created_field = f"{CREATED_FIELD_PREFIX}{view_name}".encode()
        self._fields = [layout.feature_field(view_name, name) for name in feature_names]
        self._feature_names = feature_names
        self._ttl = ttl_seconds or 0
        self._batch_rows = batch_rows
        self._pipeline_batches = pipeline_batches
        self._label = label
        self._script = client.register_script(_WRITE_NEWER_LUA)

    def check(self) -> None:
        """Ping Redis; raise OnlineStoreUnavailable naming it when unreachable."""
        try:
            self._client.ping()
        except redis.RedisError as error:
            raise OnlineStoreUnavailable(
                f"cannot reach the Redis online store at {self._label}: {error}"
            ) from error

    def write(self, chunk: EncodedChunk) -> int:
        """Write the chunk in script calls of ``batch_rows`` entities."""
        if chunk.rows == 0:
            return 0
        keys = concat_cells([chunk.keys, constant_cells(self._project, chunk.rows)]).to_list()
        seconds, nanos = split_micros(chunk.event_micros)
        values = [chunk.values[name] for name in self._feature_names]
        matrix = np.hstack(
            [
                np.ascontiguousarray(seconds, dtype="<i8").view(np.uint8).reshape(-1, 8),
                np.ascontiguousarray(nanos, dtype="<u4").view(np.uint8).reshape(-1, 4),
                np.ascontiguousarray(
                    created_micros(chunk.table.column(CREATED_COLUMN)), dtype="<i8"
                )
                .view(np.uint8)
                .reshape(-1, 8),
                _slot(chunk.timestamps),
                *(_slot(cells) for cells in values),
            ]
        )
        layout: list[Any] = [matrix.shape[1], chunk.timestamps.width]
        for field, cells in zip(self._fields, values, strict=True):
            layout += [field, cells.width]
        written = [0]  # entities written so far, for the out-of-memory message
        try:
            self._apply(keys, matrix, layout, written)
        except redis.ConnectionError as error:
            raise OnlineStoreUnavailable(
                f"lost the Redis online store at {self._label}: {error}"
            ) from error
        except redis.ResponseError as error:
            if not is_out_of_memory(error):
                raise
            raise OnlineStoreFullError(
                f"the Redis online store at {self._label} is out of memory ({error}); "
                f"{written[0]:,} entities of this view were written before it refused. Raise "
                "its maxmemory, choose an evicting maxmemory-policy, or shorten "
                "key_ttl_seconds, then re-run: the run resumes (newer-wins) where it stopped"
            ) from error
        return written[0]

    def script_args(self, rows: bytes, layout: list[Any]) -> list[Any]:
        """The script's ARGV for the packed ``rows`` of one call."""
        return [self._ts_field, self._created_field, self._ttl, rows, *layout]

    def _apply(
        self, keys: list[bytes], matrix: np.ndarray, layout: list[Any], written: list[int]
    ) -> None:
        """Send the packed rows in script calls of ``batch_rows``, pipelined; count into
        ``written[0]``."""
        rows = len(keys)
        row_width = matrix.shape[1]
        blob = matrix.tobytes()
        for start in range(0, rows, self._batch_rows * self._pipeline_batches):
            pipe = self._client.pipeline(transaction=False)
            stop = min(rows, start + self._batch_rows * self._pipeline_batches)
            for low in range(start, stop, self._batch_rows):
                high = min(stop, low + self._batch_rows)
                args = self.script_args(blob[low * row_width : high * row_width], layout)
                self._script(keys=keys[low:high], args=args, client=pipe)
            written[0] += sum(int(count) for count in pipe.execute())

    def expire(self, *, start: datetime, end: datetime) -> int:
        """Nothing to do: every written key carries its own TTL (set with each write)."""
        return 0

    def close(self) -> None:
        """Nothing to release: the client belongs to Feast's online store."""


def _sqlite_times(column: pa.ChunkedArray) -> list[int | None]:
    """Times as Feast's SQLite store writes them (its own datetime adapter, epoch seconds)."""
    from feast.infra.online_stores.sqlite import adapt_datetime_epoch

    if pa.types.is_null(column.type):
        return [None] * len(column)
    naive = pc.cast(column, pa.timestamp("us"), safe=False)  # aware -> naive UTC, as Feast
    return [
        None if moment is None else adapt_datetime_epoch(moment) for moment in naive.to_pylist()
    ]


def _value_texts(column: pa.ChunkedArray, value_type: ValueKind) -> list[str | None]:
    """Feast's ``value_text`` column: the value as text for strings and numbers."""
    arrow_type = {
        "DOUBLE": pa.float64(),
        "FLOAT": pa.float32(),
        "INT64": pa.int64(),
        "INT32": pa.int32(),
        "BOOL": pa.bool_(),
        "STRING": pa.string(),
    }.get(kind_name(value_type))
    if arrow_type is None:
        return [None] * len(column)
    values = pc.cast(column, arrow_type).to_pylist()
    # NaN is stored as an empty Value, hence no text.
    return [None if value is None or value != value else str(value) for value in values]


class SqliteWriter:
    """Feast's SQLite online table, upserted only where (event time, created) is not older.

    Feast's own SQLite store overwrites unconditionally; the condition keeps an older range
    from replacing newer values, as in Redis. Feast stores whole seconds here, so a row of
    the same second as the stored one replaces it. A fresh store ends up identical.
    """

    def __init__(self, db_path: Path, table: str, *, ttl_seconds: int | None = None) -> None:
        self._db_path = db_path
        self._table = table
        self._ttl = ttl_seconds
        self._connection: sqlite3.Connection | None = None

    def check(self) -> None:
        """Open the database and make sure Feast created the view's table (feast apply)."""
        if not self._db_path.is_file():
            raise OnlineStoreUnavailable(
                f"SQLite online store {self._db_path} does not exist: run `feast apply` first"
            )
        self._connection = sqlite3.connect(self._db_path)
        found = self._connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (self._table,)
        ).fetchone()
        if not found:
            raise OnlineStoreUnavailable(
                f"SQLite online store {self._db_path} has no table {self._table}: "
                "run `feast apply` first"
            )

    def _rows(self, chunk: EncodedChunk) -> Iterator[tuple[Any, ...]]:
        keys = chunk.keys.to_list()
        events = _sqlite_times(chunk.table.column(EVENT_COLUMN))
        created = _sqlite_times(chunk.table.column(CREATED_COLUMN))
        features = [
            (
                name,
                cells.to_list(),
                _value_texts(chunk.table.column(name), chunk.value_types[name]),
            )
            for name, cells in chunk.values.items()
        ]
        for row, key in enumerate(keys):
            for name, values, texts in features:
                yield key, name, values[row], texts[row], events[row], created[row]

    def write(self, chunk: EncodedChunk) -> int:
        """Upsert the chunk in one transaction; return the entities written."""
        assert self._connection is not None, "check() opens the connection"
        if chunk.rows == 0:
            return 0
        table = '"' + self._table.replace('"', '""') + '"'
        upsert = (
            f"INSERT INTO {table} (entity_key, feature_name, value, value_text, event_ts, "
            "created_ts) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
            "value_text = excluded.value_text, event_ts = excluded.event_ts, "
            # Newer (event, created) wins; a missing created time sorts first. Equal rows
            # are rewritten with the same values (idempotent).
            "created_ts = excluded.created_ts WHERE (excluded.event_ts, "
            f"COALESCE(excluded.created_ts, -1)) >= ({table}.event_ts, "
            f"COALESCE({table}.created_ts, -1))"
        )
        with self._connection:
            cursor = self._connection.executemany(upsert, self._rows(chunk))
        return cursor.rowcount // max(1, len(chunk.values))

    def expire(self, *, start: datetime, end: datetime) -> int:
        """Delete entities whose event time is before ``end - ttl`` and before ``start``.

        Feast's SQLite store has no key expiry; this gives the embedded profile the same
        bound on stale online values as the Redis key TTL. Rows of the run's own range are
        kept, so back-filling an old range still loads it.
        """
        assert self._connection is not None, "check() opens the connection"
        if not self._ttl:
            return 0
        start, end = (m if m.tzinfo else m.replace(tzinfo=UTC) for m in (start, end))
        cutoff = min(start, end - timedelta(seconds=self._ttl))
        table = '"' + self._table.replace('"', '""') + '"'
        with self._connection:
            (entities,) = self._connection.execute(
                f"SELECT count(DISTINCT entity_key) FROM {table} WHERE event_ts < ?",
                (int(cutoff.timestamp()),),
            ).fetchone()
            self._connection.execute(
                f"DELETE FROM {table} WHERE event_ts < ?", (int(cutoff.timestamp()),)
            )
        return int(entities)

    def close(self) -> None:
        """Close the connection."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class FeastWriter:
    """Any other online store, through Feast's ``online_write_batch`` chunk by chunk."""

    def __init__(
        self,
        online_store: OnlineStore,
        config: RepoConfig,
        feature_view: FeatureView,
        *,
        source_timestamp: str,
        source_created: str | None,
    ) -> None:
        self._store = online_store
        self._config = config
        self._view = feature_view
        self._renames = {EVENT_COLUMN: source_timestamp, CREATED_COLUMN: source_created}

    def check(self) -> None:
        """Nothing to check ahead: the store reports its own errors."""

    def write(self, chunk: EncodedChunk) -> int:
        """Convert the chunk with Feast and write it with the store's own method."""
        if chunk.rows == 0:
            return 0
        table = chunk.table
        if not self._renames[CREATED_COLUMN]:
            table = table.drop_columns([CREATED_COLUMN])
        table = table.rename_columns(
            [self._renames.get(name) or name for name in table.column_names]
        )
        from core.feast_adapter.engine import arrow_to_feast_rows

        rows = arrow_to_feast_rows(table.combine_chunks().to_batches()[0], self._view)
        self._store.online_write_batch(self._config, self._view, rows, progress=None)
        return len(rows)

    def expire(self, *, start: datetime, end: datetime) -> int:
        """Nothing to do: the store applies its own expiry, if any."""
        return 0

    def close(self) -> None:
        """Nothing to release."""
