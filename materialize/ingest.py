"""Stage: validate raw events and write the offline tables (``churn ingest RAW_PATH``).

The reference design's validation, done properly. A file whose columns are missing or
mistyped is rejected as a whole (nothing written). Otherwise every row is accounted for:

* rows that cannot be used go to one quarantine Parquet file per run, with a ``reason``:
  a null ``user_id`` or ``event_date``, a ``user_id`` that is not an exact 64-bit integer,
  a timestamp the stores cannot order (at or before 1970-01-01, or beyond what pandas
  holds, e.g. year 3024), a timestamp in the future, an infinite feature value, or a
  repeat of a (``user_id``, ``event_date``) already seen earlier in the same batch;
* usable rows go to the user-features table; their label goes to the labels table unless
  it is null or not 0/1 (counted, the features are still good);
* a row already in the tables with the same values is skipped and counted, so re-running on
  the same input changes nothing; the same key with other values is a correction.

``ingested_at`` records when each row arrived (the ingest time). ``created`` is when the row
became available to serving, which Feast's created-time filter and the leakage audit use:

* an incremental ingest (the default) sets it to the arrival time, so a row ingested days
  after its event time is not used for labels before it arrived;
* a back-fill (``--backfill``: the first historical load) declares rows available at their
  event time, and says so in its report;
* a correction (same key, other values) gets the ingest time, always later than the row it
  corrects, in both modes.
"""

from __future__ import annotations

import fcntl
import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from cli.errors import exit_on_error
from core.errors import InputError, UnavailableError
from core.files import atomic_path
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

logger = logging.getLogger(__name__)

# The raw events contract (written by `churn generate`, validated here).
RAW_COLUMNS = ["user_id", "feature_1", "feature_2", "label", "event_date"]
# The offline tables written here (core.tables: one definition for writer and readers).
USER_FEATURES_COLUMNS = USER_FEATURES.names
LABELS_COLUMNS = LABELS.names
TABLE_KEY = list(USER_FEATURES.key)
NULL_RATE_WARNING = 0.20

# Quarantine reasons, in the order they are checked: a row gets the first that applies.
NULL_USER_ID = "null_user_id"
UNREPRESENTABLE_USER_ID = "unrepresentable_user_id"
NULL_EVENT_DATE = "null_event_date"
UNORDERABLE_TIMESTAMP = "unorderable_timestamp"
FUTURE_TIMESTAMP = "future_timestamp"
NON_FINITE_FEATURE = "non_finite_feature"
DUPLICATE_KEY = "duplicate_key"
QUARANTINE_REASONS = (
    NULL_USER_ID,
    UNREPRESENTABLE_USER_ID,
    NULL_EVENT_DATE,
    UNORDERABLE_TIMESTAMP,
    FUTURE_TIMESTAMP,
    NON_FINITE_FEATURE,
)

# Event times the online stores can order: after the epoch (Feast reads an epoch timestamp
# as "nothing stored"; negative seconds break the Redis compare) and before 2200 (the Redis
# script compares microseconds as doubles, exact up to 2**53, about year 2255).
EARLIEST_EVENT = pd.Timestamp("1970-01-01", tz="UTC")
LATEST_EVENT = pd.Timestamp("2200-01-01", tz="UTC")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EXACT_FLOAT = 2**53  # float64 holds every integer up to here, and no longer all of them


class IngestError(Exception):
    """The raw input cannot be ingested at all; nothing was written."""


class UnreadableInputError(IngestError, UnavailableError):
    """The raw file is missing, of an unsupported format, or not readable."""


