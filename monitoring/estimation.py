"""Performance estimated without labels (confidence-based performance estimation, CBPE).

When the model's probabilities are calibrated, each prediction ``p`` is the chance its
label is 1. Sorting the window by ``p`` (once) gives, at every cut, the *expected* true
and false positives: ``TP(k) = sum of the k highest p``, ``FP(k) = k - TP(k)``, and
``P = sum p`` positives, ``N = n - P`` negatives are expected in all. The expected ROC and
precision-recall curves follow, and their areas are the estimated ROC AUC and PR AUC
(average precision); the expected Brier score is ``mean(p (1 - p))`` and the expected
churn rate ``mean(p)``. This is how NannyML's CBPE estimates them.

Intervals: the realized metric differs from the estimate because labels are random even
when the probabilities are right. Labels are drawn from the probabilities (``y ~
Bernoulli(p)``) many times and the realized metric computed for each draw; the interval is
the estimate plus or minus the normal quantile times the spread of those draws. Above
``sample_rows`` rows the spread is measured on a random sample and scaled by
``sqrt(sample / rows)`` (the metrics' spread shrinks as one over the square root of the
window), so a million predictions cost one sort, not a thousand.

Labels are not the only source of error: the probabilities are calibrated on the training
distribution, and a shifted window weighs the regions where the model is a little off more
than the held-out rows did. Training measures that bias on its held-out rows re-weighted as
shifted windows would weigh them, and the model version carries it
(:class:`core.estimate_shift.CalibrationTerm`); the caller passes this window's share of it
as ``calibration_sd``, added to the ROC AUC's label-noise spread (``sqrt(noise ** 2 +
calibration ** 2)``), so the interval covers both. It does not shrink with the window.

Below ``min_rows`` rows nothing is claimed: the status is ``insufficient_data``. Where
many of the window's rows lie outside the range a model feature had in training, the model
extrapolates and no label-free estimator knows how well: :func:`limit_to_support` then
claims nothing either, with the status ``out_of_support`` and the features' shares
(:mod:`core.estimate_support`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

from core.errors import InputError

Status = Literal["ok", "insufficient_data", "out_of_support"]
METRICS: tuple[str, ...] = ("roc_auc", "pr_auc", "brier", "churn_rate")


@dataclass(frozen=True)
class Interval:
    """An estimated figure and the interval the realized one is expected in."""

    estimate: float
    low: float
    high: float

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies inside the interval (bounds included)."""
        return self.low <= value <= self.high


@dataclass(frozen=True)
class PerformanceEstimate:
    """What labels would show for a window of predictions, estimated without them.

    Attributes:
        rows: Predictions the estimate is built on.
        status: ``ok``; ``insufficient_data`` below ``min_rows``, or ``out_of_support``
            when a feature's out-of-range share exceeds the limit (no figure claimed).
        roc_auc: Estimated ROC AUC and its interval (None when not claimed).
        pr_auc: Estimated PR AUC (average precision).
        brier: Estimated Brier score.
        churn_rate: Estimated share of churners.
        confidence: Coverage the intervals aim at.
        min_rows: The fewest rows a figure is claimed for.
        excluded_rows: Predictions without a probability, left out (and counted here).
        note: Why no figure is claimed, or what was left out.
        calibration_sd: The model version's calibration term for this window, added to
            the ROC AUC's spread (0: label noise only).
        roc_auc_noise_sd: The ROC AUC's spread from label noise alone.
        out_of_range: Per model feature, the share of the window's rows outside its
            training range (None: support not checked, the window has no feature column).
        max_out_of_range: The largest share a figure is claimed for (None: not checked).
    """

    rows: int
    status: Status
    roc_auc: Interval | None
    pr_auc: Interval | None
    brier: Interval | None
    churn_rate: Interval | None
    confidence: float
    min_rows: int
    excluded_rows: int = 0
    note: str | None = None
    calibration_sd: float = 0.0
    roc_auc_noise_sd: float | None = None
    out_of_range: dict[str, float] | None = None
    max_out_of_range: float | None = None

    @property
    def unsupported(self) -> list[str]:
        """The features whose out-of-range share exceeds the limit, worst first."""
        if self.out_of_range is None or self.max_out_of_range is None:
            return []
        return sorted(
            (name for name, share in self.out_of_range.items() if share > self.max_out_of_range),
            key=lambda name: -(self.out_of_range or {})[name],
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``estimate.json``)."""
        return asdict(self)

    def figure(self, metric: str) -> Interval | None:
        """One metric's interval by name (``roc_auc``, ``pr_auc``, ``brier``, ``churn_rate``)."""
        if metric not in METRICS:
            raise KeyError(metric)
        value: Interval | None = getattr(self, metric)
        return value


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1 in ascending order, ties sharing their average rank."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    ends = group_ends(ordered)
    starts = np.concatenate([[0], ends[:-1] + 1])
    shared = (starts + ends) / 2 + 1  # the average of positions start..end, from 1
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(shared, ends - starts + 1)
    return ranks


