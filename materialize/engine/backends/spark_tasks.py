"""What Spark executors run for the spark backend's ``SparkEngine``, without Feast.

The driver pickles a :class:`PartitionWriter` into the plan; each executor's Python worker
unpickles it, which imports this module and what it imports. Importing Feast costs a
Python worker about 4 s (the ``feast`` package imports every store and source), paid by
every executor of every run: at 1M users it was about a third of the run. So this module,
the encoding and the Redis writer import no Feast, the writer carries plain settings (type
names, the field names the driver hashed, redis-py's connection arguments), and a test
checks that a worker writing a batch has not imported Feast.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis

from core.feast_adapter.layout import RedisLayout
from materialize.engine.encoding import CREATED_COLUMN, EVENT_COLUMN, encode_chunk
from materialize.engine.writers import RedisWriter

# What each task returns, once (Arrow, and the same as Spark DDL).
COUNTS_SCHEMA = pa.schema(
    [
        ("entities", pa.int64()),
        ("written", pa.int64()),
        ("rows", pa.int64()),
        ("rejected", pa.int64()),
    ]
)
COUNTS_DDL = "entities long, written long, rows long, rejected long"


@dataclass(frozen=True)
class HashedFields(RedisLayout):
    """Feast's Redis layout with the feature fields hashed on the driver (no Feast needed)."""

    fields: tuple[tuple[str, bytes], ...] = ()

    def feature_field(self, view_name: str, feature: str) -> bytes:
        """The field the driver hashed for ``view:feature``."""
        return dict(self.fields)[f"{view_name}:{feature}"]


@dataclass(frozen=True)
class PartitionWriter:
    """Picks each entity's latest row and writes it to Redis (runs on the executors).

    A task's rows arrive as Arrow batches, grouped by entity: Spark hash-partitioned them by
    the join keys and sorted each partition by them. Each batch's last entity may go on in
    the next batch, so its rows are carried over; every other entity is complete, and its
    latest row (latest event time, then latest created time, missing created times last:
    Feast's rule) is written newer-wins. Rows without a join key are counted and dropped.

    A writer thread sends one chunk to Redis while the task reads the next from Spark, with
    at most ``_WRITES_AHEAD`` chunks waiting: memory follows ``arrow_batch_rows``, not the
    partition.

    Pickled to the executors with the plan, so it holds only plain settings; each task
    opens its own Redis connection. ``redis_arguments`` are redis-py's ``Redis(...)``
    arguments, parsed by Feast on the driver from the profile's connection string.
    """

    redis_arguments: dict[str, Any]
    project: str
    view_name: str
    join_keys: dict[str, str]  # name -> Feast ValueType name
    features: dict[str, str]
    ttl_seconds: int | None
    batch_rows: int
    pipeline_batches: int
    label: str
    layout: HashedFields = field(default_factory=HashedFields)

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Write the task's latest rows newer-wins; yield one row of counts."""
        client = redis.Redis(**self.redis_arguments)
        writer = RedisWriter(
            client,
            project=self.project,
            view_name=self.view_name,
            feature_names=list(self.features),
            ttl_seconds=self.ttl_seconds,
            batch_rows=self.batch_rows,
            pipeline_batches=self.pipeline_batches,
            label=self.label,
            layout=self.layout,
        )
        counts = dict.fromkeys(COUNTS_SCHEMA.names, 0)
        keys = list(self.join_keys)
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="redis-writer") as pool:
                pending: deque[Future[int]] = deque()
                for rows, keyed, rejected in complete_entities(batches, keys):
                    counts["rows"] += keyed
                    counts["rejected"] += rejected
                    if rows.num_rows == 0:
                        continue
                    latest = latest_rows(rows, keys)
                    counts["entities"] += latest.num_rows
                    if len(pending) == _WRITES_AHEAD:
                        counts["written"] += pending.popleft().result()
                    pending.append(pool.submit(self._write, writer, latest))
                while pending:
                    counts["written"] += pending.popleft().result()
        finally:
            client.close()
        yield pa.RecordBatch.from_pydict(
            {name: [value] for name, value in counts.items()}, schema=COUNTS_SCHEMA
        )

    def _write(self, writer: RedisWriter, latest: pa.Table) -> int:
        chunk = encode_chunk(
            latest, join_keys=self.join_keys, features=self.features, event_column=EVENT_COLUMN
        )
        return writer.write(chunk)


# Chunks handed to the writer thread and not yet written: enough to keep Redis busy while
# the task reads on, few enough to bound memory.
_WRITES_AHEAD = 2


def complete_entities(
    batches: Iterable[pa.RecordBatch], keys: list[str]
) -> Iterator[tuple[pa.Table, int, int]]:
    """Regroup batches of entity-grouped rows into tables of whole entities.

    Yields (rows of the entities complete so far, keyed rows read, rows lacking a join key).
    The last entity of a batch waits for the next batch, which may hold more of its rows;
    only its latest row so far waits, so an entity of many rows costs no repeated copies.
    """
    carried: pa.Table | None = None
    for batch in batches:
        table, rejected = _keyed_rows(pa.Table.from_batches([batch]), keys)
        keyed = table.num_rows
        if carried is not None:
            table = pa.concat_tables([carried, table])
        complete, last = _split_last_entity(table, keys)
        carried = latest_rows(last, keys) if last.num_rows > 1 else last
        yield complete, keyed, rejected
    if carried is not None and carried.num_rows:
        yield carried, 0, 0


def _keyed_rows(table: pa.Table, keys: list[str]) -> tuple[pa.Table, int]:
    """The rows with every join key, and how many rows lacked one."""
    keyed = functools.reduce(pc.and_, [pc.is_valid(table.column(name)) for name in keys])
    kept = table.filter(keyed)
    return kept, table.num_rows - kept.num_rows


def _split_last_entity(table: pa.Table, keys: list[str]) -> tuple[pa.Table, pa.Table]:
    """(rows of every entity but the last, rows of the last entity, which may go on)."""
    if table.num_rows == 0:
        return table, table
    last = functools.reduce(
        pc.and_, [pc.equal(table.column(name), table.column(name)[-1]) for name in keys]
    )
    return table.filter(pc.invert(last)), table.filter(last)


def latest_rows(table: pa.Table, keys: list[str]) -> pa.Table:
    """Each entity's latest row.

    Latest: latest event time, then latest created time, missing created times last
    (Feast's rule). The table holds whole entities and no row without a join key.
    """
    # Nulls sort last whatever the order (pyarrow's default): missing created times last.
    ordered = table.sort_by(
        [
            *((name, "ascending") for name in keys),
            (EVENT_COLUMN, "descending"),
            (CREATED_COLUMN, "descending"),
        ]
    )
    rows = ordered.num_rows
    first = np.zeros(rows, dtype=bool)
    first[:1] = True
    for name in keys:
        column = ordered.column(name)
        if rows > 1:
            changed = pc.not_equal(column.slice(1), column.slice(0, rows - 1))
            first[1:] |= changed.to_numpy(zero_copy_only=False)
    return ordered.take(np.flatnonzero(first))