class SchemaError(IngestError, InputError):
    """Required columns are missing or have the wrong type."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("raw events schema: " + "; ".join(self.problems))


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


@dataclass
class IngestReport:
    """Accounting of one ingest run: every input row is in exactly one bucket."""

    source: str
    rows_in: int
    quarantined: dict[str, int]
    quarantine_path: Path | None
    features: TableCounts
    labels: TableCounts
    labels_null: int
    labels_invalid: int
    null_counts: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    user_features_path: Path | None = None
    labels_path: Path | None = None
    backfill: bool = False
    ingested_at: datetime | None = None

    @property
    def rows_quarantined(self) -> int:
        """Rows written to the quarantine file."""
        return sum(self.quarantined.values())

    def summary_lines(self) -> list[str]:
        """Human-readable lines for the command output."""
        reasons = ", ".join(f"{reason} {count}" for reason, count in self.quarantined.items())
        nulls = ", ".join(f"{column} {count}" for column, count in self.null_counts.items())
        lines = [
            f"read {self.rows_in} rows from {self.source} (nulls: {nulls})",
            f"user features: {self.features.new} new, {self.features.corrected} corrected, "
            f"{self.features.already_present} already present -> {self.user_features_path}",
            f"labels: {self.labels.new} new, {self.labels.corrected} corrected, "
            f"{self.labels.already_present} already present, {self.labels_null} null, "
            f"{self.labels_invalid} not 0/1 (features kept) -> {self.labels_path}",
            f"quarantined: {self.rows_quarantined} ({reasons or 'none'})"
            + (f" -> {self.quarantine_path}" if self.quarantine_path else ""),
        ]
        if self.backfill:
            lines.append(
                f"back-fill: {self.features.new} new rows declared available at their event "
                f"time (created = event_timestamp), ingested at {self.ingested_at}"
            )
        else:
            lines.append(f"incremental: new rows available from their arrival ({self.ingested_at})")
        return [*lines, *(f"warning: {warning}" for warning in self.warnings)]


# Columns the reader adds for values that could not be taken as they are: the original
# text of a user_id or event_date the stores cannot represent (kept in the quarantine file).
USER_ID_RAW = "user_id_raw"
EVENT_DATE_RAW = "event_date_raw"


def read_raw_events(path: Path) -> pd.DataFrame:
    """Read a raw events file: Parquet (``.parquet``, ``.pq``) or CSV (``.csv``).

    CSV carries no types: ``user_id`` is read as text and converted exactly (a null in the
    column would otherwise turn it into floats and round ids above 2**53), and
    ``event_date`` is parsed as ISO 8601 (naive means UTC). A value that is not an integer or
    not a timestamp makes the column mistyped; an integer beyond int64 or a timestamp
    beyond what pandas holds (e.g. year 3024) is kept as text for the quarantine.

    Raises:
        UnreadableInputError: Missing file, unknown suffix or unreadable content.
        SchemaError: ``user_id`` or ``event_date`` of a CSV file holds values of another kind.
    """
    if not path.is_file():
        raise UnreadableInputError(f"no such file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return _read_parquet(path)
        if suffix == ".csv":
            # round_trip: floats read back exactly as written, so re-ingesting is a no-op.
            frame = pd.read_csv(path, float_precision="round_trip", dtype={"user_id": "string"})
        else:
            raise UnreadableInputError(f"{path}: unsupported format {suffix!r} (Parquet or CSV)")
    except (OSError, ValueError) as error:
        raise UnreadableInputError(f"cannot read {path}: {error}") from error
    problems = []
    if "user_id" in frame.columns:
        ids, problem = _user_ids_from_text(frame["user_id"])
        frame = frame.assign(user_id=ids[0], **{USER_ID_RAW: ids[1]})
        problems += [problem] if problem else []
    if "event_date" in frame.columns and not pd.api.types.is_datetime64_any_dtype(
        frame["event_date"]
    ):
        parsed, raw, problem = _timestamps_from_text(frame["event_date"])
        frame = frame.assign(event_date=parsed, **{EVENT_DATE_RAW: raw})
        problems += [problem] if problem else []
    if problems:
        raise SchemaError(problems)
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    """Parquet with timestamps in their stored unit (no overflow converting to nanoseconds)."""
    import pyarrow.parquet as pq

    frame: pd.DataFrame = pq.read_table(path).to_pandas(coerce_temporal_nanoseconds=False)
    return frame


def _user_ids_from_text(text: pd.Series) -> tuple[tuple[pd.Series, pd.Series], str | None]:
    """(Int64 ids, original text of ids beyond int64) of a text column, or a problem."""
    from decimal import Decimal, InvalidOperation

    import pyarrow as pa
    import pyarrow.compute as pc

    # Fast path in Arrow: up to 18 digits always fits int64, and Arrow parses text exactly
    # (pandas' own text-to-int conversion goes through float64).
    trimmed = pc.replace_substring_regex(
        pc.utf8_trim_whitespace(pa.array(text.astype("object"), type=pa.string())), r"^\+", ""
    )
    matched = pc.match_substring_regex(trimmed, r"^-?\d{1,18}$")
    exact = pc.cast(pc.if_else(matched, trimmed, None), pa.int64())
    ids = pd.Series(
        exact.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get), index=text.index
    )
    plain = pd.Series(matched.fill_null(False).to_numpy(zero_copy_only=False), index=text.index)
    raw = pd.Series(None, index=text.index, dtype="object")
    fractional = other = None
    for index, value in text[~plain & text.notna()].items():
        try:
            number: Decimal | None = Decimal(str(value).strip())
        except InvalidOperation:
            other = other or value
            number = None
        if number is not None and (not number.is_finite() or number != number.to_integral()):
            fractional = fractional or value
            number = None
        if number is None:
            continue
        exact = int(number)
        if _INT64_MIN <= exact <= _INT64_MAX:
            ids[index] = exact
        else:
            raw[index] = str(value)
    problem = None
    if other is not None:
        problem = f"user_id: expected integers, got text (e.g. {other!r})"
    elif fractional is not None:
        problem = (
            f"user_id: expected integers, got fractional or infinite values (e.g. {fractional!r})"
        )
    return (ids, raw), problem


def _timestamps_from_text(text: pd.Series) -> tuple[pd.Series, pd.Series, str | None]:
    """(UTC timestamps, original text of those out of pandas' range, problem) of ISO text."""
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    failed = text.notna() & parsed.isna()
    raw = pd.Series(None, index=text.index, dtype="object")
    for index, value in text[failed].items():
        try:
            datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            continue
        raw[index] = str(value)  # a real timestamp, only beyond what pandas can hold
    bad = failed & raw.isna()
    problem = None
    if bad.any():
        example = text[bad].iloc[0]
        problem = f"event_date: {int(bad.sum())} value(s) are not timestamps (e.g. {example!r})"
    return parsed, raw, problem


def _is_number(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _schema_problems(frame: pd.DataFrame) -> list[str]:
    """Every missing or mistyped required column, described."""
    missing = [column for column in RAW_COLUMNS if column not in frame.columns]
    problems = [f"missing column(s): {', '.join(missing)}"] if missing else []
    present = {column: frame[column] for column in RAW_COLUMNS if column in frame.columns}
    if "user_id" in present:
        user_id = present["user_id"]
        if not _is_number(user_id) and not _holds_python_ints(user_id):
            problems.append(f"user_id: expected integers, got {user_id.dtype}")
        elif pd.api.types.is_float_dtype(user_id):
            # A null in an integer column turns it into floats; whole numbers are fine.
            values = user_id.dropna().to_numpy(dtype=np.float64)
            if not np.all(np.isfinite(values) & (values == np.round(values))):
                problems.append("user_id: expected integers, got fractional or infinite values")
    for column in (*FEATURE_COLUMNS, "label"):
        if column in present and not _is_number(present[column]):
            problems.append(f"{column}: expected numbers, got {present[column].dtype}")
    if "event_date" in present and not pd.api.types.is_datetime64_any_dtype(present["event_date"]):
        problems.append(f"event_date: expected timestamps, got {present['event_date'].dtype}")
    return problems


def _holds_python_ints(series: pd.Series) -> bool:
    """Whether an object column holds only Python integers (and nulls), e.g. beyond int64."""
    if series.dtype != object:
        return False
    values = series.dropna().tolist()
    return all(
        isinstance(value, int | np.integer) and not isinstance(value, bool) for value in values
    )


def _exact_ids(user_id: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(Int64 ids, original text of the ids that are not exact int64 values).

    Unsigned or Python integers beyond int64 cannot be keys; floats above 2**53 may already
    have been rounded (ids that differ by one land on the same float), so they are not
    trusted either. Both are kept as text for the quarantine.
    """
    if pd.api.types.is_signed_integer_dtype(user_id):
        return user_id.astype("Int64"), pd.Series(None, index=user_id.index, dtype="object")
    if pd.api.types.is_float_dtype(user_id):
        values = user_id.to_numpy(dtype=np.float64, na_value=np.nan)
        inexact = pd.Series(np.abs(values) > _EXACT_FLOAT, index=user_id.index)
    else:
        numbers = [None if pd.isna(value) else int(value) for value in user_id.tolist()]
        inexact = pd.Series(
            [value is not None and not _INT64_MIN <= value <= _INT64_MAX for value in numbers],
            index=user_id.index,
        )
        user_id = pd.Series(numbers, index=user_id.index, dtype="object")
    raw = pd.Series(None, index=user_id.index, dtype="object")
    raw[inexact] = [str(value) for value in user_id[inexact].tolist()]
    kept = user_id.where(~inexact)
    ids = pd.Series(
        pd.array([None if pd.isna(value) else int(value) for value in kept], dtype="Int64"),
        index=user_id.index,
    )
    return ids, raw


def _exact_event_dates(event_date: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(UTC nanosecond timestamps, original text of those the stores cannot order)."""
    if getattr(event_date.dt, "tz", None) is None:
        event_date = event_date.dt.tz_localize("UTC")
    event_date = event_date.dt.tz_convert("UTC")
    outside = (event_date <= EARLIEST_EVENT) | (event_date >= LATEST_EVENT)
    raw = pd.Series(None, index=event_date.index, dtype="object")
    raw[outside] = [moment.isoformat() for moment in event_date[outside]]
    kept = event_date.where(~outside)
    return kept.astype("datetime64[ns, UTC]"), raw


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """The required columns with the types used from here on (naive timestamps are UTC).

    Values the stores cannot represent become null, with their original text in
    ``user_id_raw`` / ``event_date_raw`` (the quarantine reasons come from those).
    """
    frame = frame.reset_index(drop=True)  # positions are the rows' identity from here on
    user_id, user_id_raw = _exact_ids(frame["user_id"])
    event_date, event_date_raw = _exact_event_dates(frame["event_date"])
    for column, raw in ((USER_ID_RAW, user_id_raw), (EVENT_DATE_RAW, event_date_raw)):
        if column in frame.columns:  # found by the reader (CSV text beyond the types)
            found = raw.isna() & frame[column].notna()
            raw[found] = frame.loc[found, column].astype(str)
        frame[column] = raw
    return pd.DataFrame(
        {
            "user_id": user_id,
            "feature_1": frame["feature_1"].astype("float64"),
            "feature_2": frame["feature_2"].astype("float64"),
            "label": frame["label"].astype("float64"),
            "event_date": event_date,
            USER_ID_RAW: frame[USER_ID_RAW].astype("string"),
            EVENT_DATE_RAW: frame[EVENT_DATE_RAW].astype("string"),
        }
    )


def _quarantine_reasons(rows: pd.DataFrame, now: pd.Timestamp) -> pd.Series:
    """The first reason that makes each row unusable, or None."""
    features = rows[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float64)
    checks = [
        (NULL_USER_ID, rows["user_id"].isna() & rows[USER_ID_RAW].isna()),
        (UNREPRESENTABLE_USER_ID, rows[USER_ID_RAW].notna()),
        (NULL_EVENT_DATE, rows["event_date"].isna() & rows[EVENT_DATE_RAW].isna()),
        (UNORDERABLE_TIMESTAMP, rows[EVENT_DATE_RAW].notna()),
        (FUTURE_TIMESTAMP, rows["event_date"] > now),
        # Nulls are allowed in features (Feast serves them as missing); infinities are not.
        (NON_FINITE_FEATURE, pd.Series(np.isinf(features).any(axis=1), index=rows.index)),
    ]
    reasons = pd.Series(None, index=rows.index, dtype="object")
    for reason, failed in checks:
        reasons[reasons.isna() & failed.fillna(False).astype(bool)] = reason
    # Among otherwise usable rows, the first of a key wins and its repeats are quarantined.
    usable = reasons.isna()
    repeated = rows.loc[usable].duplicated(subset=["user_id", "event_date"], keep="first")
    reasons[repeated[repeated].index] = DUPLICATE_KEY
    return reasons


def _read_table(path: Path, columns: list[str]) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    table = pd.read_parquet(path)
    if INGESTED_AT in columns and INGESTED_AT not in table.columns:
        # Written before arrivals were recorded: unknown.
        table[INGESTED_AT] = pd.Series(pd.NaT, index=table.index, dtype="datetime64[ns, UTC]")
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise IngestError(f"existing table {path} lacks column(s) {', '.join(missing)}")
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


def _merge_features(
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


def _merge_labels(
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


def _remove_stale_temporaries(data: DataSettings) -> int:
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
def _locked_offline_tables(data: DataSettings) -> Iterator[None]:
    """Hold an exclusive lock on the offline tables for a read-merge-write.

    Two ingests at once would otherwise both read the old table and the second rename
    would drop the first one's rows.
    """
    data.offline_dir.mkdir(parents=True, exist_ok=True)
    with (data.offline_dir / ".ingest.lock").open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def ingest_raw_events(
    raw: Path | pd.DataFrame,
    *,
    data: DataSettings,
    now: datetime | pd.Timestamp | None = None,
    backfill: bool = False,
) -> IngestReport:
    """Validate raw events and merge them into the offline feature and label tables.

    Args:
        raw: A raw events file (Parquet or CSV) or an already loaded frame.
        data: Where the offline tables and the quarantine folder are.
        now: The ingest (arrival) time: later timestamps are quarantined as future, every
            row's ``ingested_at``, and the ``created`` of new rows (incremental) and of
            corrections. Default: the current time.
        backfill: Declare new rows available at their event time (``created`` =
            ``event_timestamp``): the first historical load, whose rows serving had as
            they happened. Otherwise rows are available from their arrival.

    Returns:
        The accounting of every input row.

    Raises:
        UnreadableInputError: The file cannot be read (nothing written).
        SchemaError: Required columns are missing or mistyped (nothing written).
        IngestError: An existing offline table lacks required columns (nothing written).
    """
    source = str(raw) if isinstance(raw, Path) else "<frame>"
    frame = read_raw_events(raw) if isinstance(raw, Path) else raw
    problems = _schema_problems(frame)
    if problems:
        raise SchemaError(problems)
    rows = _normalise(frame)
    now_ts = pd.Timestamp(now if now is not None else datetime.now(UTC))
    now_ts = now_ts.tz_localize("UTC") if now_ts.tzinfo is None else now_ts.tz_convert("UTC")
    now_ts = now_ts.floor("us")  # DuckDB keeps microseconds: keep `created` distinct there

    raw_text = {"user_id": rows[USER_ID_RAW], "event_date": rows[EVENT_DATE_RAW]}
    null_counts = {
        column: int((rows[column].isna() & raw_text.get(column, rows[column]).isna()).sum())
        for column in RAW_COLUMNS
    }
    warnings = [
        f"{column} is null in {count} of {len(rows)} rows ({count / len(rows):.1%} > "
        f"{NULL_RATE_WARNING:.0%})"
        for column, count in null_counts.items()
        if len(rows) and count / len(rows) > NULL_RATE_WARNING
    ]
    logger.info("raw events %s: %d rows, nulls %s", source, len(rows), null_counts)
    for warning in warnings:
        logger.warning(warning)

    reasons = _quarantine_reasons(rows, now_ts)
    usable = rows[reasons.isna()]
    label = usable["label"]
    has_label = label.isin([0.0, 1.0])
    labels_null = int(label.isna().sum())

    with _locked_offline_tables(data):
        # Under the lock no other ingest is writing: temporaries are a killed run's leftovers.
        stale = _remove_stale_temporaries(data)
        if stale:
            logger.warning("removed %d temporary file(s) of an interrupted ingest", stale)
        features_table, feature_counts, features_changed = _merge_features(
            usable,
            _read_table(data.user_features_path, USER_FEATURES_COLUMNS),
            now_ts,
            backfill=backfill,
        )
        labels_table, label_counts, labels_changed = _merge_labels(
            usable[has_label], _read_table(data.labels_path, LABELS_COLUMNS)
        )
        # Unchanged tables are not rewritten: a re-run leaves the files exactly as they were.
        if features_changed or not data.user_features_path.exists():
            write_parquet_atomically(features_table, data.user_features_path)
        if labels_changed or not data.labels_path.exists():
            write_parquet_atomically(labels_table, data.labels_path)

        quarantine_path = None
        rejected = reasons.notna()
        if rejected.any():
            quarantine = rows[rejected].assign(
                reason=reasons[rejected].astype(str), source_row=np.flatnonzero(rejected)
            )
            stamp = now_ts.strftime("%Y%m%dT%H%M%S%fZ")
            name = f"ingest-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
            quarantine_path = data.quarantine_dir / name
            write_parquet_atomically(quarantine.reset_index(drop=True), quarantine_path)

    counted = reasons[rejected].value_counts()
    return IngestReport(
        source=source,
        rows_in=len(rows),
        quarantined={
            reason: int(counted.get(reason, 0)) for reason in (*QUARANTINE_REASONS, DUPLICATE_KEY)
        },
        quarantine_path=quarantine_path,
        features=feature_counts,
        labels=label_counts,
        labels_null=labels_null,
        labels_invalid=int(len(usable) - has_label.sum() - labels_null),
        null_counts=null_counts,
        warnings=warnings,
        user_features_path=data.user_features_path,
        labels_path=data.labels_path,
        backfill=backfill,
        ingested_at=now_ts.to_pydatetime(),
    )


def ingest_command(
    raw_path: Annotated[Path, typer.Argument(help="Raw events file (.parquet, .pq or .csv).")],
    backfill: Annotated[
        bool,
        typer.Option(
            "--backfill",
            help="Historical load: declare new rows available at their event time "
            "(created = event_timestamp). Default: available from their arrival (now).",
        ),
    ] = False,
) -> None:
    """Validate raw events and merge them into the offline feature and label tables.

    Unusable rows go to a Parquet file under $CHURN_DATA_DIR/quarantine with a reason.

    Reasons: null user_id or event_date, user_id beyond int64 (or a float above 2**53),
    timestamp at or before 1970 or from 2200 on, future timestamp, infinite feature,
    repeated key.

    Each row records its arrival (ingested_at). New rows are available to training from
    their arrival (created = now) unless --backfill declares them available at their event
    time.

    A null or non-0/1 label keeps the row's features but writes no label.

    A column more than 20% null is warned about. Re-running on the same file changes nothing.

    Exit 0: ingested (quarantined rows and warnings included).

    Exit 1: unreadable file or damaged offline table; nothing written.

    Exit 2: missing or mistyped columns; nothing written.
    """
    with exit_on_error():
        report = ingest_raw_events(raw_path, data=DataSettings(), backfill=backfill)
    for line in report.summary_lines():
        typer.echo(line)
