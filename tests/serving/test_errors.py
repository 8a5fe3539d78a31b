"""The API's errors: one table of statuses by kind, core errors at their family's status."""

from __future__ import annotations

from typing import get_args

import pytest

from core.errors import OnlineStoreUnavailable, http_status_for
from serving.errors import STATUS_BY_KIND, ErrorKind, ServingError
from serving.features import RowProblem
from serving.service import problem_error

pytestmark = pytest.mark.unit


def _kinds() -> set[str]:
    return {kind for literal in get_args(ErrorKind) for kind in get_args(literal)}


def test_every_kind_has_one_status_in_the_table() -> None:
    assert set(STATUS_BY_KIND) == _kinds()
    statuses = {ServingError(kind, "x").status for kind in _kinds()}
    assert statuses <= {401, 403, 404, 413, 422, 500, 503}


def test_a_core_error_kind_answers_its_family_status() -> None:
    error = ServingError("store_unavailable", "the online store is unreachable")
    assert error.status == http_status_for(OnlineStoreUnavailable("down")) == 503


def test_row_problems_are_404_and_the_status_follows_the_kind() -> None:
    problem = problem_error(RowProblem("unknown_user", "user 7 has no features"))
    assert (problem.kind, problem.status, problem.detail) == (
        "unknown_user",
        404,
        "user 7 has no features",
    )
    assert ServingError("payload_too_large", "too big", retry_after_s=None).status == 413
