"""Stage: validate raw events and write the offline tables (``churn ingest RAW_PATH``).

The reference design's validation, done properly. A file whose columns are missing or
mistyped is rejected as a whole (nothing written). Otherwise every row is accounted for:

* rows that cannot be used go to one quarantine Parquet file per run, with a ``reason``:
  a null ``user_id`` or ``event_date``, a timestamp in the future, an infinite feature value,
  or a repeat of a (``user_id``, ``event_date``) already seen earlier in the same batch;
* usable rows go to the user-features table; their label goes to the labels table unless
  it is null or not 0/1 (counted, the features are still good);
* a row already in the tables with the same values is skipped and counted, so re-running on
  the same input changes nothing; the same key with other values is a correction.

``created`` (Feast's tie-breaker between rows of one key and timestamp) is the snapshot's own
timestamp for a first-seen row, so ingesting the same raw data gives the same tables whenever
it is done, and the ingest time for a correction, always later than the row it corrects.
"""

from __future__ import annotations

import fcntl
import logging
import os
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

from materialize.settings import DataSettings

logger = logging.getLogger(__name__)

# The raw events contract (written by `churn generate`, validated here).
RAW_COLUMNS = ["user_id", "feature_1", "feature_2", "label", "event_date"]
FEATURE_COLUMNS = ("feature_1", "feature_2")
USER_FEATURES_COLUMNS = ["user_id", "event_timestamp", "created", "feature_1", "feature_2"]
LABELS_COLUMNS = ["user_id", "event_timestamp", "label"]
TABLE_KEY = ["user_id", "event_timestamp"]
NULL_RATE_WARNING = 0.20

# Quarantine reasons, in the order they are checked: a row gets the first that applies.
NULL_USER_ID = "null_user_id"
NULL_EVENT_DATE = "null_event_date"
FUTURE_TIMESTAMP = "future_timestamp"
NON_FINITE_FEATURE = "non_finite_feature"
DUPLICATE_KEY = "duplicate_key"
QUARANTINE_REASONS = (NULL_USER_ID, NULL_EVENT_DATE, FUTURE_TIMESTAMP, NON_FINITE_FEATURE)

EXIT_OK = 0
EXIT_UNREADABLE = 1
EXIT_SCHEMA = 2


class IngestError(Exception):
    """The raw input cannot be ingested at all; nothing was written."""


class UnreadableInputError(IngestError):
    """The raw file is missing, of an unsupported format, or not readable."""


class SchemaError(IngestError):
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
        return [*lines, *(f"warning: {warning}" for warning in self.warnings)]


