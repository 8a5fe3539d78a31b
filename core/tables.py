"""The offline tables stages exchange: ``user_features`` and ``labels`` (parquet).

``churn ingest`` writes them; the Feast repo's batch source reads ``user_features``;
training joins ``labels`` (its entity frame) through the feature service, and drift
rebuilds the champion's training sample from them. One definition of their columns here,
so a renamed column breaks the writer and every reader together.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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
