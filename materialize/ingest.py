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

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import SchemaError
from core.settings import DataSettings
from materialize.offline_tables import (
    LABELS_COLUMNS,
    USER_FEATURES_COLUMNS,
    TableCounts,
    locked_offline_tables,
    merge_features,
    merge_labels,
    read_table,
    remove_stale_temporaries,
    write_parquet_atomically,
)
from materialize.raw_events import (
    DUPLICATE_KEY,
    EVENT_DATE_RAW,
    QUARANTINE_REASONS,
    RAW_COLUMNS,
    RAW_SCHEMA,
    USER_ID_RAW,
    normalise,
    quarantine_reasons,
    read_raw_events,
    schema_problems,
)

logger = logging.getLogger(__name__)

# A column null in more than this share of the rows is warned about.
NULL_RATE_WARNING = 0.20


@dataclass(frozen=True)
class IngestRequest:
    """What ``churn ingest`` is asked to do.

    Attributes:
        raw_path: The raw events file (Parquet or CSV).
        backfill: Declare new rows available at their event time (a historical load).
        data: Where the offline tables and the quarantine are (default: from the
            environment).
    """

    raw_path: Path
    backfill: bool = False
    data: DataSettings | None = None


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
        OfflineSourceError: An existing offline table lacks required columns (nothing
            written).
    """
    source = str(raw) if isinstance(raw, Path) else "<frame>"
    frame = read_raw_events(raw) if isinstance(raw, Path) else raw
    problems = schema_problems(frame)
    if problems:
        raise SchemaError(problems, subject=RAW_SCHEMA)
    rows = normalise(frame)
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

    reasons = quarantine_reasons(rows, now_ts)
    usable = rows[reasons.isna()]
    label = usable["label"]
    has_label = label.isin([0.0, 1.0])
    labels_null = int(label.isna().sum())

    with locked_offline_tables(data):
        # Under the lock no other ingest is writing: temporaries are a killed run's leftovers.
        stale = remove_stale_temporaries(data)
        if stale:
            logger.warning("removed %d temporary file(s) of an interrupted ingest", stale)
        features_table, feature_counts, features_changed = merge_features(
            usable,
            read_table(data.user_features_path, USER_FEATURES_COLUMNS),
            now_ts,
            backfill=backfill,
        )
        labels_table, label_counts, labels_changed = merge_labels(
            usable[has_label], read_table(data.labels_path, LABELS_COLUMNS)
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


def run_ingest(request: IngestRequest) -> IngestReport:
    """``churn ingest``: validate a raw events file and merge it into the offline tables.

    Raises:
        UnreadableInputError: The file cannot be read (nothing written).
        SchemaError: Required columns are missing or mistyped (nothing written).
        OfflineSourceError: An existing offline table lacks required columns.
    """
    return ingest_raw_events(
        request.raw_path, data=request.data or DataSettings(), backfill=request.backfill
    )
