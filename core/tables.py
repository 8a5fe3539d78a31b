"""The offline tables stages exchange: ``user_features`` and ``labels`` (parquet).

``churn ingest`` writes them; the Feast repo's batch source reads ``user_features``;
training joins ``labels`` (its entity frame) through the feature service, and drift
rebuilds the champion's training sample from them. One definition of their columns here,
so a renamed column breaks the writer and every reader together.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import TableReadError

if TYPE_CHECKING:
    import pandas as pd

USER_ID = "user_id"
EVENT_TIMESTAMP = "event_timestamp"
CREATED = "created"
INGESTED_AT = "ingested_at"
LABEL = "label"
FEATURE_COLUMNS: tuple[str, ...] = ("feature_1", "feature_2")

# Stored in microseconds: Spark (the spark profile) refuses Parquet nanosecond timestamps.
_UTC_TIME = "datetime64[us, UTC]"


@dataclass(frozen=True)
class Column:
    """A column and the pandas dtype it is written with."""

    name: str
    dtype: str


@dataclass(frozen=True)
class OfflineTable:
    """An offline table: its columns in file order and its key.

    Attributes:
        name: Table name (the parquet file's stem).
        columns: Columns in the order they are written.
        key: Columns that identify a row (with ``created`` as a tie-breaker where kept).
    """

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        """Column names in file order."""
        return [column.name for column in self.columns]

    @property
    def dtypes(self) -> dict[str, str]:
        """Pandas dtype per column."""
        return {column.name: column.dtype for column in self.columns}

    def missing(self, present: Iterable[str]) -> list[str]:
        """The table's columns that are not in ``present``, in file order."""
        have = set(present)
        return [name for name in self.names if name not in have]


USER_FEATURES = OfflineTable(
    name="user_features",
    columns=(
        Column(USER_ID, "int64"),
        Column(EVENT_TIMESTAMP, _UTC_TIME),
        # When the value became available (Feast's created_timestamp_column): a
        # correction gets a later one, a back-fill its event time.
        Column(CREATED, _UTC_TIME),
        *(Column(name, "float64") for name in FEATURE_COLUMNS),
        Column(INGESTED_AT, _UTC_TIME),  # when ingest wrote the row (NaT: before it was kept)
    ),
    key=(USER_ID, EVENT_TIMESTAMP),
)

LABELS = OfflineTable(
    name="labels",
    columns=(
        Column(USER_ID, "int64"),
        Column(EVENT_TIMESTAMP, _UTC_TIME),
        Column(LABEL, "int64"),  # 1: churned, 0: stayed
    ),
    key=(USER_ID, EVENT_TIMESTAMP),
)


def read_time_window(
    location: str | Path,
    columns: list[str],
    *,
    start: pd.Timestamp,
    end: pd.Timestamp,
    timestamp: str = EVENT_TIMESTAMP,
) -> pd.DataFrame:
    """The rows of a Parquet table whose ``timestamp`` is in ``[start, end]``, only ``columns``.

    The time filter is pushed into the scan, so only the window is ever held. A naive
    timestamp column holds UTC times.

    Raises:
        TableReadError: The table is missing, lacks a column, or its time column is not a
            timestamp.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.dataset as ds

    if not Path(location).exists():
        raise TableReadError(f"table {location} does not exist")
    dataset = ds.dataset(str(location), format="parquet")
    missing = [
        column
        for column in dict.fromkeys([*columns, timestamp])
        if column not in dataset.schema.names
    ]
    if missing:
        raise TableReadError(f"table {location} lacks {', '.join(missing)}")
    stamp_type = dataset.schema.field(timestamp).type
    if not pa.types.is_timestamp(stamp_type):
        raise TableReadError(f"table {location}: {timestamp} is {stamp_type}, not a timestamp")
    naive = stamp_type.tz is None
    low, high = (
        pa.scalar((t.tz_convert(None) if naive else t).to_pydatetime(), type=stamp_type)
        for t in (pd.Timestamp(start), pd.Timestamp(end))
    )
    field = ds.field(timestamp)
    table = dataset.to_table(columns=columns, filter=(field >= low) & (field <= high))
    frame = table.to_pandas()
    if timestamp in frame.columns:
        frame[timestamp] = pd.to_datetime(frame[timestamp], utc=True)
    return frame
