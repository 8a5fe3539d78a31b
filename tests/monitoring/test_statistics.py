"""Drift statistics against independent computations and scipy itself."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from core.errors import InputError
from monitoring.columns import compare_column
from monitoring.comparison import compare_frames
from monitoring.settings import MonitoringSettings
from monitoring.statistics import (
    adjust_p_values,
    kolmogorov_sf,
    ks_two_sample,
    population_stability_index,
)
from tests.utils.monitoring import make_feature_frame

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`

SETTINGS = MonitoringSettings()


def _independent_psi(reference: np.ndarray, current: np.ndarray, bins: int, eps: float) -> float:
    """PSI written out plainly: quantile edges, open outer bins, a loop over values."""
    edges = sorted(set(np.quantile(reference, [k / bins for k in range(1, bins)])))

    def proportions(values: np.ndarray) -> list[float]:
        counts = [0] * (len(edges) + 1)
        for value in values:
            counts[sum(1 for edge in edges if value > edge)] += 1
        return [max(count / len(values), eps) for count in counts]

    total = 0.0
    for r, c in zip(proportions(reference), proportions(current), strict=True):
        total += (c - r) * math.log(c / r)
    return total


def _series(values: np.ndarray | list[float]) -> pd.Series:
    return pd.Series(np.asarray(values, dtype=np.float64))


def test_identical_samples_have_zero_psi_and_no_drift() -> None:
    frame = make_feature_frame(3000, seed=1)
    report = compare_frames(frame, frame.copy(), SETTINGS)
    assert [item.psi for item in report.features] == pytest.approx([0.0] * 7, abs=1e-12)
    assert {item.severity for item in report.features} == {"none"}
    assert report.severity == "none"
    assert all(item.p_value == pytest.approx(1.0) for item in report.features)


def test_psi_of_a_hand_computed_two_bin_shift() -> None:
    reference = _series(range(1, 11))  # median 5.5 splits it 50/50
    current = _series([1, 2, 3, 20, 21, 22, 23, 24, 25, 26])  # 30/70
    settings = SETTINGS.model_copy(update={"psi_bins": 2, "min_samples": 10})
    result = compare_column("x", reference, current, settings)
    expected = (0.3 - 0.5) * math.log(0.3 / 0.5) + (0.7 - 0.5) * math.log(0.7 / 0.5)
    assert result.psi == pytest.approx(expected, rel=1e-12)
    assert result.psi_bins is not None and result.psi_bins.current == pytest.approx([0.3, 0.7])


def test_psi_of_a_known_shift_matches_an_independent_computation() -> None:
    rng = np.random.default_rng(7)
    reference = rng.normal(0, 1, 2000)
    current = rng.normal(0.5, 1.2, 1500)
    result = compare_column("x", _series(reference), _series(current), SETTINGS)
    expected = _independent_psi(reference, current, bins=10, eps=SETTINGS.psi_epsilon)
    assert result.psi == pytest.approx(expected, rel=1e-9)
    assert result.psi > 0.2 and result.severity == "none"  # graded only by compare_frames


def test_out_of_range_current_values_are_counted_in_the_open_outer_bins() -> None:
    rng = np.random.default_rng(3)
    reference = rng.uniform(0, 1, 2000)
    inside = compare_column("x", _series(reference), _series(rng.uniform(0, 1, 2000)), SETTINGS)
    beyond = rng.uniform(0, 1, 2000)
    beyond[:400] = rng.uniform(5, 10, 400)  # 20% far above the reference maximum
    outside = compare_column("x", _series(reference), _series(beyond), SETTINGS)
    assert outside.psi_bins is not None
    assert outside.psi_bins.current[-1] == pytest.approx(0.2 + 0.8 * 0.1, abs=0.03)
    assert sum(outside.psi_bins.current) == pytest.approx(1.0)
    assert outside.psi > inside.psi + 0.1


def test_empty_bins_use_epsilon_and_stay_finite() -> None:
    assert population_stability_index(
        np.array([50, 50]), np.array([100, 0]), epsilon=1e-4
    ) == pytest.approx((1 - 0.5) * math.log(1 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5))


@pytest.mark.parametrize(("n1", "n2"), [(400, 700), (12_000, 15_000)])
def test_ks_equals_scipy_ks_2samp_exact_and_asymptotic(n1: int, n2: int) -> None:
    rng = np.random.default_rng(n1)
    # Rounded values create ties within and across the samples.
    reference = np.round(rng.normal(0, 1, n1), 2)
    current = np.round(rng.normal(0.05, 1, n2), 2)
    expected = stats.ks_2samp(reference, current)
    result = compare_column("x", _series(reference), _series(current), SETTINGS)
    assert result.test == "ks"
    assert result.statistic == expected.statistic
    # Exact p-values are scipy's own; asymptotic ones may come from the vectorised Smirnov
    # sum (see test_kolmogorov_sf_matches_scipy_kstwo).
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-8)
    swapped = ks_two_sample(np.sort(current), np.sort(reference))
    assert swapped[0] == stats.ks_2samp(current, reference).statistic


@pytest.mark.parametrize("decimals", [None, 1])
@pytest.mark.parametrize("shift", [0.0, 0.03, 0.2, 3.0])
def test_ks_statistic_is_exact_for_large_samples(shift: float, decimals: int | None) -> None:
    rng = np.random.default_rng(8)
    reference = rng.normal(0, 1, 30_000)
    current = rng.normal(shift, 1, 20_001)
    if decimals is not None:  # ties within and across the samples
        reference, current = np.round(reference, decimals), np.round(current, decimals)
    statistic, p_value = ks_two_sample(np.sort(reference), np.sort(current))
    expected = stats.ks_2samp(reference, current)
    assert statistic == expected.statistic
    assert p_value == pytest.approx(expected.pvalue, rel=1e-8, abs=1e-300)


def test_kolmogorov_sf_matches_scipy_kstwo() -> None:
    rng = np.random.default_rng(9)
    for _ in range(40):
        n = int(rng.integers(141, 60_000))
        statistic = float(np.sqrt(rng.uniform(0.5, 400) / n))
        assert kolmogorov_sf(statistic, n) == pytest.approx(
            stats.kstwo.sf(statistic, n), rel=1e-8, abs=1e-300
        )


def test_chi_square_equals_scipy_chi2_contingency_on_the_counts() -> None:
    reference = _series([0] * 700 + [1] * 300)
    current = _series([0] * 550 + [1] * 450)
    result = compare_column("is_weekend", reference, current, SETTINGS)
    expected = stats.chi2_contingency(np.array([[700, 300], [550, 450]]))
    assert (result.kind, result.test) == ("categorical", "chi2")
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-12)
    uncorrected = stats.chi2_contingency(np.array([[700, 300], [550, 450]]), correction=False)
    assert result.effect_size == pytest.approx(math.sqrt(uncorrected.statistic / 2000))
    psi = (0.45 - 0.3) * math.log(0.45 / 0.3) + (0.55 - 0.7) * math.log(0.55 / 0.7)
    assert result.psi == pytest.approx(psi)


def test_low_cardinality_threshold_is_configurable() -> None:
    rng = np.random.default_rng(5)
    reference, current = _series(rng.integers(0, 7, 1000)), _series(rng.integers(0, 7, 1000))
    assert compare_column("day", reference, current, SETTINGS).test == "chi2"
    few = SETTINGS.model_copy(update={"max_categories": 5})
    assert compare_column("day", reference, current, few).test == "ks"


def test_text_columns_are_categorical() -> None:
    reference = pd.Series(["a"] * 50 + ["b"] * 50)
    current = pd.Series(["a"] * 20 + ["b"] * 70 + ["c"] * 10 + [None] * 5)
    result = compare_column("plan", reference, current, SETTINGS)
    assert result.test == "chi2"
    assert result.psi_bins is not None and result.psi_bins.labels == ["a", "b", "c"]
    assert result.current.nulls == 5 and result.current.count == 100


def test_constant_columns_give_a_clear_result() -> None:
    same = compare_frames(
        pd.DataFrame({"x": [3.0] * 200}), pd.DataFrame({"x": [3.0] * 300}), SETTINGS
    ).features[0]
    assert (same.psi, same.statistic, same.p_value, same.severity) == (0.0, 0.0, 1.0, "none")
    assert same.note == "single category in both samples"
    rng = np.random.default_rng(1)
    moved = compare_frames(
        pd.DataFrame({"x": [3.0] * 200}), pd.DataFrame({"x": rng.normal(3, 1, 300)}), SETTINGS
    ).features[0]
    assert moved.test == "ks" and moved.severity == "major"
    assert moved.mean_shift_sd is None  # no spread in the reference to measure it by
    assert moved.note is not None and "ties" in moved.note


def test_nulls_are_counted_apart_and_all_null_columns_are_reported() -> None:
    reference = pd.DataFrame(
        {"x": [1.0, 2.0, np.nan, 4.0] * 50, "gone": [1.0, 2.0] * 100, "never": [np.nan] * 200}
    )
    current = pd.DataFrame(
        {"x": [1.0, np.inf, 2.0, 4.0] * 50, "gone": [np.nan] * 200, "never": [None] * 200}
    )
    report = compare_frames(reference, current, SETTINGS)
    by_name = {item.feature: item for item in report.features}
    assert by_name["x"].reference.nulls == 50 and by_name["x"].current.nulls == 50
    assert by_name["x"].current.null_rate == 0.25
    assert by_name["gone"].kind == "empty" and by_name["gone"].severity == "major"
    assert by_name["gone"].reasons == ("all 200 current values are null (reference has 200)",)
    assert by_name["never"].kind == "empty" and by_name["never"].severity == "none"
    assert by_name["never"].psi is None and by_name["never"].p_value is None


def test_a_shifted_feature_is_major_and_the_others_are_not() -> None:
    reference = make_feature_frame(4000, seed=1)
    current = make_feature_frame(4000, seed=2, feature_2_shift=1.5)
    report = compare_frames(reference, current, SETTINGS)
    assert report.names_with("major") == ["feature_2", "feature_ratio"]
    assert report.severity == "major"
    assert report.summary()["skipped"] == {
        "user_id": "excluded (key or timestamp column)",
        "event_timestamp": "excluded (key or timestamp column)",
    }
    feature_2 = next(item for item in report.features if item.feature == "feature_2")
    assert feature_2.mean_shift_sd == pytest.approx(0.75, abs=0.1)
    assert any(reason.startswith("PSI") for reason in feature_2.reasons)


def test_minor_severity_between_thresholds() -> None:
    settings = MonitoringSettings(psi_minor=0.01, psi_major=0.9, p_minor=0.5, p_major=1e-300)
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"x": rng.normal(0, 1, 3000)})
    shifted = pd.DataFrame({"x": rng.normal(0.2, 1, 3000)})
    result = compare_frames(frame, shifted, settings).features[0]
    assert result.severity == "minor" and result.drift_detected


def test_holm_and_bh_adjustments_match_their_definitions() -> None:
    p = [0.01, 0.04, 0.03, 0.5]
    assert adjust_p_values(p, "holm") == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert adjust_p_values(p, "bh") == pytest.approx(stats.false_discovery_control(p, method="bh"))
    assert adjust_p_values(p, "none") == p


def test_correction_and_effect_size_gate_decide_p_value_flags() -> None:
    rng = np.random.default_rng(11)
    reference = pd.DataFrame({f"x{i}": rng.normal(0, 1, 5000) for i in range(5)})
    current = reference.copy()
    current["x0"] = rng.normal(0.08, 1, 5000)  # small real shift: tiny PSI, p about 0.003
    design = SETTINGS.model_copy(update={"min_effect_size": 0.0})  # the reference design
    plain = compare_frames(reference, current, design.model_copy(update={"correction": "none"}))
    x0 = plain.features[0]
    assert x0.p_value_adjusted is None and x0.psi < 0.1 and x0.p_value < 0.01
    assert x0.severity == "major" and x0.effect_size == pytest.approx(0.036)
    holm = compare_frames(reference, current, design).features[0]
    assert holm.p_value_adjusted == pytest.approx(5 * x0.p_value)  # smallest of five
    assert holm.severity == "minor"
    assert holm.reasons == (f"KS adjusted p {holm.p_value_adjusted:.2g} < 0.05",)
    gated = compare_frames(reference, current, SETTINGS).features[0]  # default gate 0.05
    assert gated.severity == "none" and gated.reasons == ()
    assert gated.note == (
        f"KS adjusted p {gated.p_value_adjusted:.2g} < 0.05 not counted: ks_statistic 0.036 < 0.05"
    )


def test_score_drift_is_reported_apart() -> None:
    rng = np.random.default_rng(4)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 2000), "score": rng.beta(2, 5, 2000)})
    current = pd.DataFrame({"x": rng.normal(0, 1, 2000), "score": rng.beta(5, 2, 2000)})
    report = compare_frames(reference, current, SETTINGS, score_column="score")
    assert [item.feature for item in report.features] == ["x"]
    assert report.score is not None and report.score.severity == "major"
    assert report.severity == "none"
    assert report.summary()["score_severity"] == "major"


def test_unknown_features_and_empty_samples_are_named() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [1.0, 3.0]})
    with pytest.raises(InputError, match="current lacks c"):
        compare_frames(frame, frame.drop(columns=["b"]), SETTINGS, features=["a", "c"])
    with pytest.raises(InputError, match="current sample has no rows"):
        compare_frames(frame, frame.iloc[:0], SETTINGS)
    with pytest.raises(InputError, match="no shared numeric"):
        compare_frames(frame[["a"]], frame[["b"]], SETTINGS)


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="psi_minor"):
        MonitoringSettings(psi_minor=0.3, psi_major=0.2)


def test_a_one_row_window_is_insufficient_data_never_major(tmp_path) -> None:
    from monitoring.retrain import trigger_retraining

    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 2000), "flag": rng.integers(0, 2, 2000)})
    current = pd.DataFrame({"x": [8.0], "flag": [1]})  # one row, far out: PSI about 8

    report = compare_frames(reference, current, SETTINGS)

    by_name = {item.feature: item for item in report.features}
    for name in ("x", "flag"):
        assert by_name[name].kind == "insufficient_data"
        assert by_name[name].severity == "none" and by_name[name].psi is None
        assert by_name[name].note == (
            "insufficient data: current has 1 value(s), at least 30 needed per side; not tested"
        )
        assert by_name[name].to_dict()["status"] == "insufficient_data"
    assert report.severity == "none"
    assert report.summary()["insufficient_data"] == ["x", "flag"]
    calls: list[int] = []
    decision = trigger_retraining(
        report,
        train=lambda: calls.append(1),
        decisions_path=tmp_path / "decisions.jsonl",
        cooldown=timedelta(hours=1),
        now=datetime(2026, 11, 2, tzinfo=UTC),
    )
    assert decision.action == "skip" and calls == []


def test_the_minimum_sample_size_is_configurable() -> None:
    rng = np.random.default_rng(4)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 500)})
    current = pd.DataFrame({"x": rng.normal(3, 1, 20)})
    assert compare_frames(reference, current, SETTINGS).features[0].kind == "insufficient_data"
    lenient = MonitoringSettings(min_samples=10)
    shifted = compare_frames(reference, current, lenient).features[0]
    assert (shifted.kind, shifted.severity) == ("continuous", "major")
