"""Drift from a backend's aggregates equals the in-process figures (PSI exactly, KS within
its stated bound), here on the local backend: the same comparison code the spark profile
runs (tests/monitoring/test_spark_drift.py checks the spark backend's aggregates)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from core.compute.local.statistics import LocalStatistics
from core.compute.statistics import FrameSample
from core.errors import InputError
from monitoring.columns import ks_on_grid
from monitoring.comparison import compare_frames, compare_samples
from monitoring.settings import MonitoringSettings
from tests.utils.monitoring import make_drift_samples

pytestmark = pytest.mark.unit

LOCAL = LocalStatistics()


def test_drift_from_aggregates_equals_the_in_process_figures() -> None:
    reference, current = make_drift_samples(seed=3)
    settings = MonitoringSettings(correction="none")

    in_process = compare_frames(
        reference, current, settings, features=["usage", "plan"], score_column="score"
    )
    aggregated = compare_samples(
        LOCAL,
        FrameSample(reference),
        FrameSample(current),
        settings,
        features=["usage", "plan"],
        score_column="score",
    )

    assert aggregated.severity == in_process.severity
    assert (aggregated.reference_rows, aggregated.current_rows) == (6000, 4000)
    assert aggregated.score is not None and in_process.score is not None
    pairs = [*zip(aggregated.features, in_process.features, strict=True)]
    pairs.append((aggregated.score, in_process.score))
    for result, local in pairs:
        assert (result.feature, result.kind, result.severity) == (
            local.feature,
            local.kind,
            local.severity,
        )
        assert result.reference == local.reference and result.current == local.current
        assert result.psi == pytest.approx(local.psi, rel=1e-12, abs=1e-15)
        assert result.psi_bins is not None and local.psi_bins is not None
        assert result.psi_bins.reference == pytest.approx(local.psi_bins.reference)
        if local.kind == "categorical":
            assert result.statistic == pytest.approx(local.statistic, rel=1e-12)
            assert result.p_value == pytest.approx(local.p_value, rel=1e-9)
        else:  # D_grid <= D <= D_grid + about 2 / 1000, and the note says so
            assert result.statistic is not None and local.statistic is not None
            assert result.statistic <= local.statistic + 1e-12
            assert local.statistic <= result.statistic + 0.0025
            assert result.note is not None and "KS on 1000 pooled quantiles" in result.note
    usage, usage_local = aggregated.features[0], in_process.features[0]
    assert usage.kind == "continuous"
    assert usage.psi_bins is not None and usage_local.psi_bins is not None
    assert usage.psi_bins.edges == pytest.approx(usage_local.psi_bins.edges, rel=1e-12)


def test_the_ks_statistic_from_counts_is_within_its_stated_bound() -> None:
    reference, current = make_drift_samples(seed=4)

    for name in ("usage", "score"):
        d_grid, bound = ks_on_grid(
            LOCAL, FrameSample(reference), FrameSample(current), name, grid=1000
        )

        finite = [frame[name][np.isfinite(frame[name])] for frame in (reference, current)]
        exact = stats.ks_2samp(*finite).statistic
        assert d_grid <= exact + 1e-12
        assert exact <= d_grid + bound + 1e-12
        assert bound < 0.005


def test_unknown_columns_and_empty_samples_are_named() -> None:
    reference, current = make_drift_samples(seed=5)
    settings = MonitoringSettings()

    with pytest.raises(InputError, match="current lacks churn_probability"):
        compare_samples(
            LOCAL,
            FrameSample(reference),
            FrameSample(current),
            settings,
            features=["usage"],
            score_column="churn_probability",
        )
    with pytest.raises(InputError, match="the current sample has no rows"):
        compare_samples(
            LOCAL,
            FrameSample(reference),
            FrameSample(current.iloc[:0]),
            settings,
            features=["usage"],
        )
