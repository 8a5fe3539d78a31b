"""`churn skew-check`: online churn_v1 equals offline point-in-time churn_v1 after materializing."""

from __future__ import annotations

import pytest
from feast.protos.feast.types.Value_pb2 import Value
from typer.testing import CliRunner

from cli.main import build_app
from core.feast_adapter.layout import RedisLayout
from core.feast_store import open_feature_store
from materialize.skew import SkewInputError, check_skew
from tests.utils.feast_repo import TestRepo
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.materialize import (
    END,
    START,
    VIEW,
    AppliedRepo,
    applied_repo_fixture,
    decode_redis,
    redis_hashes,
)
from tests.utils.services import redis_client

USERS = 120
CHURN_V1 = CHURN_V1_FEATURES


applied = applied_repo_fixture()


@pytest.fixture
def repo(applied: AppliedRepo, monkeypatch: pytest.MonkeyPatch) -> TestRepo:
    """The applied repo, fresh, with its table written and `churn` pointed at it."""
    applied.write_table(users=USERS)
    repo = applied.fresh()
    monkeypatch.setenv("CHURN_FEAST_REPO_PATH", str(repo.feast.repo_path))
    monkeypatch.setenv("CHURN_REDIS_URL", repo.feast.redis_url)
    return repo


@pytest.fixture
def materialized(repo: TestRepo) -> TestRepo:
    """The repo with its offline table materialized over [START, END]."""
    open_feature_store(repo.feast).materialize(START, END)
    return repo


def _churn(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(build_app(), list(args))
    return result.exit_code, result.stdout, result.stderr


def test_no_skew_after_materialization(materialized: TestRepo) -> None:
    report = check_skew(materialized.feast, sample=1000, seed=1)

    assert report.at == END  # the end of the last materialization
    assert report.entities == USERS + 2  # every user, including the two never online
    assert [feature.feature for feature in report.features] == CHURN_V1
    assert report.mismatches == 0
    code, out, _ = _churn("skew-check", "--sample", "40", "--seed", "3")
    assert code == 0, out
    assert "on 40 entities" in out and "OK: online and offline agree" in out


def test_a_wrong_online_value_is_reported_per_feature(materialized: TestRepo) -> None:
    online = decode_redis(redis_hashes(materialized.project))
    user = min(user for user, (_, values) in online.items() if None not in values.values())
    layout = RedisLayout()
    key = layout.int64_redis_key("user_id", user, project=materialized.project, version=3)
    field = layout.feature_field(VIEW, "feature_2")
    redis_client().hset(key, field, Value(double_val=12345.0).SerializeToString())

    report = check_skew(materialized.feast, sample=1000, seed=1)

    counts = {feature.feature: feature.mismatches for feature in report.features}
    assert counts == {**dict.fromkeys(CHURN_V1, 0), "feature_2": 1, "feature_ratio": 1}
    (example,) = report.features[1].examples
    assert example.entity == {"user_id": user} and example.online == 12345.0
    code, out, err = _churn("skew-check", "--sample", "1000", "--seed", "1")
    assert code == 1
    assert f"feature_2: {{'user_id': {user}}} online=12345.0" in out
    assert "FAIL: 2 mismatching values" in err


def test_nothing_materialized_is_an_input_error(repo: TestRepo) -> None:
    with pytest.raises(SkewInputError, match="user_features never materialized"):
        check_skew(repo.feast, sample=5)
    with pytest.raises(SkewInputError, match="at least 1"):
        check_skew(repo.feast, sample=0)
    with pytest.raises(SkewInputError, match="feature service 'churn_v9' not found"):
        check_skew(repo.feast, sample=5, service="churn_v9")
    code, _, err = _churn("skew-check", "--sample", "5")
    assert code == 2 and "never materialized" in err
