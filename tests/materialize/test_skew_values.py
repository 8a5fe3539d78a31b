"""How the skew check compares one online value with one offline value."""

from __future__ import annotations

import math

import pytest

from materialize.skew import values_agree

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


@pytest.mark.parametrize(
    ("online", "offline", "agree"),
    [
        (None, float("nan"), True),
        (None, 0.0, False),
        (1.0, 1.0 + 1e-12, True),
        (1.0, 1.0001, False),
        (1, 1.0, True),
        (math.inf, math.inf, True),
        ("a", "a", True),
    ],
)
def test_values_agree(online: object, offline: object, agree: bool) -> None:
    assert values_agree(online, offline) is agree
