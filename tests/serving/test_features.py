"""The feature plan and the online reader against Feast's own online read."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from core.errors import OnlineStoreUnavailable
from core.feast_store import open_feature_store
from serving.features import FeatureServiceError, OnlineFeatures
from tests.utils.feast_layout import SwappedFieldLayout, WrongKeyLayout
from tests.utils.feast_repo import TestRepo
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.serving import OnlineUsers, free_port, read_features

SATURDAY = datetime(2026, 10, 10, 15, tzinfo=UTC)


def _sdk_rows(repo: TestRepo, user_ids: list[int], when: datetime) -> dict[str, list]:
    store = open_feature_store(repo.feast)
    return store.get_online_features(
        features=store.get_feature_service("churn_v1"),
        entity_rows=[{"user_id": user, "event_timestamp": when} for user in user_ids],
    ).to_dict()


def test_plan_reads_churn_v1_in_model_order_through_redis(repo: TestRepo) -> None:
    online = OnlineFeatures(open_feature_store(repo.feast), timeout_s=1)
    reordered = list(reversed(CHURN_V1_FEATURES))
    plan = online.resolve(service_name="churn_v1", features=reordered, project=repo.project)
    asyncio.run(online.close())

    assert plan.fast_path, plan.fast_path_gap
    assert plan.features == tuple(reordered)
    assert plan.join_key == "user_id"
    assert plan.request_field == "event_timestamp"
    assert [view.name for view in plan.views] == ["user_features"]
    assert plan.views[0].ttl == timedelta(days=21)


def test_redis_reader_equals_feast_online_read(repo: TestRepo, users: OnlineUsers) -> None:
    # Request time near the data (fresh), on a Saturday, so is_weekend is 1.
    when = datetime.now(UTC)
    when = when + timedelta(days=(5 - when.weekday()) % 7)
    online = OnlineFeatures(open_feature_store(repo.feast), timeout_s=1)
    plan = online.resolve(service_name="churn_v1", features=CHURN_V1_FEATURES, project=repo.project)
    rows = read_features(online, plan, users.fresh, when)
    expected = _sdk_rows(repo, users.fresh, when)

    assert rows.problems == [None] * len(users.fresh)
    for column, name in enumerate(CHURN_V1_FEATURES):
        np.testing.assert_allclose(rows.matrix[:, column], np.array(expected[name], dtype=float))
    assert set(rows.matrix[:, CHURN_V1_FEATURES.index("is_weekend")]) == {1.0}


def test_redis_reader_reports_unknown_and_stale_users_and_leaves_missing_values_missing(
    repo: TestRepo, users: OnlineUsers
) -> None:
    """A null value is no reader problem: the model's missing-value policy decides."""
    online = OnlineFeatures(open_feature_store(repo.feast), timeout_s=1)
    plan = online.resolve(service_name="churn_v1", features=CHURN_V1_FEATURES, project=repo.project)
    ids = [users.unknown, users.stale, users.missing_feature, users.fresh[0]]
    rows = read_features(online, plan, ids, datetime.now(UTC))

    kinds = [problem.kind if problem else None for problem in rows.problems]
    assert kinds == ["unknown_user", "stale_features", None, None]
    assert str(users.unknown) in rows.problems[0].detail
    assert "21 days" in rows.problems[1].detail
    missing = [CHURN_V1_FEATURES[i] for i in np.flatnonzero(np.isnan(rows.matrix[2]))]
    assert missing == ["feature_2", "feature_ratio"]
    assert not np.isnan(rows.matrix[3]).any()
    # The stale user's value is still in Redis: Feast itself would have served it.
    assert _sdk_rows(repo, [users.stale], datetime.now(UTC))["feature_1"] == [5.0]


