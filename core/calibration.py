"""Calibrated churn probabilities: fitting the calibrator, reading it back, measuring it.

Training fits the model on its training window, then a calibrator on the validation
window, which the model never saw: scikit-learn's ``CalibratedClassifierCV`` around the
frozen model (``FrozenEstimator``), the method (Platt's ``sigmoid`` or ``isotonic``)
chosen by cross-validated log loss on that window; when neither beats the model's own
probabilities there, the model stays as it is (``none``: a log-loss booster often is
calibrated already). The registered artifact is that one
estimator, so every reader (serving, batch scoring, drift, MLflow's own pyfunc loader) gets
the calibrated probability from ``predict_proba``.

The faster engines and the explainer read the trees of the model inside
(:func:`split_calibrated`) and apply the same calibrator to the trees' raw output
(:func:`probability_from_raw`): the calibrator maps the model's ``decision_function``
(log-odds) to the probability, exactly as ``predict_proba`` does.

Reliability (predicted against observed rates per bin) and the expected calibration error
are computed here for training (test window) and evaluation (served predictions) alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from core.errors import ModelUnsupported

CalibrationMethod = Literal["none", "sigmoid", "isotonic"]
METHODS: tuple[CalibrationMethod, ...] = ("sigmoid", "isotonic")
RELIABILITY_BINS = 10
_FOLDS = 5
# Relative log-loss improvement isotonic needs over sigmoid to be chosen.
ISOTONIC_MARGIN = 0.005
# Relative log-loss improvement a calibrator needs over the model's own probabilities: a
# log-loss booster is often calibrated already, and a calibrator fitted on a few thousand
# rows would then only add its own error.
CALIBRATOR_MARGIN = 0.002


@dataclass
class ReliabilityBin:
    """One bin of the reliability diagram (predicted probability vs observed rate)."""

    low: float
    high: float
    count: int
    mean_predicted: float | None
    observed_rate: float | None


def reliability(
    labels: np.ndarray, scores: np.ndarray, bins: int = RELIABILITY_BINS
) -> tuple[list[ReliabilityBin], float]:
    """Equal-width reliability bins and the expected calibration error (ECE).

    ECE is the row-weighted mean of ``|mean predicted - observed rate|`` over the bins.
    """
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, bins - 1)
    result, ece = [], 0.0
    for position in range(bins):
        chosen = index == position
        count = int(chosen.sum())
        mean_predicted = float(scores[chosen].mean()) if count else None
        observed = float(labels[chosen].mean()) if count else None
        if count:
            ece += count / len(scores) * abs(float(mean_predicted or 0) - float(observed or 0))
        result.append(
            ReliabilityBin(
                low=float(edges[position]),
                high=float(edges[position + 1]),
                count=count,
                mean_predicted=mean_predicted,
                observed_rate=observed,
            )
        )
    return result, ece


@dataclass(frozen=True)
class CalibrationChoice:
    """Which calibrator was chosen and the cross-validated log loss of each candidate."""

    method: CalibrationMethod
    log_loss: dict[str, float]
    rows: int


def _out_of_fold_log_loss(
    model: Any, features: Any, labels: np.ndarray, method: str, seed: int
) -> float:
    """Log loss of the calibrator fitted on 4/5 of the rows and scored on the fifth, per fold."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    predicted = cross_val_predict(
        CalibratedClassifierCV(FrozenEstimator(model), method=method),
        features,
        labels,
        cv=StratifiedKFold(n_splits=_FOLDS, shuffle=True, random_state=seed),
        method="predict_proba",
    )[:, 1]
    return float(log_loss(labels, np.clip(predicted, 1e-15, 1 - 1e-15), labels=[0, 1]))


def calibrate(
    model: Any, features: Any, labels: Any, *, seed: int
) -> tuple[Any, CalibrationChoice]:
    """Wrap a fitted binary classifier with the calibrator that suits held-out rows best.

    Args:
        model: The fitted classifier (never refitted: it is frozen).
        features: Held-out rows the model was not fitted on (the validation window).
        labels: Their labels.
        seed: Seed of the folds choosing the method.

    Returns:
        The calibrated estimator (``CalibratedClassifierCV``), or the model itself for
        ``none``, and the choice made.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator
    from sklearn.metrics import log_loss

    y = np.asarray(labels, dtype=np.int64)
    losses: dict[str, float] = {
        method: _out_of_fold_log_loss(model, features, y, method, seed) for method in METHODS
    }
    # Sigmoid keeps the ranking exactly (ROC AUC unchanged); isotonic's steps tie scores,
    # so it is chosen only when it fits the held-out rows clearly better.
    method: CalibrationMethod = (
        "isotonic" if losses["isotonic"] < losses["sigmoid"] * (1 - ISOTONIC_MARGIN) else "sigmoid"
    )
    own = np.clip(np.asarray(model.predict_proba(features))[:, 1], 1e-15, 1 - 1e-15)
    losses["none"] = float(log_loss(y, own, labels=[0, 1]))
    if not losses[method] < losses["none"] * (1 - CALIBRATOR_MARGIN):
        return model, CalibrationChoice(method="none", log_loss=losses, rows=len(y))
    calibrated = CalibratedClassifierCV(FrozenEstimator(model), method=method)
    calibrated.fit(features, y)
    return calibrated, CalibrationChoice(method=method, log_loss=losses, rows=len(y))


def split_calibrated(model: Any) -> tuple[Any, Any | None]:
    """The model inside a calibrated estimator and its calibrator (None: not calibrated).

    Raises:
        ModelUnsupported: A calibrated estimator of another shape (several calibrated
            copies, more than one class calibrated, an unfrozen model).
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    if not isinstance(model, CalibratedClassifierCV):
        return model, None
    fitted = getattr(model, "calibrated_classifiers_", None) or []
    if len(fitted) != 1 or len(fitted[0].calibrators) != 1:
        raise ModelUnsupported(
            "calibrated estimator with several calibrated copies or classes: only one "
            "frozen binary model with one calibrator is read"
        )
    inner = fitted[0].estimator
    if not isinstance(inner, FrozenEstimator):
        raise ModelUnsupported("calibrated estimator whose model is not a FrozenEstimator")
    return inner.estimator, fitted[0].calibrators[0]


def probability_from_raw(raw: np.ndarray, calibrator: Any | None) -> np.ndarray:
    """Churn probability from the trees' raw output (log-odds), calibrated when given."""
    if calibrator is None:
        from scipy.special import expit

        return np.asarray(expit(raw), dtype=np.float64)
    return np.asarray(calibrator.predict(raw), dtype=np.float64)
