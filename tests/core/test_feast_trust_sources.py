"""How on-demand view code is fingerprinted and found in the repo, without running it."""

from __future__ import annotations

import pytest

from core.feast_trust import (
    repo_on_demand_sources,
    source_sha256,
)

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


def test_a_changed_body_is_a_mismatch_and_formatting_is_not() -> None:
    original = "@on_demand_feature_view(sources=[])\ndef f(inputs):\n    return {'x': inputs}\n"
    reformatted = "def f( inputs ):\n    # a comment\n    return {'x' : inputs}\n"
    changed = "def f(inputs):\n    return {'x': __import__('os').getcwd()}\n"
    assert source_sha256(original) == source_sha256(reformatted) is not None
    assert source_sha256(changed) != source_sha256(original)
    assert source_sha256(original + "print('and more')\n") is None


def test_the_repo_functions_are_found_without_importing_them() -> None:
    from core.settings import PROJECT_ROOT

    names = repo_on_demand_sources(PROJECT_ROOT / "feature_repo")
    assert sorted(names) == [
        "activity_windows",
        "request_time_features",
        "user_feature_transforms",
    ]
