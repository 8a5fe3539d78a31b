"""The skew check: online churn_v1 equals offline point-in-time churn_v1 after materializing.

The command itself: tests/cli/test_materialize.py.
"""

from __future__ import annotations

import pytest

from core.errors import InputError
from core.feast_store import open_feature_store
from materialize.skew import check_skew
from tests.utils.feast_repo import TestRepo
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.materialize import (
    END,
    START,
    AppliedRepo,
    applied_repo_fixture,
    corrupt_online_feature_2,
)

USERS = 120
CHURN_V1 = CHURN_V1_FEATURES


applied = applied_repo_fixture()


@pytest.fixture
def repo(applied: AppliedRepo) -> TestRepo:
    """The applied repo, fresh, with its table written."""
    applied.write_table(users=USERS)
    return applied.fresh()


@pytest.fixture
def materialized(repo: TestRepo) -> TestRepo:
    """The repo with its offline table materialized over [START, END]."""
    open_feature_store(repo.feast).materialize(START, END)
    return repo


def test_no_skew_after_materialization(materialized: TestRepo) -> None:
    report = check_skew(materialized.feast, sample=1000, seed=1)

    assert report.at == END  # the end of the last materialization
    assert report.entities == USERS + 2  # every user, including the two never online
    assert [feature.feature for feature in report.features] == CHURN_V1
    assert report.mismatches == 0


def test_a_wrong_online_value_is_reported_per_feature(materialized: TestRepo) -> None:
    user = corrupt_online_feature_2(materialized, 12345.0)

    report = check_skew(materialized.feast, sample=1000, seed=1)

    counts = {feature.feature: feature.mismatches for feature in report.features}
    assert counts == {**dict.fromkeys(CHURN_V1, 0), "feature_2": 1, "feature_ratio": 1}
    (example,) = report.features[1].examples
    assert example.entity == {"user_id": user} and example.online == 12345.0


def test_nothing_materialized_is_an_input_error(repo: TestRepo) -> None:
    with pytest.raises(InputError, match="user_features never materialized"):
        check_skew(repo.feast, sample=5)
    with pytest.raises(InputError, match="at least 1"):
        check_skew(repo.feast, sample=0)
    with pytest.raises(InputError, match="feature service 'churn_v9' not found"):
        check_skew(repo.feast, sample=5, service="churn_v9")
