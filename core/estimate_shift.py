"""How far a label-free performance estimate strays when the population shifts.

Confidence-based performance estimation (:mod:`monitoring.estimation`) trusts the
model's calibrated probabilities: where they are right, the realized ROC AUC of a window
differs from the estimate by label noise only. Calibration is checked on the training
distribution, though, and a shifted window weighs the regions where the model is a
little off more than the held-out rows did: the estimate then carries a bias that label
noise does not explain.

This module measures that bias on held-out labelled rows (the training run's test window,
which neither the model nor its calibrator saw), and training logs it with the model
version (:data:`RUN_METRICS`), so that every estimate of that version widens its ROC AUC
interval by it.

How: the held-out rows are re-weighted as a shifted window would weigh them (for each model
feature, exponential tilts of its normal scores that move it by -1.5 to +1.5 standard
deviations, and its lowest or highest quarter over-sampled four times; a two-valued column
has either value over-sampled). For each re-weighting ``k`` the estimate ``E_k`` (the
weighted expected ROC curve of the probabilities) is compared with the realized ROC AUC
``R_k`` (the weighted ROC curve of the labels), and their difference ``d_k`` with the
unweighted one ``d_0`` (the calibrator was fitted to the unweighted distribution, and the
two share the held-out labels, so most of their noise cancels). What is left is the bias
sought plus the labels' noise, whose variance ``v_k`` is measured by drawing labels from
the probabilities; ``e_k = (d_k - d_0) ** 2 - v_k`` is the bias's share.

The bias grows with how far a window's probabilities moved: a window like the held-out
rows has none. So the term is a rate: ``e_k`` against the distance ``D_k`` of the
re-weighted probabilities from the unweighted ones (their logits' mean moved in held-out
standard deviations, and the log of their spread's ratio), fitted through the origin:
``per_distance ** 2 = sum(e_k D_k^2) / sum(D_k^4)``. A window's term is
``per_distance * D(window)``, with ``D`` measured from the same two logit moments of the
held-out probabilities, so a file of probabilities alone is enough. ``calibration_sd``
(the root mean of ``e_k``) summarises the re-weightings in one figure.

Re-weighting reaches only the regions the held-out rows cover; a window pushed further
(beyond the training range) is judged by the same rate, extrapolated: the data-quality
check's out-of-range share says when that happens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TILTS: tuple[float, ...] = (-1.5, -1.0, -0.5, 0.5, 1.0, 1.5)
OVERSAMPLE = 4.0
_SIMULATIONS = 100
_CLIP = 1e-6

# Run metrics training logs (``test_`` prefixed) and estimates read back.
RUN_METRICS: dict[str, str] = {
    "calibration_sd": "test_estimate_calibration_sd",
    "per_distance": "test_estimate_bias_per_distance",
    "logit_mean": "test_estimate_logit_mean",
    "logit_sd": "test_estimate_logit_sd",
}


@dataclass(frozen=True)
class CalibrationTerm:
    """What a model version carries for its estimates' intervals (all 0: label noise only).

    Attributes:
        calibration_sd: The bias's standard deviation over the re-weightings (a summary).
        per_distance: The bias's standard deviation per unit of distance ``D``.
        logit_mean: Mean logit of the held-out probabilities.
        logit_sd: Standard deviation of those logits.
    """

    calibration_sd: float = 0.0
    per_distance: float = 0.0
    logit_mean: float = 0.0
    logit_sd: float = 0.0

    @classmethod
    def from_metrics(cls, metrics: dict[str, float]) -> CalibrationTerm:
        """The term from a training run's metrics (missing or not finite: 0)."""
        values = {}
        for field, key in RUN_METRICS.items():
            value = metrics.get(key)
            values[field] = float(value) if value is not None and np.isfinite(value) else 0.0
        return cls(**values)

    def distance(self, probabilities: np.ndarray) -> float:
        """How far a window's probabilities lie from the held-out ones (0 when unknown)."""
        values = np.asarray(probabilities, dtype=np.float64)
        values = values[np.isfinite(values)]
        if self.logit_sd <= 0 or len(values) < 2:
            return 0.0
        mean, sd = logit_moments(values)
        return float(np.hypot((mean - self.logit_mean) / self.logit_sd, np.log(sd / self.logit_sd)))

    def for_window(self, probabilities: np.ndarray) -> float:
        """The bias's standard deviation expected for this window's ROC AUC estimate."""
        return self.per_distance * self.distance(probabilities)


@dataclass(frozen=True)
class ShiftCalibration:
    """The estimate's bias under re-weighted held-out rows.

    Attributes:
        term: What the model version carries (see :class:`CalibrationTerm`).
        reweightings: Re-weightings measured.
        largest_gap: The largest |estimated - realized| ROC AUC over them (noise included).
        largest_distance: The largest distance ``D`` a re-weighting reached.
        rows: Held-out rows used.
    """

    term: CalibrationTerm
    reweightings: int
    largest_gap: float
    largest_distance: float
    rows: int

    @property
    def calibration_sd(self) -> float:
        """The bias's standard deviation over the re-weightings."""
        return self.term.calibration_sd

    def metrics(self) -> dict[str, float]:
        """The term as run metrics, without the ``test_`` prefix (training adds it)."""
        return {
            key.removeprefix("test_"): float(getattr(self.term, field))
            for field, key in RUN_METRICS.items()
        }


