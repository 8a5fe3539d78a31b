"""The Feast repo as data engineers use it: apply, point-in-time joins, online parity."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from feast import FeatureStore

from core.feast_store import feature_store_session, open_feature_store
from materialize.apply import apply_feature_repo
from tests.utils.feast_repo import TestRepo, make_feature_repo
from tests.utils.features import CHURN_V1_FEATURES, entity_frame, write_user_features

T0 = datetime(2026, 10, 5, 9, tzinfo=UTC)  # a Monday
SATURDAY = datetime(2026, 10, 10, 15, tzinfo=UTC)
TUESDAY = datetime(2026, 10, 13, 15, tzinfo=UTC)


def _service_features(store: FeatureStore, name: str = "churn_v1") -> list[str]:
    service = store.get_feature_service(name)
    return [
        feature.name
        for projection in service.feature_view_projections
        for feature in projection.features
    ]


def _historical(store: FeatureStore, entities: pd.DataFrame) -> pd.DataFrame:
    service = store.get_feature_service("churn_v1")
    frame = store.get_historical_features(entity_df=entities, features=service).to_df()
    return frame.sort_values(["user_id", "event_timestamp"]).reset_index(drop=True)


@pytest.fixture
def applied_repo(feature_repo: TestRepo) -> TestRepo:
    write_user_features(
        feature_repo.data.user_features_path,
        [
            (1, T0, 10.0, 2.0),
            (1, T0 + timedelta(days=5), 99.0, 3.0),  # written after user 1's label time
            (2, T0, 4.0, 1.0),
            (4, T0, None, 5.0),
        ],
    )
    apply_feature_repo(feature_repo.feast)
    return feature_repo


@pytest.mark.parametrize("profile", ["production", "embedded", "team"])
def test_feast_apply_registers_churn_v1_in_every_profile(
    tmp_path, feast_project, redis_available, postgres_url, profile
) -> None:
    repo = make_feature_repo(
        tmp_path, project=feast_project, profile=profile, registry_url=postgres_url
    )
    output = apply_feature_repo(repo.feast)
    with feature_store_session(repo.feast) as store:
        assert f"Applying changes for project {feast_project}" in output
        assert _service_features(store) == CHURN_V1_FEATURES
        assert store.get_feature_view("user_features").ttl == timedelta(days=21)
        assert {view.name for view in store.list_on_demand_feature_views()} == {
            "user_feature_transforms",
            "request_time_features",
            "activity_windows",
        }
        assert _service_features(store, "churn_v2") == [
            *CHURN_V1_FEATURES,
            "events_1h",
            "events_24h",
            "events_7d",
            "minutes_since_last_event",
        ]


def test_point_in_time_join_uses_only_past_values_within_ttl(applied_repo: TestRepo) -> None:
    store = open_feature_store(applied_repo.feast)
    entities = entity_frame(
        [
            (1, T0 + timedelta(days=2)),  # must see 10.0, not the later 99.0
            (1, T0 + timedelta(days=6)),  # now the later value is in the past
            (2, T0 + timedelta(days=30)),  # the only value is older than the 21-day TTL
            (3, T0 + timedelta(days=1)),  # a user with no features at all
            (2, T0 - timedelta(hours=1)),  # before the user's first value
        ]
    )
    result = _historical(store, entities)

    assert len(result) == len(entities), "every entity row comes back"
    by_key = {(row.user_id, row.event_timestamp): row for row in result.itertuples()}
    assert by_key[(1, T0 + timedelta(days=2))].feature_1 == 10.0
    assert by_key[(1, T0 + timedelta(days=2))].feature_ratio == pytest.approx(10.0 / (2.0 + 1e-8))
    assert by_key[(1, T0 + timedelta(days=2))].feature_log == pytest.approx(math.log1p(10.0))
    assert by_key[(1, T0 + timedelta(days=6))].feature_1 == 99.0
    for key in [
        (2, T0 + timedelta(days=30)),
        (3, T0 + timedelta(days=1)),
        (2, T0 - timedelta(hours=1)),
    ]:
        assert pd.isna(by_key[key].feature_1), key
        assert pd.isna(by_key[key].feature_ratio), key


def test_request_time_features_distinguish_saturday_from_tuesday(applied_repo: TestRepo) -> None:
    store = open_feature_store(applied_repo.feast)
    result = _historical(store, entity_frame([(2, SATURDAY), (2, TUESDAY)]))
    saturday, tuesday = result.iloc[0], result.iloc[1]

    assert saturday.is_weekend == 1
    assert saturday.day_of_week_sin == pytest.approx(math.sin(2 * math.pi * 5 / 7))
    assert saturday.day_of_week_cos == pytest.approx(math.cos(2 * math.pi * 5 / 7))
    assert tuesday.is_weekend == 0
    assert tuesday.day_of_week_sin == pytest.approx(math.sin(2 * math.pi * 1 / 7))
    assert tuesday.day_of_week_cos == pytest.approx(math.cos(2 * math.pi * 1 / 7))


@pytest.mark.parametrize("profile", ["production", "embedded"])
def test_online_churn_v1_equals_offline_after_materialization(
    tmp_path, feast_project, redis_available, profile
) -> None:
    repo = make_feature_repo(tmp_path, project=feast_project, profile=profile)
    write_user_features(
        repo.data.user_features_path,
        [
            (1, T0, 10.0, 2.0),
            (1, T0 + timedelta(days=1), 12.5, -0.5),
            (2, T0, 4.0, 1.0),
            (4, T0, None, 5.0),
        ],
    )
    apply_feature_repo(repo.feast)
    store = open_feature_store(repo.feast)
    materialized_at = T0 + timedelta(days=2)
    store.materialize(start_date=T0 - timedelta(days=1), end_date=materialized_at)

    users = [1, 2, 4]
    request_time = SATURDAY
    online = store.get_online_features(
        features=store.get_feature_service("churn_v1"),
        entity_rows=[{"user_id": user, "event_timestamp": request_time} for user in users],
    ).to_dict()
    offline = _historical(store, entity_frame([(user, request_time) for user in users]))

    for index, user in enumerate(users):
        assert online["user_id"][index] == user
        for feature in CHURN_V1_FEATURES:
            online_value = online[feature][index]
            offline_value = offline.loc[offline.user_id == user, feature].item()
            if pd.isna(offline_value):
                assert online_value is None, (user, feature)
            else:
                assert online_value == pytest.approx(offline_value), (user, feature)
    assert online["feature_1"][0] == 12.5  # the latest value of user 1
    assert online["is_weekend"] == [1, 1, 1]
