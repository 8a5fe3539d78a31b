"""What a user gives ``churn score``: the point in time, and optionally a file of users."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import InputError

USER_ID = "user_id"


def parse_at(text: str | None) -> datetime:
    """``--at``: an ISO date or date-time (naive means UTC); now when omitted.

    Raises:
        InputError: Not an ISO date or date-time.
    """
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise InputError(
            f"--at {text!r} is not an ISO date or date-time (e.g. 2026-03-01T12:00:00)"
        ) from error
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def read_users_file(path: Path) -> np.ndarray:
    """User ids from a Parquet/CSV file with a ``user_id`` column, or one id per text line.

    Returns:
        The distinct ids, sorted.

    Raises:
        InputError: The file is missing, unreadable, or holds a non-integer id.
    """
    if not path.is_file():
        raise InputError(f"users file {path} does not exist")
    try:
        if path.suffix in (".parquet", ".pq"):
            column = pd.read_parquet(path, columns=[USER_ID])[USER_ID]
        elif path.suffix == ".csv":
            column = pd.read_csv(path, usecols=[USER_ID])[USER_ID]
        else:
            column = pd.Series(
                [line.strip() for line in path.read_text().splitlines() if line.strip()]
            )
    except (OSError, ValueError, KeyError) as error:
        raise InputError(f"users file {path}: {error}") from error
    ids = pd.to_numeric(column, errors="coerce")
    bad = column[ids.isna() | (ids != ids.round())]
    if len(bad):
        raise InputError(
            f"users file {path}: {len(bad)} value(s) are not integer user ids "
            f"(first: {bad.iloc[0]!r})"
        )
    return np.unique(ids.to_numpy(dtype=np.int64))