def logit_moments(
    probabilities: np.ndarray, weights: np.ndarray | None = None
) -> tuple[float, float]:
    """Mean and standard deviation of the probabilities' logits (optionally weighted)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _CLIP, 1 - _CLIP)
    logits = np.log(p / (1 - p))
    mean = float(np.average(logits, weights=weights))
    sd = float(np.sqrt(np.average((logits - mean) ** 2, weights=weights)))
    return mean, max(sd, _CLIP)


def _group_ends(ordered: np.ndarray) -> np.ndarray:
    return np.append(np.flatnonzero(np.diff(ordered)), len(ordered) - 1)


def weighted_auc(positive: np.ndarray, negative: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Trapezoid ROC AUC from weights of positives and negatives in descending score order.

    Args:
        positive: Positive weight of each row (last axis: rows sorted by descending score).
        negative: Negative weight of each row, same shape.
        ends: Index of the last row of each group of equal scores.

    Returns:
        The area (one per leading index when 2-D); NaN where a class has no weight.
    """
    tp = np.cumsum(positive, axis=-1)[..., ends]
    fp = np.cumsum(negative, axis=-1)[..., ends]
    total_p, total_n = tp[..., -1:], fp[..., -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.concatenate([np.zeros_like(total_p), tp / total_p], axis=-1)
        fpr = np.concatenate([np.zeros_like(total_n), fp / total_n], axis=-1)
    area: np.ndarray = np.trapezoid(tpr, fpr, axis=-1)
    return area


def normal_scores(values: np.ndarray) -> np.ndarray:
    """Normal quantiles of the values' average ranks (ties share a score)."""
    from scipy.special import ndtri
    from scipy.stats import rankdata

    ranks = rankdata(values, method="average")
    return np.asarray(ndtri((ranks - 0.5) / len(values)), dtype=np.float64)


def reweightings(columns: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """Row weights that shift each column as a moved feature or over-sampled group would."""
    result: list[tuple[str, np.ndarray]] = []
    for name, raw in columns.items():
        values = np.asarray(raw, dtype=np.float64)
        known = np.isfinite(values)
        if known.sum() < 10:
            continue
        distinct = np.unique(values[known])
        if len(distinct) < 2:
            continue
        if len(distinct) == 2:
            for value in distinct:
                result.append((f"{name}={value:g} x{OVERSAMPLE:g}", _oversampled(values == value)))
            continue
        scores = np.zeros(len(values))
        scores[known] = normal_scores(values[known])
        for tilt in TILTS:
            result.append((f"{name} {tilt:+.1f} SD", np.exp(tilt * scores)))
        low, high = np.nanquantile(values, [0.25, 0.75])
        result.append((f"{name} lowest quarter x{OVERSAMPLE:g}", _oversampled(values <= low)))
        result.append((f"{name} highest quarter x{OVERSAMPLE:g}", _oversampled(values >= high)))
    return result


def _oversampled(mask: np.ndarray) -> np.ndarray:
    return np.where(mask, OVERSAMPLE, 1.0)


def shift_calibration(
    labels: np.ndarray,
    probabilities: np.ndarray,
    columns: dict[str, np.ndarray],
    *,
    seed: int = 0,
    simulations: int = _SIMULATIONS,
) -> ShiftCalibration:
    """Measure the estimate's bias on held-out rows re-weighted as shifted windows would be.

    Args:
        labels: Held-out labels (0/1).
        probabilities: The calibrated model's probabilities of those rows.
        columns: The model's feature values of those rows, by name.
        seed: Seed of the label draws measuring the noise.
        simulations: Label draws per re-weighting.
    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-p, kind="stable")
    y, p = y[order], p[order]
    ends = _group_ends(p)
    mean_0, sd_0 = logit_moments(p)
    drawn = (np.random.default_rng(seed).random((simulations, len(p))) < p).astype(np.float64)
    base_gap = float(weighted_auc(p, 1 - p, ends) - weighted_auc(y, 1 - y, ends))
    base_noise = weighted_auc(drawn, 1 - drawn, ends)
    gaps, excess, distances = [], [], []
    for _name, raw_weights in reweightings({k: np.asarray(v)[order] for k, v in columns.items()}):
        weights = raw_weights / raw_weights.mean()
        estimated = weighted_auc(weights * p, weights * (1 - p), ends)
        realized = weighted_auc(weights * y, weights * (1 - y), ends)
        # The re-weighted gap less the unweighted one: both share the held-out labels, so
        # most of their noise cancels (the calibrator is fitted to the unweighted rows).
        noise = weighted_auc(drawn * weights, (1 - drawn) * weights, ends) - base_noise
        noise = noise[np.isfinite(noise)]
        if not (np.isfinite(estimated) and np.isfinite(realized)) or len(noise) < 2:
            continue
        gap = float(estimated - realized)
        gaps.append(abs(gap))
        excess.append((gap - base_gap) ** 2 - float(np.var(noise, ddof=1)))
        mean, sd = logit_moments(p, weights)
        distances.append(float(np.hypot((mean - mean_0) / sd_0, np.log(sd / sd_0))))
    e, d = np.array(excess), np.array(distances)
    sd_all = float(np.sqrt(max(0.0, float(e.mean())))) if len(e) else 0.0
    fourth = float(np.sum(d**4))
    rate = float(np.sqrt(max(0.0, float(np.sum(e * d**2)) / fourth))) if fourth > 0 else 0.0
    return ShiftCalibration(
        term=CalibrationTerm(
            calibration_sd=sd_all, per_distance=rate, logit_mean=mean_0, logit_sd=sd_0
        ),
        reweightings=len(gaps),
        largest_gap=max(gaps, default=0.0),
        largest_distance=float(d.max()) if len(d) else 0.0,
        rows=len(p),
    )
