"""Raw events: the contract, reading it (Parquet or CSV), checking it, and the quarantine.

A file whose columns are missing or mistyped is rejected as a whole (:class:`SchemaError`).
Otherwise each row is normalised to the types used from here on, and a row that cannot be
used gets the first quarantine reason that applies (in the order of
:data:`QUARANTINE_REASONS`, then :data:`DUPLICATE_KEY` among the usable rows).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.errors import SchemaError, UnreadableInputError
from core.tables import FEATURE_COLUMNS

# The raw events contract (written by `churn generate`, validated here).
RAW_COLUMNS = ["user_id", "feature_1", "feature_2", "label", "event_date"]
# How a schema error names what it checked.
RAW_SCHEMA = "raw events"

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
        raise SchemaError(problems, subject=RAW_SCHEMA)
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    """Parquet with timestamps in their stored unit (no overflow converting to nanoseconds)."""
    frame: pd.DataFrame = pq.read_table(path).to_pandas(coerce_temporal_nanoseconds=False)
    return frame


def _user_ids_from_text(text: pd.Series) -> tuple[tuple[pd.Series, pd.Series], str | None]:
    """(Int64 ids, original text of ids beyond int64) of a text column, or a problem."""
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


def schema_problems(frame: pd.DataFrame) -> list[str]:
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


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
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


def quarantine_reasons(rows: pd.DataFrame, now: pd.Timestamp) -> pd.Series:
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
