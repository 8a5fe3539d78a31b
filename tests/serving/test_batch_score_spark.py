"""``churn score`` on the spark profile: the same scores as on the production profile."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.settings import MlflowSettings
from serving.batch import ScoreRequest, ScoringSettings, run_score
from tests.utils.materialize import END, AppliedRepo, make_user_features, write_microsecond_table
from tests.utils.serving import register_model, tracking_uri_in, training_frame
from tests.utils.spark import SparkCluster

# Feast warns "experimental" whenever a SparkSource or the Spark offline store is built: the
# spark profile uses them on purpose.
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:The spark data source API is an experimental feature:RuntimeWarning"
    ),
    pytest.mark.filterwarnings("ignore:The spark offline store is an experimental:RuntimeWarning"),
]


@pytest.fixture(scope="module")
def both_profiles(
    tmp_path_factory: pytest.TempPathFactory, redis_available: None, spark_cluster: SparkCluster
) -> Iterator[dict[str, AppliedRepo]]:
    """The same offline table behind the production profile and the spark profile."""
    frame = make_user_features(users=120)
    production = AppliedRepo(tmp_path_factory.mktemp("production"))
    spark_root = tmp_path_factory.mktemp("spark")
    # `feast apply` on the spark profile reads the source's schema: the table must exist.
    write_microsecond_table(spark_root / "data" / "offline" / "user_features.parquet", frame)
    on_spark = AppliedRepo(spark_root, profile="spark", spark_master=spark_cluster.master_url)
    for applied in (production, on_spark):
        write_microsecond_table(applied.repo.data.user_features_path, frame)
    try:
        yield {"production": production, "spark": on_spark}
    finally:
        production.close()
        on_spark.close()


def test_score_on_the_spark_profile_equals_the_production_profile(
    both_profiles: dict[str, AppliedRepo], tmp_path: Path
) -> None:
    """Same users, same probabilities (1e-9), same reasons, through Feast's Spark store."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    features, labels = training_frame(2000, seed=3)
    model = HistGradientBoostingClassifier(max_iter=40, early_stopping=False, random_state=0)
    model.fit(features, labels)
    files = {}
    for name, applied in both_profiles.items():
        repo = applied.fresh()
        uri = tracking_uri_in(tmp_path / f"mlflow-{name}")
        register_model(uri, project=repo.project, model=model)
        files[name] = run_score(
            ScoreRequest(
                out=tmp_path / f"{name}.parquet",
                at=END,
                feast=repo.feast,
                mlflow=MlflowSettings(tracking_uri=uri),
                settings=ScoringSettings(chunk_rows=50),
            )
        )
    production, on_spark = (pd.read_parquet(files[n].path) for n in ("production", "spark"))

    assert files["spark"].scored == files["production"].scored > 50  # several chunks
    assert files["spark"].unscored == files["production"].unscored
    assert on_spark["user_id"].tolist() == production["user_id"].tolist()
    np.testing.assert_allclose(
        on_spark["churn_probability"], production["churn_probability"], rtol=0, atol=1e-9
    )
    # Feast's own to_df() leaves a staged copy of every chunk behind; none may stay.
    staging = both_profiles["spark"].repo.data.data_dir / "spark-staging"
    assert not [path for path in staging.rglob("*") if path.is_file()]
    reasons = [column for column in production.columns if column.startswith("reason_")]
    assert reasons
    pd.testing.assert_frame_equal(
        on_spark[reasons], production[reasons], check_exact=False, atol=1e-9, rtol=0
    )
