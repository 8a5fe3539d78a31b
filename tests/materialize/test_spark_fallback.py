"""On the spark profile, a view our engine cannot take goes through Feast's spark.engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.feast_store import open_feature_store
from tests.utils.feast_repo import TestRepo
from tests.utils.materialize import (
    END,
    START,
    AppliedRepo,
    engine_results,
    expected_online,
    make_user_features,
    write_microsecond_table,
)
from tests.utils.spark import SparkCluster

pytestmark = pytest.mark.filterwarnings(
    "ignore:The spark data source API is an experimental feature:RuntimeWarning"
)

# A second view over the same source that validates rows while materializing: our engine
# does not validate, so it hands the view to Feast's engine.
_VALIDATED_VIEW = """
from datetime import timedelta

from entities import user
from feast import FeatureView, Field
from feast.types import Float64
from sources import user_features_source

user_features_validated = FeatureView(
    name="user_features_validated",
    entities=[user],
    ttl=timedelta(days=21),
    schema=[Field(name="feature_1", dtype=Float64), Field(name="feature_2", dtype=Float64)],
    online=True,
    source=user_features_source,
    enable_validation=True,
)
"""


@pytest.fixture
def repo(tmp_path: Path, redis_available: None, spark_cluster: SparkCluster) -> Iterator[TestRepo]:
    """A spark-profile repo with the extra view, applied on the standalone cluster."""
    write_microsecond_table(
        tmp_path / "data" / "offline" / "user_features.parquet", make_user_features(users=50)
    )
    applied = AppliedRepo(
        tmp_path,
        profile="spark",
        spark_master=spark_cluster.master_url,
        extra_definitions={"validated_views.py": _VALIDATED_VIEW},
    )
    try:
        yield applied.repo
    finally:
        applied.close()


def test_a_validating_view_is_materialized_by_feasts_spark_engine(repo: TestRepo) -> None:
    import pandas as pd

    store = open_feature_store(repo.feast)

    store.materialize(START, END, feature_views=["user_features_validated"])

    (result,) = engine_results(store)
    assert (result.view, result.engine) == ("user_features_validated", "feast-spark")
    frame = pd.read_parquet(repo.data.user_features_path)
    expected = expected_online(frame, start=START, end=END)
    users = sorted(expected)
    online = store.get_online_features(
        features=["user_features_validated:feature_1", "user_features_validated:feature_2"],
        entity_rows=[{"user_id": user} for user in users],
    ).to_dict()
    assert online["user_id"] == users
    for name in ("feature_1", "feature_2"):
        assert online[name] == pytest.approx([expected[user][1][name] for user in users])
