"""The prediction log: every prediction, buffered in memory, written as partitioned Parquet.

Layout (the data contract, read by monitoring)::

    <root>/date=YYYY-MM-DD/part-<uuid>.parquet

with columns request_id, user_id, event_timestamp (prediction time, UTC), model_name,
model_version, churn_probability, churn_predicted, then one float64 column per model
feature. The request path only appends a batch's arrays to a list; a background task
writes them every few seconds (or sooner when many rows wait) in a worker thread, and the
last rows are written when the service stops. Files appear atomically (written under a
dot-name, then renamed), so readers never see a partial file.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.files import replace_durably
from core.prediction_log import partition_dir, prediction_log_schema

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogChunk:
    """Predictions of one micro-batch (all arrays have one entry per prediction)."""

    request_ids: Sequence[str]
    user_ids: np.ndarray  # int64
    timestamps: np.ndarray  # datetime64[ns], UTC
    model_name: str
    model_version: str
    probabilities: np.ndarray  # float64
    predicted: np.ndarray  # bool
    features: tuple[str, ...]
    matrix: np.ndarray  # float64, one column per feature

    def __len__(self) -> int:
        return len(self.request_ids)


class PredictionLog:
    """Buffers prediction chunks and writes them as partitioned Parquet files.

    Args:
        root: Folder of the ``date=YYYY-MM-DD`` partitions.
        flush_interval_s: Most time a prediction waits in memory.
        flush_rows: Buffered rows that trigger a write before the interval.
        on_written: Called with the number of rows after each successful write.
        on_failed: Called with the number of rows kept after a failed write.
        max_buffer_rows: Most rows held in memory (None: no cap). While writes fail the
            oldest chunks beyond it are dropped and counted, so a full or broken disk
            cannot exhaust the service's memory.
        on_dropped: Called with the number of rows dropped by the cap.
    """

    def __init__(
        self,
        root: Path,
        *,
        flush_interval_s: float,
        flush_rows: int,
        on_written: Any = None,
        on_failed: Any = None,
        max_buffer_rows: int | None = None,
        on_dropped: Any = None,
    ):
        self.root = root
        self._interval = flush_interval_s
        self._flush_rows = flush_rows
        self._pending: list[LogChunk] = []
        self._pending_rows = 0
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()  # one writer at a time (task or final flush)
        self._on_written = on_written or (lambda rows: None)
        self._on_failed = on_failed or (lambda rows: None)
        self._max_buffer_rows = max_buffer_rows
        self._on_dropped = on_dropped or (lambda rows: None)
        self.dropped_rows = 0
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._failing = False  # after a failed write, retry on the interval only

    @property
    def pending_rows(self) -> int:
        """Predictions not yet written."""
        return self._pending_rows

    def append(self, chunk: LogChunk) -> None:
        """Queue a chunk (cheap: called on the request path, on the event loop)."""
        self._pending.append(chunk)
        self._pending_rows += len(chunk)
        self._enforce_cap()
        # While writes fail, a full buffer must not trigger a rewrite after every request.
        if self._pending_rows >= self._flush_rows and not self._failing:
            self._wake.set()

    def _enforce_cap(self) -> None:
        """Drop the oldest buffered chunks beyond ``max_buffer_rows`` (counted, logged)."""
        cap = self._max_buffer_rows
        if cap is None or self._pending_rows <= cap:
            return
        dropped = 0
        while self._pending and self._pending_rows > cap:
            chunk = self._pending.pop(0)
            self._pending_rows -= len(chunk)
            dropped += len(chunk)
        self.dropped_rows += dropped
        self._on_dropped(dropped)
        logger.error(
            "prediction log: buffer over %d rows while writes fail; dropped the oldest %d "
            "(%d dropped so far)",
            cap,
            dropped,
            self.dropped_rows,
        )

    def start(self) -> None:
        """Start the background writer on the running loop."""
        self._task = asyncio.create_task(self._run(), name="prediction-log-writer")

    async def close(self) -> None:
        """Stop the background writer and write everything still buffered.

        The writer is asked to stop rather than cancelled: a cancel during a write would
        abandon chunks already taken from the buffer.
        """
        if self._task is not None:
            self._closing = True
            self._wake.set()
            await self._task
        await self.flush()

    async def flush(self) -> int:
        """Write every buffered chunk now; return the rows written.

        The buffer is swapped on the event loop (where chunks are appended), so no chunk
        can slip between taking and writing; the write itself runs in a worker thread. On
        failure the chunks are kept for the next attempt and the error is logged.
        """
        async with self._flush_lock:
            chunks, self._pending = self._pending, []
            rows = sum(len(chunk) for chunk in chunks)
            self._pending_rows -= rows
            if not chunks:
                return 0
            try:
                await asyncio.to_thread(_write_chunks, self.root, chunks)
            except Exception:
                logger.exception("prediction log: writing %d rows failed; kept for retry", rows)
                self._pending = chunks + self._pending
                self._pending_rows += rows
                self._failing = True
                self._on_failed(rows)
                self._enforce_cap()
                return 0
            self._failing = False
            self._on_written(rows)
            return rows

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            self._wake.clear()
            await self.flush()


def _write_chunks(root: Path, chunks: list[LogChunk]) -> list[Path]:
    """Write chunks grouped by (UTC date, model features): one file per group.

    Each group's arrays are joined once and split by day once: at a few thousand
    predictions/s a flush holds thousands of one-request chunks, and per-chunk numpy calls
    held the GIL (and every request waiting on the event loop) for tens of milliseconds.
    """
    by_features: dict[tuple[str, ...], list[LogChunk]] = defaultdict(list)
    for chunk in chunks:
        by_features[chunk.features].append(chunk)
    written: list[Path] = []
    for features, group in by_features.items():
        columns, days = _joined_columns(features, group)
        table = pa.table(columns, schema=prediction_log_schema(features))
        for day in np.unique(days):
            part = table.filter(pa.array(days == day))  # one mask per day, not per column
            written.append(_write_part(partition_dir(root, str(day)), part))
    return written


def _joined_columns(
    features: tuple[str, ...], chunks: list[LogChunk]
) -> tuple[dict[str, pa.Array], np.ndarray]:
    """The log's columns over ``chunks`` (in order), and each row's UTC day."""
    sizes = [len(chunk) for chunk in chunks]
    timestamps = np.concatenate([chunk.timestamps for chunk in chunks])
    columns: dict[str, pa.Array] = {
        "request_id": pa.array(
            list(itertools.chain.from_iterable(chunk.request_ids for chunk in chunks)),
            pa.string(),
        ),
        "user_id": pa.array(np.concatenate([c.user_ids for c in chunks]), pa.int64()),
        "event_timestamp": pa.array(
            timestamps.astype("datetime64[ns]"), pa.timestamp("ns", tz="UTC")
        ),
        "model_name": pa.array(np.repeat([c.model_name for c in chunks], sizes), pa.string()),
        "model_version": pa.array(np.repeat([c.model_version for c in chunks], sizes), pa.string()),
        "churn_probability": pa.array(
            np.concatenate([c.probabilities for c in chunks]), pa.float64()
        ),
        "churn_predicted": pa.array(np.concatenate([c.predicted for c in chunks]), pa.bool_()),
    }
    matrix = np.concatenate([chunk.matrix for chunk in chunks])
    for index, name in enumerate(features):
        columns[name] = pa.array(matrix[:, index], pa.float64())
    return columns, timestamps.astype("datetime64[D]")


def _write_part(folder: Path, table: pa.Table) -> Path:
    """One part file, written under a dot-name and renamed durably."""
    folder.mkdir(parents=True, exist_ok=True)
    name = uuid.uuid4().hex
    temporary = folder / f".part-{name}.parquet.tmp"
    final = folder / f"part-{name}.parquet"
    pq.write_table(table, temporary)
    replace_durably(temporary, final)  # fsynced: a crash leaves no empty part
    return final