def test_sdk_reader_agrees_on_an_embedded_store(
    tmp_path, feast_project, users: OnlineUsers
) -> None:
    """The fallback path (any online store): same values and the same problems."""
    from tests.utils.feast_repo import make_feature_repo
    from tests.utils.serving import load_online_features

    embedded = make_feature_repo(tmp_path, project=feast_project, profile="embedded")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHURN_DATA_DIR", str(embedded.data.data_dir))
        cases = load_online_features(embedded, now=datetime.now(UTC), fresh_users=5)
    online = OnlineFeatures(open_feature_store(embedded.feast), timeout_s=5)
    plan = online.resolve(
        service_name="churn_v1", features=CHURN_V1_FEATURES, project=feast_project
    )
    ids = [*cases.fresh, cases.unknown, cases.stale, cases.missing_feature]
    when = datetime.now(UTC)
    rows = read_features(online, plan, ids, when)
    expected = _sdk_rows(embedded, cases.fresh, when)

    assert not plan.fast_path and "sqlite" in plan.fast_path_gap
    kinds = [problem.kind if problem else None for problem in rows.problems]
    assert kinds == [None] * 5 + ["unknown_user", "stale_features", None]
    assert np.isnan(rows.matrix[-1, CHURN_V1_FEATURES.index("feature_2")])
    for column, name in enumerate(CHURN_V1_FEATURES):
        np.testing.assert_allclose(rows.matrix[:5, column], np.array(expected[name], dtype=float))


@pytest.mark.parametrize(
    ("service", "features", "project", "message"),
    [
        ("churn_v9", CHURN_V1_FEATURES, None, "'churn_v9' not found in Feast project"),
        ("churn_v1", [*CHURN_V1_FEATURES, "tenure"], None, "model feature(s) tenure are not in"),
        (
            "churn_v1",
            CHURN_V1_FEATURES,
            "other_project",
            "trained on Feast project 'other_project'",
        ),
    ],
)
def test_model_features_absent_from_the_registry_are_refused(
    repo: TestRepo, service, features, project, message
) -> None:
    online = OnlineFeatures(open_feature_store(repo.feast), timeout_s=1)
    with pytest.raises(FeatureServiceError) as raised:
        online.resolve(service_name=service, features=features, project=project)
    asyncio.run(online.close())
    assert message in str(raised.value)


def test_unreachable_redis_is_reported_within_the_timeout(
    repo: TestRepo, users: OnlineUsers
) -> None:
    store = open_feature_store(repo.feast)
    online = OnlineFeatures(store, timeout_s=1)
    plan = online.resolve(service_name="churn_v1", features=CHURN_V1_FEATURES, project=repo.project)
    asyncio.run(online.close())
    from redis import asyncio as redis_asyncio

    async def ping_and_read() -> tuple[str | None, float]:
        dead = OnlineFeatures(
            store, timeout_s=0.3, redis_client=redis_asyncio.Redis(port=free_port())
        )
        try:
            problem = await dead.ping()
            started = time.monotonic()
            with pytest.raises(OnlineStoreUnavailable, match="online store"):
                await dead.read(plan, users.fresh[:1], [datetime.now(UTC)])
            return problem, time.monotonic() - started
        finally:
            await dead.close()

    problem, elapsed = asyncio.run(ping_and_read())
    assert problem is not None
    assert elapsed < 1.0


@pytest.mark.parametrize("layout", [SwappedFieldLayout(), WrongKeyLayout()], ids=type)
def test_a_layout_that_differs_from_feasts_sends_serving_to_the_sdk(
    repo: TestRepo, users: OnlineUsers, layout, caplog: pytest.LogCaptureFixture
) -> None:
    when = datetime.now(UTC)
    online = OnlineFeatures(open_feature_store(repo.feast), timeout_s=1, layout=layout)
    plan = online.resolve(service_name="churn_v1", features=CHURN_V1_FEATURES, project=repo.project)
    rows = read_features(online, plan, users.fresh, when)
    expected = _sdk_rows(repo, users.fresh, when)

    assert not plan.fast_path
    assert "self-check failed" in plan.fast_path_gap
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert errors and "through the Feast SDK instead" in errors[0].getMessage()
    assert "user_features" in errors[0].getMessage()
    # Read through the SDK: the right values all the same.
    assert rows.problems == [None] * len(users.fresh)
    for column, name in enumerate(CHURN_V1_FEATURES):
        np.testing.assert_allclose(rows.matrix[:, column], np.array(expected[name], dtype=float))


def test_the_default_layout_passes_the_self_check(
    repo: TestRepo, caplog: pytest.LogCaptureFixture
) -> None:
    online = OnlineFeatures(open_feature_store(repo.feast), timeout_s=1)
    plan = online.resolve(service_name="churn_v1", features=CHURN_V1_FEATURES, project=repo.project)
    asyncio.run(online.close())

    assert plan.fast_path, plan.fast_path_gap
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
