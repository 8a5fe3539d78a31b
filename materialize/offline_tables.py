"""The offline tables ingest writes: merging usable rows in, and writing them durably.

A row already in a table with the same values is counted as already present; the same key
with other values is a correction. The tables are replaced whole and durably
(:mod:`core.files`), under a lock (:mod:`core.locks`) so that two ingests never both read
the old table.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import OfflineSourceError
from core.files import atomic_path
from core.locks import file_lock
from core.settings import DataSettings
from core.tables import (
    CREATED,
    EVENT_TIMESTAMP,
    FEATURE_COLUMNS,
    INGESTED_AT,
    LABEL,
    LABELS,
    USER_FEATURES,
    USER_ID,
)

# The offline tables written here (core.tables: one definition for writer and readers).
USER_FEATURES_COLUMNS = USER_FEATURES.names
LABELS_COLUMNS = LABELS.names
TABLE_KEY = list(USER_FEATURES.key)


@dataclass
class TableCounts:
    """What happened to the usable rows in one offline table."""

    new: int = 0
    corrected: int = 0
    already_present: int = 0

    @property
    def written(self) -> int:
        """Rows appended to (features) or changed in (labels) the table."""
        return self.new + self.corrected


def read_table(path: Path, columns: list[str]) -> pd.DataFrame | None:
    """An offline table with ``columns`` (None when there is none yet).

    Raises:
        OfflineSourceError: The table lacks one of ``columns``.
    """
    if not path.is_file():
        return None
    table = pd.read_parquet(path)
    if INGESTED_AT in columns and INGESTED_AT not in table.columns:
        # Written before arrivals were recorded: unknown.
        table[INGESTED_AT] = pd.Series(pd.NaT, index=table.index, dtype="datetime64[ns, UTC]")
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise OfflineSourceError(f"existing table {path} lacks column(s) {', '.join(missing)}")
    return table[columns]


def _same(left: pd.DataFrame, right: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Row-wise equality of aligned frames, with null equal to null."""
    equal = np.ones(len(left), dtype=bool)
    for column in columns:
        a, b = left[column].to_numpy(), right[column].to_numpy()
        equal &= (a == b) | (pd.isna(a) & pd.isna(b))
    return equal


def _classify(
    incoming: pd.DataFrame, existing: pd.DataFrame, value_columns: Sequence[str]
) -> tuple[pd.Series, pd.Series]:
    """Split incoming rows into (already present, correction) against the latest existing row.

    Both results are boolean Series on ``incoming``'s index; rows in neither are new keys.
    """
    latest = existing.drop_duplicates(subset=TABLE_KEY, keep="last")
    merged = incoming.reset_index().merge(
        latest, on=TABLE_KEY, how="left", suffixes=("", "_old"), indicator=True
    )
    found = (merged["_merge"] == "both").to_numpy()
    old = merged[[f"{column}_old" for column in value_columns]]
    old.columns = list(value_columns)
    same = found & _same(merged, old, value_columns)
    index = merged["index"].to_numpy()
    return (
        pd.Series(same, index=index).reindex(incoming.index),
        pd.Series(found & ~same, index=index).reindex(incoming.index),
    )


def merge_features(
    usable: pd.DataFrame, existing: pd.DataFrame | None, now: pd.Timestamp, *, backfill: bool
) -> tuple[pd.DataFrame, TableCounts, bool]:
    """The new user-features table, the counts, and whether it changed.

    ``created`` of a new row: its event time in a back-fill, else its arrival (``now``).
    """
    arrived = pd.Series(now, index=usable.index).astype("datetime64[ns, UTC]")
    incoming = pd.DataFrame(
        {
            USER_ID: usable["user_id"].astype("int64"),
            EVENT_TIMESTAMP: usable["event_date"],
            # Copied: corrections are assigned below and must not share memory.
            CREATED: usable["event_date"].copy() if backfill else arrived.copy(),
            **{name: usable[name] for name in FEATURE_COLUMNS},
            INGESTED_AT: arrived,
        }
    )
    if existing is None:
        existing = incoming.iloc[:0]
    existing = existing.sort_values([*TABLE_KEY, CREATED], kind="stable")
    present, corrected = _classify(incoming, existing, FEATURE_COLUMNS)
    corrections = incoming[corrected]
    if len(corrections):
        # Feast picks the row with the latest `created`: the correction must be later.
        previous = existing.groupby(TABLE_KEY)[CREATED].max()
        keys = pd.MultiIndex.from_frame(corrections[TABLE_KEY])
        floor = previous.reindex(keys) + pd.Timedelta(microseconds=1)
        incoming.loc[corrected, CREATED] = floor.clip(lower=now).to_numpy()
    appended = incoming[~present]
    counts = TableCounts(
        new=int(len(appended) - corrected.sum()),
        corrected=int(corrected.sum()),
        already_present=int(present.sum()),
    )
    table = pd.concat([existing, appended], ignore_index=True) if len(appended) else existing
    table = table.sort_values([EVENT_TIMESTAMP, USER_ID, CREATED], kind="stable")
    return table[USER_FEATURES_COLUMNS].reset_index(drop=True), counts, len(appended) > 0


def merge_labels(
    labelled: pd.DataFrame, existing: pd.DataFrame | None
) -> tuple[pd.DataFrame, TableCounts, bool]:
    """The new labels table (one row per key: a correction replaces), counts, changed."""
    incoming = pd.DataFrame(
        {
            USER_ID: labelled["user_id"].astype("int64"),
            EVENT_TIMESTAMP: labelled["event_date"],
            LABEL: labelled["label"].astype("int64"),
        }
    )
    if existing is None:
        existing = incoming.iloc[:0]
    present, corrected = _classify(incoming, existing, [LABEL])
    changed = incoming[~present]
    counts = TableCounts(
        new=int(len(changed) - corrected.sum()),
        corrected=int(corrected.sum()),
        already_present=int(present.sum()),
    )
    # The labels table is the training entity frame: a key appears once, the latest wins.
    table = pd.concat([existing, changed], ignore_index=True).drop_duplicates(
        subset=TABLE_KEY, keep="last"
    )
    table = table.sort_values([EVENT_TIMESTAMP, USER_ID], kind="stable")
    return table[LABELS_COLUMNS].reset_index(drop=True), counts, len(changed) > 0


def write_parquet_atomically(frame: pd.DataFrame, path: Path) -> None:
    """Write Parquet beside ``path``, fsync it, then rename it over ``path`` (durable).

    Timestamps are stored in microseconds: Spark (the spark profile reads the same tables)
    refuses Parquet nanosecond timestamps. A value finer than a microsecond raises rather
    than being truncated silently.
    """
    with atomic_path(path) as temporary:
        frame.to_parquet(
            temporary, index=False, coerce_timestamps="us", allow_truncated_timestamps=False
        )


def remove_stale_temporaries(data: DataSettings) -> int:
    """Delete temporary files a killed ingest left beside the tables; return how many."""
    stale = [
        path
        for folder in (data.offline_dir, data.quarantine_dir)
        if folder.is_dir()
        for path in folder.glob(".*.tmp")
    ]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


@contextmanager
def locked_offline_tables(data: DataSettings) -> Iterator[None]:
    """Hold an exclusive lock on the offline tables for a read-merge-write.

    Two ingests at once would otherwise both read the old table and the second rename
    would drop the first one's rows.
    """
    # No timeout: an ingest waits for the one before it, however long that takes.
    with file_lock(data.offline_dir / ".ingest.lock", timeout=None):
        yield
