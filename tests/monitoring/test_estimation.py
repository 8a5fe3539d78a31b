"""The performance estimator (CBPE) against cases whose answer is known exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from core.errors import InputError
from monitoring.estimation import (
    area_under_roc,
    average_precision,
    estimate_performance,
    expected_curve_counts,
)

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


def test_two_score_levels_give_the_exact_expected_confusion_matrix_and_auc() -> None:
    # Half the rows at 0.8, half at 0.2, perfectly calibrated: at the 0.8 cut the expected
    # confusion matrix is TP 0.4n, FP 0.1n; in all P = N = 0.5n. The expected ROC curve is
    # (0,0) -> (0.2,0.8) -> (1,1): AUC 0.8 exactly.
    n = 1000
    scores = np.repeat([0.8, 0.2], n // 2)
    tp, fp = expected_curve_counts(np.sort(scores)[::-1])

    np.testing.assert_allclose(tp, [0.4 * n, 0.5 * n])
    np.testing.assert_allclose(fp, [0.1 * n, 0.5 * n])
    assert area_under_roc(tp, fp) == pytest.approx(0.8, abs=1e-12)
    # Precision 0.8 over the first 0.8 of recall, then 0.5 over the last 0.2.
    assert average_precision(tp, fp) == pytest.approx(0.8 * 0.8 + 0.2 * 0.5, abs=1e-12)

    estimate = estimate_performance(scores, min_rows=100)
    assert estimate.status == "ok"
    assert estimate.roc_auc is not None and estimate.roc_auc.estimate == pytest.approx(0.8)
    assert estimate.brier is not None and estimate.brier.estimate == pytest.approx(0.16)
    assert estimate.churn_rate is not None and estimate.churn_rate.estimate == pytest.approx(0.5)


def test_labels_drawn_from_calibrated_scores_land_around_the_estimate_and_inside() -> None:
    rng = np.random.default_rng(3)
    scores = rng.beta(1.2, 4.0, size=2000)
    estimate = estimate_performance(scores, min_rows=500)
    realized = {"roc_auc": [], "pr_auc": [], "brier": [], "churn_rate": []}
    for _ in range(200):
        labels = rng.random(len(scores)) < scores
        realized["roc_auc"].append(roc_auc_score(labels, scores))
        realized["pr_auc"].append(average_precision_score(labels, scores))
        realized["brier"].append(np.mean((labels - scores) ** 2))
        realized["churn_rate"].append(labels.mean())
    for metric, values in realized.items():
        interval = estimate.figure(metric)
        assert interval is not None
        # The estimate is the expected value: the mean of 200 draws is within 3 SE of it.
        assert abs(np.mean(values) - interval.estimate) < 3 * np.std(values) / np.sqrt(200)
        inside = np.mean([interval.contains(value) for value in values])
        assert 0.85 <= inside <= 1.0, (metric, inside)
        # The interval is as wide as the draws' spread (95 %: about 2 x 1.96 SD).
        width = interval.high - interval.low
        assert 0.7 < width / (2 * 1.96 * np.std(values)) < 1.3, metric


def test_the_interval_narrows_with_the_window() -> None:
    rng = np.random.default_rng(4)
    small = estimate_performance(rng.beta(1.2, 4.0, size=2_000), min_rows=500)
    large = estimate_performance(rng.beta(1.2, 4.0, size=200_000), min_rows=500)
    assert small.roc_auc is not None and large.roc_auc is not None
    ratio = (small.roc_auc.high - small.roc_auc.low) / (large.roc_auc.high - large.roc_auc.low)
    assert 7 < ratio < 13  # sqrt(100) = 10


def test_below_the_minimum_no_figure_is_claimed() -> None:
    estimate = estimate_performance(np.full(7, 0.3), min_rows=500)
    assert estimate.status == "insufficient_data"
    assert estimate.rows == 7
    assert estimate.roc_auc is None and estimate.brier is None and estimate.churn_rate is None
    assert "fewer than the minimum 500" in (estimate.note or "")


def test_missing_probabilities_are_counted_and_bad_ones_refused() -> None:
    scores = np.concatenate([np.linspace(0.05, 0.95, 600), [np.nan, np.nan]])
    estimate = estimate_performance(scores, min_rows=500)
    assert estimate.rows == 600 and estimate.excluded_rows == 2
    assert "2 prediction(s) without a probability" in (estimate.note or "")
    with pytest.raises(InputError, match="outside"):
        estimate_performance(np.array([0.5, 1.5]), min_rows=1)


def test_average_ranks_match_scipy_with_ties() -> None:
    from scipy.stats import rankdata

    from monitoring.estimation import average_ranks

    values = np.random.default_rng(5).integers(0, 20, size=500).astype(float) / 20
    np.testing.assert_array_equal(average_ranks(values), rankdata(values))


def test_the_calibration_term_widens_the_roc_auc_interval_in_quadrature_only() -> None:
    from statistics import NormalDist

    scores = np.random.default_rng(6).beta(1.2, 4.0, size=3000)
    plain = estimate_performance(scores, min_rows=500)
    widened = estimate_performance(scores, min_rows=500, calibration_sd=0.015)
    assert plain.roc_auc is not None and widened.roc_auc is not None
    noise = widened.roc_auc_noise_sd
    assert noise is not None and noise == pytest.approx(plain.roc_auc_noise_sd)
    z = NormalDist().inv_cdf(0.975)
    half = (widened.roc_auc.high - widened.roc_auc.low) / 2
    assert half == pytest.approx(z * np.hypot(noise, 0.015))
    assert widened.roc_auc.estimate == plain.roc_auc.estimate
    assert widened.brier == plain.brier and widened.churn_rate == plain.churn_rate
    assert widened.to_dict()["calibration_sd"] == 0.015


def test_a_large_window_keeps_the_calibration_term() -> None:
    # Label noise shrinks with the window; a calibration bias does not.
    scores = np.random.default_rng(7).beta(1.2, 4.0, size=200_000)
    estimate = estimate_performance(scores, min_rows=500, calibration_sd=0.01)
    assert estimate.roc_auc is not None
    assert estimate.roc_auc.high - estimate.roc_auc.low >= 2 * 1.959 * 0.01
    with pytest.raises(InputError, match="calibration_sd"):
        estimate_performance(scores, min_rows=500, calibration_sd=-0.01)


def test_the_term_restores_coverage_where_the_probabilities_are_off_by_a_known_bias() -> None:
    # The model's probabilities are too flat for the window (truth: logit x 1.3): the
    # estimate is biased low by a fixed amount. Label noise alone misses most windows; a
    # term as large as that bias brings coverage back.
    rng = np.random.default_rng(8)
    logit = rng.normal(-1.3, 1.0, size=2000)
    model = 1 / (1 + np.exp(-logit))
    truth = 1 / (1 + np.exp(-1.3 * logit))
    bias = estimate_performance(truth, min_rows=500).roc_auc.estimate - (  # type: ignore[union-attr]
        estimate_performance(model, min_rows=500).roc_auc.estimate  # type: ignore[union-attr]
    )
    assert bias > 0.03
    realized = [roc_auc_score(rng.random(2000) < truth, model) for _ in range(100)]
    plain = estimate_performance(model, min_rows=500).roc_auc
    widened = estimate_performance(model, min_rows=500, calibration_sd=bias).roc_auc
    assert plain is not None and widened is not None
    assert np.mean([plain.contains(value) for value in realized]) < 0.5
    assert np.mean([widened.contains(value) for value in realized]) >= 0.9


def _reference(**ranges: tuple[float, float]) -> object:
    from monitoring.estimate import Reference

    return Reference(model="m@champion", version="3", roc_auc=0.9, ranges=dict(ranges))


def test_a_window_mostly_outside_the_training_range_claims_no_figure() -> None:
    from monitoring.estimate import estimate_window
    from monitoring.settings import MonitoringSettings

    rng = np.random.default_rng(4)
    probabilities = rng.beta(1.2, 4.0, size=2000)
    reference = _reference(usage=(0.0, 10.0), engagement=(-1.0, 1.0))
    # usage moved down: 73% of the rows below the training minimum (bench.estimate's
    # -1.5 SD window), engagement inside.
    usage = np.where(np.arange(2000) < 1460, -1.0, 5.0)
    engagement = rng.uniform(-1.0, 1.0, 2000)
    frame = pd.DataFrame(
        {"churn_probability": probabilities, "usage": usage, "engagement": engagement}
    )
    settings = MonitoringSettings()

    outside = estimate_window(probabilities, settings, reference, frame)  # type: ignore[arg-type]

    assert outside.status == "out_of_support"
    assert outside.roc_auc is None and outside.pr_auc is None and outside.churn_rate is None
    assert outside.out_of_range == {"usage": pytest.approx(0.73), "engagement": 0.0}
    assert outside.unsupported == ["usage"]
    assert outside.max_out_of_range == settings.estimate_max_out_of_range == 0.1
    assert "usage 73.0%" in (outside.note or "")
    document = outside.to_dict()
    assert document["status"] == "out_of_support" and document["roc_auc"] is None

    inside = frame.assign(usage=np.where(np.arange(2000) < 100, -1.0, 5.0))  # 5%: inside
    claimed = estimate_window(probabilities, settings, reference, inside)  # type: ignore[arg-type]
    assert claimed.status == "ok" and claimed.roc_auc is not None
    assert claimed.out_of_range == {"usage": pytest.approx(0.05), "engagement": 0.0}
    assert claimed.roc_auc == estimate_performance(probabilities, min_rows=500).roc_auc


def test_without_feature_columns_or_ranges_the_support_is_unknown_and_the_figure_stands() -> None:
    from monitoring.estimate import estimate_window
    from monitoring.settings import MonitoringSettings

    probabilities = np.random.default_rng(5).beta(1.2, 4.0, size=2000)
    settings = MonitoringSettings()
    only = pd.DataFrame({"churn_probability": probabilities})
    for reference, frame in (
        (_reference(usage=(0.0, 10.0)), only),  # a file of probabilities alone
        (_reference(), only.assign(usage=-5.0)),  # a version trained before ranges were kept
        (_reference(usage=(0.0, 10.0)), None),
    ):
        estimate = estimate_window(probabilities, settings, reference, frame)  # type: ignore[arg-type]
        assert estimate.status == "ok" and estimate.roc_auc is not None
        assert estimate.out_of_range is None and estimate.unsupported == []
    few = estimate_window(
        probabilities[:10],
        settings,
        _reference(usage=(0.0, 10.0)),  # type: ignore[arg-type]
        pd.DataFrame({"usage": np.full(10, -1.0)}),
    )
    assert few.status == "insufficient_data" and few.out_of_range == {"usage": 1.0}


def test_a_feature_column_that_is_not_numeric_counts_as_unknown_values() -> None:
    from monitoring.estimate import estimate_window
    from monitoring.settings import MonitoringSettings

    probabilities = np.random.default_rng(6).beta(1.2, 4.0, size=1000)
    text = pd.DataFrame({"usage": ["n/a"] * 900 + ["5"] * 100})  # the known values inside

    estimate = estimate_window(
        probabilities,
        MonitoringSettings(),
        _reference(usage=(0.0, 10.0)),  # type: ignore[arg-type]
        text,
    )

    assert estimate.status == "ok" and estimate.out_of_range == {"usage": 0.0}
