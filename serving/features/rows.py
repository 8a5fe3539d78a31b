"""Rows of features as the service scores them, and why a row cannot be scored."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any, Literal

import numpy as np

from core.missing_values import MissingValues

ProblemKind = Literal[
    "unknown_user",
    "stale_features",
    "missing_features",
    "invalid_feature_value",
    "feature_transform_failed",
    "non_finite_features",
]


@dataclass(frozen=True)
class RowProblem:
    """Why one user's row cannot be scored."""

    kind: ProblemKind
    detail: str


@dataclass(frozen=True)
class FeatureRows:
    """Features of a batch of users, in request order.

    Attributes:
        matrix: One row per requested user, one float64 column per model feature (model
            order); rows with a problem may hold NaN, and so may rows without one: a
            missing value, for the model's missing-value policy to decide about.
        problems: Per row, None when the row can be scored, else why not.
    """

    matrix: np.ndarray
    problems: list[RowProblem | None]


def stale_problem(user_id: int, view: str, age: timedelta, ttl: timedelta) -> RowProblem:
    """A row whose newest value of ``view`` is older than the view's TTL."""
    return RowProblem(
        "stale_features",
        f"features of user {user_id} in {view} are {age.days} days old, older than the "
        f"view's TTL of {ttl.days} days",
    )


def unknown_problem(user_id: int) -> RowProblem:
    """A user with no row in the online store."""
    return RowProblem("unknown_user", f"user {user_id} has no features in the online store")


def merge_rows(parts: Sequence[FeatureRows]) -> FeatureRows:
    """Row blocks stacked in order."""
    return FeatureRows(
        matrix=np.vstack([part.matrix for part in parts]),
        problems=[problem for part in parts for problem in part.problems],
    )


def to_float_block(
    columns: Sequence[list[Any]], features: Sequence[str]
) -> tuple[np.ndarray, dict[int, str]]:
    """Rows x features as float64 (None becomes NaN); values that are not numbers, by row.

    One conversion per column normally; a column holding a value of another type (a string
    written by mistake) is converted value by value, and only the rows holding such values
    are reported.
    """
    rows = len(columns[0]) if columns else 0
    block = np.empty((rows, len(columns)))
    invalid: dict[int, str] = {}
    for position, (column, feature) in enumerate(zip(columns, features, strict=True)):
        try:
            if any(isinstance(value, str | bytes) for value in column):
                raise TypeError("text")  # float("1.5") would parse it: a type error here
            block[:, position] = np.array(column, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            for row, value in enumerate(column):
                converted = _as_float(value)
                if converted is None:
                    invalid.setdefault(row, feature)
                    block[row, position] = np.nan
                else:
                    block[row, position] = converted
    return block, invalid


def _as_float(value: Any) -> float | None:
    """A number (bool and int included) as float; None for anything else. None is NaN."""
    if value is None:
        return math.nan
    if isinstance(value, bool | int | float | np.number) and not isinstance(value, str | bytes):
        try:
            return float(value)
        except OverflowError:
            return None
    return None


def non_finite_problem(user_id: int, features: Sequence[str], row: np.ndarray) -> RowProblem | None:
    """An infinite model input of one row, else None.

    A missing value (NaN) is not a problem here: the model's missing-value policy
    (:mod:`core.missing_values`) decides about it.
    """
    infinite = [name for name, value in zip(features, row, strict=True) if math.isinf(value)]
    if infinite:
        return RowProblem(
            "non_finite_features",
            f"user {user_id} has a non-finite value for {', '.join(infinite)}",
        )
    return None


def missing_problem(user_id: int, features: Sequence[str]) -> RowProblem:
    """A row the ``reject`` missing-value policy refuses: the features it lacks."""
    return RowProblem(
        "missing_features",
        f"user {user_id} has no value for {', '.join(features)} in the online store",
    )


@dataclass(frozen=True)
class CheckedRows:
    """Feature rows after the model's missing-value policy.

    Attributes:
        scorable: The rows to score (no problem), in order.
        matrix: What the model scores, one row per user (filled under ``fill``).
        problems: Per row, why it is not scored (the policy's rejections added).
        missing: By row, the features that were missing in a row that is scored.
    """

    scorable: list[int]
    matrix: np.ndarray
    problems: list[RowProblem | None]
    missing: dict[int, tuple[str, ...]]


def apply_missing_policy(
    policy: MissingValues, rows: FeatureRows, user_ids: Sequence[int]
) -> CheckedRows:
    """Apply ``policy`` to the rows without a problem; a rejected row gets its problem."""
    scorable = [index for index, problem in enumerate(rows.problems) if problem is None]
    if not scorable:
        return CheckedRows(scorable, rows.matrix, rows.problems, {})
    handled = policy.apply(rows.matrix[scorable])
    if handled.missing is None:  # the usual case: nothing missing, nothing copied
        return CheckedRows(scorable, rows.matrix, rows.problems, {})
    problems = list(rows.problems)
    missing: dict[int, tuple[str, ...]] = {}
    accepted = []
    for position, index in enumerate(scorable):
        names = handled.names(position)
        if handled.rejected[position]:
            problems[index] = missing_problem(user_ids[index], names)
            continue
        accepted.append(position)
        if names:
            missing[index] = names
    kept = [scorable[position] for position in accepted]
    matrix = rows.matrix.copy()
    matrix[kept] = handled.matrix[accepted]
    return CheckedRows(kept, matrix, problems, missing)


@cache
def _value_message() -> Any:
    """Feast's ``Value`` protobuf class (imported on first use: it imports Feast)."""
    from feast.protos.feast.types.Value_pb2 import Value

    return Value


def decode_value(raw: bytes) -> Any:
    """The Python value of a serialized ``feast.types.Value`` (None for null or empty)."""
    value = _value_message().FromString(raw)
    kind = value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    if kind.endswith("_list_val"):  # Int64List and kin: the plain list of values
        return list(getattr(value, kind).val)
    return getattr(value, kind)
