"""Drift from Spark aggregates equals the in-process figures (PSI exactly, KS within bound).

The Spark side runs on the local standalone cluster (two worker executors).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from monitoring.comparison import compare_frames
from monitoring.settings import MonitoringSettings
from monitoring.spark_statistics import (
    compare_frames_on_spark,
    ks_on_grid,
)
from tests.utils.spark import SparkCluster, cluster_session

# Spark on the shared 2-core machine: a driver JVM starts in 10-60 s and each `feast`/`churn`
# process starts its own; the session-wide cluster start counts against the first test.
pytestmark = pytest.mark.timeout(1800)


def _samples(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    reference = pd.DataFrame(
        {
            "usage": rng.lognormal(1.0, 0.8, size=6000),
            "plan": rng.integers(0, 4, size=6000).astype("float64"),
            "score": rng.normal(size=6000),
        }
    )
    current = pd.DataFrame(
        {
            "usage": rng.lognormal(1.2, 0.8, size=4000),
            "plan": rng.choice([0, 1, 2, 3], p=[0.4, 0.3, 0.2, 0.1], size=4000).astype("float64"),
            "score": rng.normal(0.02, 1.0, size=4000),
        }
    )
    reference.loc[reference.sample(frac=0.05, random_state=1).index, "usage"] = np.nan
    current.loc[current.sample(frac=0.10, random_state=2).index, "usage"] = np.inf
    return reference, current


@pytest.fixture(scope="module")
def spark(spark_cluster: SparkCluster) -> Iterator[object]:
    yield cluster_session(spark_cluster)


def test_drift_on_spark_equals_the_in_process_figures(spark: object) -> None:
    reference, current = _samples(seed=3)
    settings = MonitoringSettings(correction="none")
    on_spark_reference = spark.createDataFrame(reference).repartition(3)  # type: ignore[attr-defined]
    on_spark_current = spark.createDataFrame(current).repartition(2)  # type: ignore[attr-defined]

    in_process = compare_frames(
        reference, current, settings, features=["usage", "plan"], score_column="score"
    )
    on_spark = compare_frames_on_spark(
        on_spark_reference,
        on_spark_current,
        settings,
        features=["usage", "plan"],
        score_column="score",
    )

    assert on_spark.severity == in_process.severity
    assert (on_spark.reference_rows, on_spark.current_rows) == (6000, 4000)
    pairs = [*zip(on_spark.features, in_process.features, strict=True)]
    assert on_spark.score is not None and in_process.score is not None
    pairs.append((on_spark.score, in_process.score))
    for spark_result, local in pairs:
        assert spark_result.feature == local.feature
        assert spark_result.kind == local.kind
        assert spark_result.severity == local.severity
        assert (spark_result.reference.count, spark_result.reference.nulls) == (
            local.reference.count,
            local.reference.nulls,
        )
        assert (spark_result.current.count, spark_result.current.nulls) == (
            local.current.count,
            local.current.nulls,
        )
        assert spark_result.reference.mean == pytest.approx(local.reference.mean, rel=1e-12)
        # PSI is exact: same edges, same counts.
        assert spark_result.psi == pytest.approx(local.psi, rel=1e-12, abs=1e-15)
        assert spark_result.psi_bins is not None and local.psi_bins is not None
        assert spark_result.psi_bins.reference == pytest.approx(local.psi_bins.reference)
        assert spark_result.psi_bins.current == pytest.approx(local.psi_bins.current)
        if local.kind == "categorical":
            assert spark_result.statistic == pytest.approx(local.statistic, rel=1e-12)
            assert spark_result.p_value == pytest.approx(local.p_value, rel=1e-9)
    usage_spark, usage_local = on_spark.features[0], in_process.features[0]
    assert usage_spark.kind == "continuous"
    assert usage_spark.psi_bins is not None and usage_local.psi_bins is not None
    assert usage_spark.psi_bins.edges == pytest.approx(usage_local.psi_bins.edges, rel=1e-12)


def test_the_ks_statistic_on_spark_is_within_its_stated_bound(spark: object) -> None:
    reference, current = _samples(seed=4)
    on_spark_reference = spark.createDataFrame(reference)  # type: ignore[attr-defined]
    on_spark_current = spark.createDataFrame(current)  # type: ignore[attr-defined]

    for name in ("usage", "score"):
        d_grid, bound = ks_on_grid(on_spark_reference, on_spark_current, name, grid=1000)

        finite = [frame[name][np.isfinite(frame[name])] for frame in (reference, current)]
        exact = stats.ks_2samp(*finite).statistic
        assert d_grid <= exact + 1e-12
        assert exact <= d_grid + bound + 1e-12
        assert bound < 0.005