def read_raw_events(path: Path) -> pd.DataFrame:
    """Read a raw events file: Parquet (``.parquet``, ``.pq``) or CSV (``.csv``).

    CSV carries no types: ``event_date`` is parsed as ISO 8601 (naive means UTC) and a value
    that does not parse makes the column mistyped.

    Raises:
        UnreadableInputError: Missing file, unknown suffix or unreadable content.
        SchemaError: ``event_date`` of a CSV file holds values that are not timestamps.
    """
    if not path.is_file():
        raise UnreadableInputError(f"no such file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix == ".csv":
            # round_trip: floats read back exactly as written, so re-ingesting is a no-op.
            frame = pd.read_csv(path, float_precision="round_trip")
        else:
            raise UnreadableInputError(f"{path}: unsupported format {suffix!r} (Parquet or CSV)")
    except (OSError, ValueError) as error:
        raise UnreadableInputError(f"cannot read {path}: {error}") from error
    if "event_date" in frame.columns and not pd.api.types.is_datetime64_any_dtype(
        frame["event_date"]
    ):
        text = frame["event_date"]
        parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
        bad = text.notna() & parsed.isna()
        if bad.any():
            example = text[bad].iloc[0]
            raise SchemaError(
                [f"event_date: {int(bad.sum())} value(s) are not timestamps (e.g. {example!r})"]
            )
        frame["event_date"] = parsed
    return frame


def _is_number(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _schema_problems(frame: pd.DataFrame) -> list[str]:
    """Every missing or mistyped required column, described."""
    missing = [column for column in RAW_COLUMNS if column not in frame.columns]
    problems = [f"missing column(s): {', '.join(missing)}"] if missing else []
    present = {column: frame[column] for column in RAW_COLUMNS if column in frame.columns}
    if "user_id" in present:
        user_id = present["user_id"]
        if not _is_number(user_id):
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


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """The required columns with the types used from here on (naive timestamps are UTC)."""
    frame = frame.reset_index(drop=True)  # positions are the rows' identity from here on
    event_date = frame["event_date"]
    if getattr(event_date.dt, "tz", None) is None:
        event_date = event_date.dt.tz_localize("UTC")
    return pd.DataFrame(
        {
            "user_id": frame["user_id"].astype("Int64"),
            "feature_1": frame["feature_1"].astype("float64"),
            "feature_2": frame["feature_2"].astype("float64"),
            "label": frame["label"].astype("float64"),
            "event_date": event_date.dt.tz_convert("UTC").astype("datetime64[ns, UTC]"),
        }
    )


def _quarantine_reasons(rows: pd.DataFrame, now: pd.Timestamp) -> pd.Series:
    """The first reason that makes each row unusable, or None."""
    features = rows[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float64)
    checks = [
        (NULL_USER_ID, rows["user_id"].isna()),
        (NULL_EVENT_DATE, rows["event_date"].isna()),
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
    usable: pd.DataFrame, existing: pd.DataFrame | None, now: pd.Timestamp
) -> tuple[pd.DataFrame, TableCounts, bool]:
    """The new user-features table, the counts, and whether it changed."""
    incoming = pd.DataFrame(
        {
            "user_id": usable["user_id"].astype("int64"),
            "event_timestamp": usable["event_date"],
            "created": usable["event_date"].copy(),  # assigned below: must not share memory
            "feature_1": usable["feature_1"],
            "feature_2": usable["feature_2"],
        }
    )
    if existing is None:
        existing = incoming.iloc[:0]
    existing = existing.sort_values([*TABLE_KEY, "created"], kind="stable")
    present, corrected = _classify(incoming, existing, FEATURE_COLUMNS)
    corrections = incoming[corrected]
    if len(corrections):
        # Feast picks the row with the latest `created`: the correction must be later.
        previous = existing.groupby(TABLE_KEY)["created"].max()
        keys = pd.MultiIndex.from_frame(corrections[TABLE_KEY])
        floor = previous.reindex(keys) + pd.Timedelta(microseconds=1)
        incoming.loc[corrected, "created"] = floor.clip(lower=now).to_numpy()
    appended = incoming[~present]
    counts = TableCounts(
        new=int(len(appended) - corrected.sum()),
        corrected=int(corrected.sum()),
        already_present=int(present.sum()),
    )
    table = pd.concat([existing, appended], ignore_index=True) if len(appended) else existing
    table = table.sort_values(["event_timestamp", "user_id", "created"], kind="stable")
    return table[USER_FEATURES_COLUMNS].reset_index(drop=True), counts, len(appended) > 0


def _merge_labels(
    labelled: pd.DataFrame, existing: pd.DataFrame | None
) -> tuple[pd.DataFrame, TableCounts, bool]:
    """The new labels table (one row per key: a correction replaces), counts, changed."""
    incoming = pd.DataFrame(
        {
            "user_id": labelled["user_id"].astype("int64"),
            "event_timestamp": labelled["event_date"],
            "label": labelled["label"].astype("int64"),
        }
    )
    if existing is None:
        existing = incoming.iloc[:0]
    present, corrected = _classify(incoming, existing, ["label"])
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
    table = table.sort_values(["event_timestamp", "user_id"], kind="stable")
    return table[LABELS_COLUMNS].reset_index(drop=True), counts, len(changed) > 0


def write_parquet_atomically(frame: pd.DataFrame, path: Path) -> None:
    """Write Parquet to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        frame.to_parquet(temporary, index=False)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


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
) -> IngestReport:
    """Validate raw events and merge them into the offline feature and label tables.

    Args:
        raw: A raw events file (Parquet or CSV) or an already loaded frame.
        data: Where the offline tables and the quarantine folder are.
        now: The ingest time: later timestamps are quarantined as future, and corrections
            are stamped with it. Default: the current time.

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

    null_counts = {column: int(rows[column].isna().sum()) for column in RAW_COLUMNS}
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
        features_table, feature_counts, features_changed = _merge_features(
            usable, _read_table(data.user_features_path, USER_FEATURES_COLUMNS), now_ts
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
        quarantine_path = data.quarantine_dir / f"ingest-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
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
    )


def ingest_command(
    raw_path: Annotated[Path, typer.Argument(help="Raw events file (.parquet, .pq or .csv).")],
) -> None:
    """Validate raw events and merge them into the offline feature and label tables.

    Unusable rows go to a Parquet file under $CHURN_DATA_DIR/quarantine with a reason.

    Reasons: null user_id or event_date, future timestamp, infinite feature, repeated key.

    A null or non-0/1 label keeps the row's features but writes no label.

    A column more than 20% null is warned about. Re-running on the same file changes nothing.

    Exit 0: ingested (quarantined rows and warnings included).

    Exit 1: unreadable file or damaged offline table; nothing written.

    Exit 2: missing or mistyped columns; nothing written.
    """
    try:
        report = ingest_raw_events(raw_path, data=DataSettings())
    except SchemaError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(EXIT_SCHEMA) from error
    except IngestError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(EXIT_UNREADABLE) from error
    for line in report.summary_lines():
        typer.echo(line)