def estimated_harm(
    estimate: PerformanceEstimate, reference_auc: float | None, *, margin: float
) -> str | None:
    """Why an estimate shows harm, or None.

    Harm: the estimated ROC AUC is more than ``margin`` below the champion's reference (its
    test ROC AUC at training) and the estimate's whole interval lies below the reference,
    so label noise alone would rarely explain it. No figure (too few predictions) or no
    reference is never harm.
    """
    auc = estimate.roc_auc
    if estimate.status != "ok" or auc is None or reference_auc is None:
        return None
    if auc.estimate < reference_auc - margin and auc.high < reference_auc:
        return (
            f"estimated ROC AUC {auc.estimate:.4f} (interval {auc.low:.4f} - {auc.high:.4f}, "
            f"{estimate.rows} predictions) is more than {margin:g} below the champion's "
            f"{reference_auc:.4f}"
        )
    return None


def limit_to_support(
    estimate: PerformanceEstimate, shares: dict[str, float] | None, *, limit: float
) -> PerformanceEstimate:
    """The estimate with its support checked: ``out_of_support`` and no figure when a
    feature's share of rows outside its training range exceeds ``limit``.

    ``shares`` None (the window has no feature column, e.g. a file of probabilities
    alone) leaves the estimate as it is, its support unknown (``out_of_range`` None). An
    estimate without a figure already (``insufficient_data``) keeps its status.
    """
    if shares is None:
        return estimate
    checked = replace(estimate, out_of_range=dict(shares), max_out_of_range=limit)
    outside = checked.unsupported
    if estimate.status != "ok" or not outside:
        return checked
    listed = ", ".join(f"{name} {shares[name]:.1%}" for name in outside)
    return replace(
        checked,
        status="out_of_support",
        roc_auc=None,
        pr_auc=None,
        brier=None,
        churn_rate=None,
        note=f"rows outside the training range (above the limit {limit:.1%}): {listed}; the "
        "model extrapolates there and no figure is claimed",
    )


def group_ends(ordered: np.ndarray) -> np.ndarray:
    """Index of the last element of each run of equal values of a sorted array."""
    return np.append(np.flatnonzero(np.diff(ordered)), len(ordered) - 1).astype(np.int64)


