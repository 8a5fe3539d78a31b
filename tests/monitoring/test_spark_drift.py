"""Drift from Spark aggregates equals the in-process figures (PSI exactly, KS within bound).

The Spark side runs on the local standalone cluster (two worker executors).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from core.compute.spark.statistics import SparkSample, SparkStatistics
from monitoring.columns import ks_on_grid
from monitoring.comparison import compare_frames, compare_samples
from monitoring.drift import with_domain_classifier
from monitoring.settings import MonitoringSettings
from tests.utils.monitoring import make_drift_samples
from tests.utils.spark import SparkCluster, cluster_session

# Spark on the shared 2-core machine: a driver JVM starts in 10-60 s and each `feast`/`churn`
# process starts its own; the session-wide cluster start counts against the first test.
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def spark(spark_cluster: SparkCluster) -> Iterator[object]:
    yield cluster_session(spark_cluster)


def test_drift_on_spark_equals_the_in_process_figures(spark: object) -> None:
    reference, current = make_drift_samples(seed=3)
    settings = MonitoringSettings(correction="none")
    on_spark_reference = SparkSample.of(spark.createDataFrame(reference).repartition(3))  # type: ignore[attr-defined]
    on_spark_current = SparkSample.of(spark.createDataFrame(current).repartition(2))  # type: ignore[attr-defined]

    in_process = compare_frames(
        reference, current, settings, features=["usage", "plan"], score_column="score"
    )
    on_spark = compare_samples(
        SparkStatistics(),
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
        # The quality checks' figures (reference range, values outside it, unseen
        # categories) are exact aggregates too.
        assert spark_result.coverage == local.coverage
    usage_spark, usage_local = on_spark.features[0], in_process.features[0]
    assert usage_spark.kind == "continuous"
    assert usage_spark.psi_bins is not None and usage_local.psi_bins is not None
    assert usage_spark.psi_bins.edges == pytest.approx(usage_local.psi_bins.edges, rel=1e-12)
    assert [item.to_dict() for item in on_spark.quality.features] == [
        item.to_dict() for item in in_process.quality.features
    ]


def test_the_domain_classifier_trains_on_a_seeded_sample_drawn_on_spark(spark: object) -> None:
    reference, current = make_drift_samples(seed=5)
    samples = [
        SparkSample.of(spark.createDataFrame(frame).repartition(3))  # type: ignore[attr-defined]
        for frame in (reference, current)
    ]
    statistics = SparkStatistics()

    drawn = statistics.sample_rows(samples[0], ["usage", "plan"], rows=1000, seed=7)
    again = statistics.sample_rows(samples[0], ["usage", "plan"], rows=1000, seed=7)
    whole = statistics.sample_rows(samples[1], ["usage", "plan"], rows=10_000, seed=7)

    assert list(drawn.columns) == ["usage", "plan"] and len(drawn) == 1000
    pd.testing.assert_frame_equal(drawn, again)  # the same seed draws the same rows
    assert set(drawn["usage"].dropna()) <= set(reference["usage"].dropna())
    assert len(whole) == len(current)  # a smaller window travels whole
    settings = MonitoringSettings(multivariate_max_rows=1000)
    report = compare_samples(statistics, *samples, settings, features=["usage", "plan"])
    verdict = with_domain_classifier(report, statistics, (samples[0], samples[1])).multivariate
    assert verdict is not None and verdict.status == "ok"
    assert (verdict.reference_rows, verdict.current_rows) == (1000, 1000)
    # The samples' shift is mild (usage's log-mean by 0.2, plan's mix): seen, under "minor".
    assert verdict.low is not None and verdict.low > 0.5
    assert verdict.separation[0].feature in ("usage", "plan")


def test_the_ks_statistic_on_spark_is_within_its_stated_bound(spark: object) -> None:
    reference, current = make_drift_samples(seed=4)
    on_spark_reference = SparkSample.of(spark.createDataFrame(reference))  # type: ignore[attr-defined]
    on_spark_current = SparkSample.of(spark.createDataFrame(current))  # type: ignore[attr-defined]

    for name in ("usage", "score"):
        d_grid, bound = ks_on_grid(
            SparkStatistics(), on_spark_reference, on_spark_current, name, grid=1000
        )

        finite = [frame[name][np.isfinite(frame[name])] for frame in (reference, current)]
        exact = stats.ks_2samp(*finite).statistic
        assert d_grid <= exact + 1e-12
        assert exact <= d_grid + bound + 1e-12
        assert bound < 0.005
