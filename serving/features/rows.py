"""Rows of features as the service scores them, and why a row cannot be scored."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any, Literal

import numpy as np

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
            order); rows with a problem may hold NaN.
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


def unusable_problem(user_id: int, features: Sequence[str], row: np.ndarray) -> RowProblem | None:
    """Missing (NaN) or non-finite (inf) model inputs of one row, else None."""
    absent = [name for name, value in zip(features, row, strict=True) if math.isnan(value)]
    if absent:
        return RowProblem(
            "missing_features",
            f"user {user_id} has no value for {', '.join(absent)} in the online store",
        )
    infinite = [name for name, value in zip(features, row, strict=True) if math.isinf(value)]
    if infinite:
        return RowProblem(
            "non_finite_features",
            f"user {user_id} has a non-finite value for {', '.join(infinite)}",
        )
    return None


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