def expected_curve_counts(
    descending: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Expected true and false positives at every distinct cut of descending probabilities.

    Args:
        descending: Calibrated probabilities sorted from highest to lowest.

    Returns:
        (TP, FP) after each group of equal probabilities, the last being (P, N).
    """
    true_positives = np.cumsum(descending)
    index = group_ends(descending)
    tp = true_positives[index]
    fp = (index + 1) - tp
    return tp, fp


def area_under_roc(tp: np.ndarray, fp: np.ndarray) -> float:
    """Trapezoid area under the ROC curve through (0, 0) and the given counts."""
    positives, negatives = float(tp[-1]), float(fp[-1])
    if positives <= 0 or negatives <= 0:
        return float("nan")
    tpr = np.concatenate([[0.0], tp / positives])
    fpr = np.concatenate([[0.0], fp / negatives])
    return float(np.trapezoid(tpr, fpr))


def average_precision(tp: np.ndarray, fp: np.ndarray) -> float:
    """Average precision (the step-wise PR AUC sklearn computes) from cumulative counts."""
    positives = float(tp[-1])
    if positives <= 0:
        return float("nan")
    precision = tp / np.maximum(tp + fp, 1e-300)
    recall_steps = np.diff(np.concatenate([[0.0], tp])) / positives
    return float(np.sum(recall_steps * precision))


def _check_probabilities(values: np.ndarray) -> tuple[np.ndarray, int]:
    missing = np.isnan(values)
    kept = values[~missing]
    outside = int(((kept < 0) | (kept > 1)).sum())
    if outside:
        raise InputError(
            f"{outside} churn probabilities lie outside [0, 1]; they are not probabilities"
        )
    return kept, int(missing.sum())


def _simulated_spread(
    probabilities: np.ndarray, *, simulations: int, sample_rows: int, seed: int
) -> dict[str, float]:
    """Standard deviation of each realized metric over labels drawn from the probabilities."""
    rng = np.random.default_rng(seed)
    rows = len(probabilities)
    sample = (
        probabilities
        if rows <= sample_rows
        else probabilities[rng.choice(rows, size=sample_rows, replace=False)]
    )
    scale = float(np.sqrt(len(sample) / rows))
    order = np.argsort(-sample, kind="stable")
    descending = sample[order]
    ranks = average_ranks(sample)
    ends = group_ends(descending)
    labels = rng.random((simulations, len(sample))) < sample  # one draw per row
    positives = labels.sum(axis=1).astype(np.float64)
    negatives = len(sample) - positives
    valid = (positives > 0) & (negatives > 0)
    rank_sums = labels.astype(np.float64) @ ranks
    auc = (rank_sums - positives * (positives + 1) / 2) / np.maximum(positives * negatives, 1)
    hits = np.cumsum(labels[:, order], axis=1, dtype=np.float64)[:, ends]
    precision = hits / (ends + 1)
    recall_steps = np.diff(np.concatenate([np.zeros((simulations, 1)), hits], axis=1), axis=1)
    ap = (recall_steps * precision).sum(axis=1) / np.maximum(positives, 1)
    brier = ((labels - sample) ** 2).mean(axis=1)
    rate = positives / len(sample)

    def spread(values: np.ndarray) -> float:
        chosen = values[valid]
        return float(np.std(chosen, ddof=1) * scale) if len(chosen) > 1 else float("nan")

    return {
        "roc_auc": spread(auc),
        "pr_auc": spread(ap),
        "brier": float(np.std(brier, ddof=1) * scale),
        "churn_rate": float(np.std(rate, ddof=1) * scale),
    }


def estimate_performance(
    probabilities: Any,
    *,
    min_rows: int,
    confidence: float = 0.95,
    simulations: int = 200,
    sample_rows: int = 5_000,
    seed: int = 0,
    calibration_sd: float = 0.0,
) -> PerformanceEstimate:
    """Estimate ROC AUC, PR AUC, Brier score and churn rate of a window without labels.

    Args:
        probabilities: Calibrated churn probabilities of the window (NaN: no prediction,
            left out and counted).
        min_rows: Below this many predictions the status is ``insufficient_data``.
        confidence: Coverage of the intervals (0.95: 95 %).
        simulations: Label draws measuring each metric's spread.
        sample_rows: Rows the draws are made on at most (see the module docstring).
        seed: Seed of the draws (the same window gives the same intervals).
        calibration_sd: The model version's calibration term for this window (see the
            module docstring), added to the ROC AUC's label-noise spread.

    Raises:
        InputError: A probability outside [0, 1], or a negative calibration term.
    """
    if not calibration_sd >= 0:
        raise InputError(f"calibration_sd must be a number >= 0, not {calibration_sd!r}")
    values, excluded = _check_probabilities(np.asarray(probabilities, dtype=np.float64).ravel())
    rows = len(values)
    note = f"{excluded} prediction(s) without a probability left out" if excluded else None
    empty = PerformanceEstimate(
        rows=rows,
        status="insufficient_data",
        roc_auc=None,
        pr_auc=None,
        brier=None,
        churn_rate=None,
        confidence=confidence,
        min_rows=min_rows,
        excluded_rows=excluded,
        note="; ".join(
            filter(None, [f"{rows} predictions, fewer than the minimum {min_rows}", note])
        ),
        calibration_sd=calibration_sd,
    )
    if rows < max(min_rows, 2):
        return empty
    descending = np.sort(values)[::-1]
    tp, fp = expected_curve_counts(descending)
    figures = {
        "roc_auc": area_under_roc(tp, fp),
        "pr_auc": average_precision(tp, fp),
        "brier": float(np.mean(values * (1 - values))),
        "churn_rate": float(np.mean(values)),
    }
    spread = _simulated_spread(values, simulations=simulations, sample_rows=sample_rows, seed=seed)
    noise_sd = spread["roc_auc"]
    spread["roc_auc"] = float(np.hypot(noise_sd, calibration_sd))
    z = NormalDist().inv_cdf(0.5 + confidence / 2)

    def interval(name: str, *, upper: float = 1.0) -> Interval | None:
        estimate, sd = figures[name], spread[name]
        if not np.isfinite(estimate) or not np.isfinite(sd):
            return None
        return Interval(
            estimate=estimate,
            low=max(0.0, estimate - z * sd),
            high=min(upper, estimate + z * sd),
        )

    return PerformanceEstimate(
        rows=rows,
        status="ok",
        roc_auc=interval("roc_auc"),
        pr_auc=interval("pr_auc"),
        brier=interval("brier"),
        churn_rate=interval("churn_rate"),
        confidence=confidence,
        min_rows=min_rows,
        excluded_rows=excluded,
        note=note,
        calibration_sd=calibration_sd,
        roc_auc_noise_sd=noise_sd if np.isfinite(noise_sd) else None,
    )
