"""The calibration term of label-free estimates, against cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from core.estimate_shift import (
    CalibrationTerm,
    logit_moments,
    reweightings,
    shift_calibration,
    weighted_auc,
)

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


def _descending(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    return order, np.append(np.flatnonzero(np.diff(ordered)), len(ordered) - 1)


def test_weighted_auc_is_sklearns_with_sample_weights_ties_included() -> None:
    rng = np.random.default_rng(1)
    scores = np.round(rng.random(800), 1)  # many ties
    labels = (rng.random(800) < scores).astype(float)
    weights = rng.gamma(2.0, size=800)
    order, ends = _descending(scores)
    y, w = labels[order], weights[order]

    area = weighted_auc(w * y, w * (1 - y), ends)

    assert float(area) == pytest.approx(roc_auc_score(labels, scores, sample_weight=weights))


def test_expected_weighted_auc_of_two_calibrated_levels_is_exact() -> None:
    # Rows at 0.8 weigh 3, rows at 0.2 weigh 1: expected positives 3 * 0.8 = 2.4 and
    # 0.2 per pair of rows, negatives 0.6 and 0.8. ROC: (0,0) -> (0.6/1.4, 2.4/2.6) -> (1,1).
    scores = np.repeat([0.8, 0.2], 50)
    weights = np.repeat([3.0, 1.0], 50)
    order, ends = _descending(scores)
    p, w = scores[order], weights[order]
    fpr, tpr = 0.6 / 1.4, 2.4 / 2.6
    expected = fpr * tpr / 2 + (1 - fpr) * (tpr + 1) / 2

    assert float(weighted_auc(w * p, w * (1 - p), ends)) == pytest.approx(expected)


def test_each_feature_is_tilted_both_ways_and_a_two_valued_one_oversampled() -> None:
    rng = np.random.default_rng(2)
    columns = {"usage": rng.lognormal(size=400), "weekend": (rng.random(400) < 0.3) * 1.0}
    names = [name for name, _ in reweightings(columns)]
    assert "usage +1.5 SD" in names and "usage -1.5 SD" in names
    assert "usage lowest quarter x4" in names
    assert names.count("weekend=1 x4") == 1 and names.count("weekend=0 x4") == 1
    weights = dict(reweightings(columns))["usage +1.0 SD"]
    # An exponential tilt of normal scores moves the weighted normal score by about 1 SD.
    from core.estimate_shift import normal_scores

    scores = normal_scores(columns["usage"])
    assert np.average(scores, weights=weights) == pytest.approx(1.0, abs=0.1)


def _population(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    truth = 1 / (1 + np.exp(-(-1.0 + 1.2 * x1 - 0.8 * x2)))
    labels = (rng.random(rows) < truth).astype(np.int64)
    return np.column_stack([x1, x2]), truth, labels


def test_calibrated_probabilities_carry_no_calibration_term() -> None:
    features, truth, labels = _population(20_000, seed=3)

    measured = shift_calibration(labels, truth, {"x1": features[:, 0], "x2": features[:, 1]})

    assert measured.reweightings == 16 and measured.rows == 20_000
    assert measured.calibration_sd < 0.006  # label noise only: the excess averages to ~0
    assert measured.term.per_distance < 0.01
    assert 0 < measured.largest_distance < 2


def test_a_model_wrong_in_one_region_carries_the_bias_a_shift_there_shows() -> None:
    # The model is right for x1 < 0.5 and far too flat above it: a window that weighs
    # heavy x1 more is estimated wrongly, and the term says by about how much.
    features, truth, labels = _population(20_000, seed=4)
    x1 = features[:, 0]
    logit = np.log(truth / (1 - truth))
    model = np.where(x1 > 0.5, 1 / (1 + np.exp(-(0.3 * logit))), truth)

    measured = shift_calibration(labels, model, {"x1": x1, "x2": features[:, 1]})
    calibrated = shift_calibration(labels, truth, {"x1": x1, "x2": features[:, 1]})

    assert measured.calibration_sd > 0.02
    assert measured.calibration_sd > 4 * calibrated.calibration_sd
    assert measured.largest_gap > measured.calibration_sd
    assert measured.term.per_distance > 0.02
    assert measured.term.per_distance > 4 * calibrated.term.per_distance


def test_a_windows_term_grows_with_its_distance_from_the_held_out_probabilities() -> None:
    held_out = np.random.default_rng(5).beta(1.2, 4.0, size=5000)
    mean, sd = logit_moments(held_out)
    term = CalibrationTerm(calibration_sd=0.01, per_distance=0.02, logit_mean=mean, logit_sd=sd)
    assert term.distance(held_out) == pytest.approx(0.0, abs=1e-12)
    assert term.for_window(held_out) == pytest.approx(0.0, abs=1e-12)
    logits = np.log(held_out / (1 - held_out))
    moved = 1 / (1 + np.exp(-(logits + 2 * sd)))  # the mean moved by two held-out SDs
    assert term.distance(moved) == pytest.approx(2.0)
    assert term.for_window(np.append(moved, np.nan)) == pytest.approx(0.04)
    spread = 1 / (1 + np.exp(-(mean + (logits - mean) * np.e)))  # spread x e: log ratio 1
    assert term.distance(spread) == pytest.approx(1.0, abs=0.02)  # the clip at 1e-6 aside
    assert CalibrationTerm().for_window(moved) == 0.0  # a version without the term
    metrics = {"test_estimate_bias_per_distance": 0.02, "test_estimate_logit_sd": sd}
    assert CalibrationTerm.from_metrics(metrics) == CalibrationTerm(per_distance=0.02, logit_sd=sd)


def test_training_ranges_round_trip_through_run_metrics_and_shares_count_both_sides() -> None:
    from core.estimate_support import out_of_range_shares, range_metrics, ranges_from_metrics

    metrics = range_metrics({"a": np.array([1.0, np.nan, 3.0]), "b": np.array([np.nan])})
    assert metrics == {"train_min.a": 1.0, "train_max.a": 3.0}
    ranges = ranges_from_metrics({**metrics, "test_roc_auc": 0.8, "train_min.c": 0.0})
    assert ranges == {"a": (1.0, 3.0)}  # c has no maximum
    window = {"a": np.array([0.0, 1.0, 2.0, 3.0, 4.0, np.nan]), "z": np.zeros(3)}
    assert out_of_range_shares(window, ranges) == {"a": pytest.approx(2 / 5)}
