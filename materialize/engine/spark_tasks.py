"""What Spark executors run for :class:`materialize.engine.spark.SparkEngine`, without Feast.

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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from core.feast_adapter.layout import RedisLayout
from materialize.engine.encoding import encode_chunk
from materialize.engine.reader import EVENT_COLUMN
from materialize.engine.writers import RedisWriter

# What each task returns per Arrow batch it wrote (Arrow, and the same as Spark DDL).
COUNTS_SCHEMA = pa.schema(
    [
        ("entities", pa.int64()),
        ("written", pa.int64()),
        ("rows", pa.int64()),
        ("rejected", pa.int64()),
    ]
)
COUNTS_DDL = "entities long, written long, rows long, rejected long"
# Per latest row: how many rows its entity had in the range (summed: rows in range).
ROWS_COLUMN = "__rows_in_range"


@dataclass(frozen=True)
class HashedFields(RedisLayout):
    """Feast's Redis layout with the feature fields hashed on the driver (no Feast needed)."""

    fields: tuple[tuple[str, bytes], ...] = ()

    def feature_field(self, view_name: str, feature: str) -> bytes:
        """The field the driver hashed for ``view:feature``."""
        return dict(self.fields)[f"{view_name}:{feature}"]


@dataclass(frozen=True)
class PartitionWriter:
    """Encodes and writes one task's Arrow batches to Redis (runs on the executors).

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
        """Write each batch newer-wins; yield (entities, written, rows, rejected) per batch."""
        import redis

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
        try:
            for batch in batches:
                yield self._write_batch(writer, pa.Table.from_batches([batch]))
        finally:
            client.close()

    def _write_batch(self, writer: RedisWriter, table: pa.Table) -> pa.RecordBatch:
        # Rows without a join key share one group per null pattern: counted, not written.
        keyed = functools.reduce(
            pc.and_, [pc.is_valid(table.column(name)) for name in self.join_keys]
        )
        rejected = _sum(table.filter(pc.invert(keyed)).column(ROWS_COLUMN))
        table = table.filter(keyed)
        chunk = encode_chunk(
            table, join_keys=self.join_keys, features=self.features,
            event_column=EVENT_COLUMN,
        )  # fmt: skip
        written = writer.write(chunk)
        return pa.RecordBatch.from_pydict(
            {
                "entities": [chunk.rows],
                "written": [written],
                "rows": [_sum(table.column(ROWS_COLUMN))],
                "rejected": [rejected],
            },
            schema=COUNTS_SCHEMA,
        )


def _sum(column: pa.ChunkedArray) -> int:
    return int(pc.sum(column).as_py() or 0)
