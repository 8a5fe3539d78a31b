"""Multivariate drift: a domain classifier that tells reference rows from current rows.

Univariate tests miss a change in how features go together (the same marginals, another
joint distribution) and judge each feature alone. A classifier trained to say which window
a row comes from sees all of them at once: when it cannot tell (cross-validated AUROC about
0.5) the windows look alike; the further above 0.5, the more they differ.

- Model: a small ``HistGradientBoostingClassifier`` (fixed seed; missing values and
  categories handled natively), ``folds``-fold stratified cross-validation. Every row is
  scored by a model that did not see it (out-of-fold), and the AUROC of those scores gets a
  95% DeLong interval.
- Which features separate the windows: each one's values are permuted inside each held-out
  fold; the drop of that fold's AUROC, averaged over the folds, is the feature's
  importance (a feature the classifier does not use drops it by about 0).
- Severity (settings ``multivariate_auc_minor`` / ``_major``): the AUROC reaches the
  threshold and its interval lies above 0.5.

The rows come from the offline-compute backend's seeded sample of each window (at most
``multivariate_max_rows`` per side), so the cost does not grow with the windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata

from monitoring.settings import MonitoringSettings
from monitoring.statistics import Severity

Status = Literal["ok", "insufficient_data", "not_run"]
INTERVAL = 0.95
METHOD = "out-of-fold AUROC of a HistGradientBoostingClassifier, 95% DeLong interval"


@dataclass(frozen=True)
class Separation:
    """How much one feature helps the classifier tell the windows apart."""

    feature: str
    importance: float  # mean drop of the held-out AUROC when the feature is permuted


@dataclass(frozen=True)
class MultivariateDrift:
    """The domain classifier's verdict on two windows."""

    status: Status
    severity: Severity = "none"
    auroc: float | None = None
    low: float | None = None
    high: float | None = None
    fold_auroc: tuple[float, ...] = ()
    reference_rows: int = 0
    current_rows: int = 0
    features: tuple[str, ...] = ()
    separation: tuple[Separation, ...] = ()  # most separating first
    top_features: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    note: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def drift_detected(self) -> bool:
        """Whether the classifier separates the windows enough for a finding."""
        return self.severity != "none"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``summary.multivariate`` of drift.json)."""
        return {
            "status": self.status,
            "severity": self.severity,
            "drift_detected": self.drift_detected,
            "auroc": {"estimate": self.auroc, "low": self.low, "high": self.high},
            "method": METHOD,
            "fold_auroc": list(self.fold_auroc),
            "rows": {"reference": self.reference_rows, "current": self.current_rows},
            "features": list(self.features),
            "top_features": list(self.top_features),
            "separation": [asdict(item) for item in self.separation],
            "reasons": list(self.reasons),
            "note": self.note,
            "thresholds": self.thresholds,
        }


def not_run(note: str) -> MultivariateDrift:
    """A verdict that was not reached, with why."""
    return MultivariateDrift(status="not_run", note=note)


def delong_interval(
    labels: np.ndarray, scores: np.ndarray, *, level: float = INTERVAL
) -> tuple[float, float, float]:
    """ROC AUC and its two-sided ``level`` interval from DeLong's variance (ties as halves).

    DeLong, DeLong and Clarke-Pearson (1988), with the midrank formulation of Sun and Xu
    (2014): O(n log n), no resampling.

    Returns:
        ``(auc, low, high)``, the bounds clipped to [0, 1].
    """
    positive, negative = scores[labels == 1], scores[labels == 0]
    m, n = positive.size, negative.size
    pooled = rankdata(np.concatenate((positive, negative)))
    # Share of negatives below each positive, and of positives above each negative.
    v10 = (pooled[:m] - rankdata(positive)) / n
    v01 = 1.0 - (pooled[m:] - rankdata(negative)) / m
    auc = float(v10.mean())
    variance = v10.var(ddof=1) / m + v01.var(ddof=1) / n
    half = float(norm.ppf(0.5 + level / 2) * np.sqrt(max(variance, 0.0)))
    return auc, max(auc - half, 0.0), min(auc + half, 1.0)


def _model_inputs(frame: pd.DataFrame) -> pd.DataFrame:
    """Numeric columns as float64 (missing, NaN or infinite: NaN); text and booleans as
    categories."""
    columns: dict[str, Any] = {}
    for name in frame.columns:
        series = frame[name]
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            values = series.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
            values[~np.isfinite(values)] = np.nan  # infinities are missing, as in the tests
            columns[name] = values
        else:
            text = series.astype("string").astype(object).where(series.notna(), None)
            columns[name] = pd.Categorical(text)
    return pd.DataFrame(columns, index=frame.index)


def assign_folds(
    inputs: pd.DataFrame, labels: np.ndarray, *, folds: int, rng: np.random.Generator
) -> np.ndarray:
    """The fold of each row: equal rows share a fold, each class spread evenly over folds.

    Identical rows in both windows (overlapping windows, duplicated rows) would otherwise
    be learned with one label and tested with the other, and push the AUROC far below 0.5;
    kept together, they score alike and count as ties.
    """
    groups = pd.factorize(pd.util.hash_pandas_object(inputs, index=False))[0]
    group_label = np.zeros(int(groups.max()) + 1, dtype=np.int64)
    group_label[groups] = labels
    fold_of_group = np.empty(group_label.size, dtype=np.int64)
    for value in (0, 1):
        members = rng.permutation(np.flatnonzero(group_label == value))
        fold_of_group[members] = np.arange(members.size) % folds
    return fold_of_group[groups]


def _classifier(seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    # Small on purpose: it must find a shift, not model the data; no early stopping, so
    # no inner split of the (already held-out) rows and the same trees on every run.
    return HistGradientBoostingClassifier(
        max_iter=60,
        learning_rate=0.1,
        max_leaf_nodes=15,
        min_samples_leaf=20,
        early_stopping=False,
        categorical_features="from_dtype",
        random_state=seed,
    )


def _grade(
    auroc: float, interval: tuple[float, float], settings: MonitoringSettings
) -> tuple[Severity, list[str]]:
    """Severity from the AUROC's thresholds, only when its interval is clear of 0.5."""
    low, high = interval
    if low <= 0.5:
        return "none", []
    for severity, threshold in (
        ("major", settings.multivariate_auc_major),
        ("minor", settings.multivariate_auc_minor),
    ):
        if auroc >= threshold:
            return severity, [  # type: ignore[return-value]
                f"domain classifier AUROC {auroc:.3f} >= {threshold:g} "
                f"(95% interval {low:.3f}-{high:.3f}, above 0.5)"
            ]
    return "none", []


def detect_domain_shift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: Sequence[str],
    settings: MonitoringSettings,
) -> MultivariateDrift:
    """Train the domain classifier on the two samples and grade how well it separates them.

    Args:
        reference: Rows of the reference window (a sample of them).
        current: Rows of the current window (a sample of them).
        features: The columns the classifier sees (both frames hold them).
        settings: Folds, seed, thresholds and how many features to name.

    Returns:
        The verdict; ``insufficient_data`` when a side has fewer than ``min_samples`` rows
        or fewer rows than folds.
    """
    from sklearn.metrics import roc_auc_score
    from threadpoolctl import threadpool_limits

    thresholds = {
        "auc_minor": settings.multivariate_auc_minor,
        "auc_major": settings.multivariate_auc_major,
        "max_rows": settings.multivariate_max_rows,
        "folds": settings.multivariate_folds,
    }
    names = list(features)
    sizes = (len(reference), len(current))
    base: dict[str, Any] = {
        "reference_rows": sizes[0],
        "current_rows": sizes[1],
        "features": tuple(names),
    }
    minimum = max(settings.min_samples, settings.multivariate_folds)
    if min(sizes) < minimum or not names:
        why = "no feature" if not names else f"fewer than {minimum} rows on a side"
        return MultivariateDrift(
            status="insufficient_data",
            note=f"insufficient data: {why}; not tested",
            thresholds=thresholds,
            **base,
        )
    inputs = _model_inputs(pd.concat([reference[names], current[names]], ignore_index=True))
    labels = np.concatenate((np.zeros(sizes[0], dtype=np.int64), np.ones(sizes[1], np.int64)))
    seed = settings.multivariate_seed
    rng = np.random.default_rng(seed)
    fold_of_row = assign_folds(inputs, labels, folds=settings.multivariate_folds, rng=rng)
    scores = np.empty(labels.size)
    fold_auroc: list[float] = []
    drops = np.zeros((settings.multivariate_folds, len(names)))
    # One OpenMP thread: on a busy machine HistGradientBoosting's parallel regions made
    # these small fits 40 times slower (the serving figures in stack-facts say the same).
    with threadpool_limits(limits=1, user_api="openmp"):
        for fold in range(settings.multivariate_folds):
            train, test = np.flatnonzero(fold_of_row != fold), np.flatnonzero(fold_of_row == fold)
            model = _classifier(seed).fit(inputs.iloc[train], labels[train])
            held_out = inputs.iloc[test]
            scores[test] = model.predict_proba(held_out)[:, 1]
            auroc = float(roc_auc_score(labels[test], scores[test]))
            fold_auroc.append(auroc)
            for index, name in enumerate(names):
                permuted = held_out.copy()
                order = rng.permutation(len(held_out))
                permuted[name] = held_out[name].iloc[order].set_axis(held_out.index)
                after = roc_auc_score(labels[test], model.predict_proba(permuted)[:, 1])
                drops[fold, index] = auroc - float(after)
    auroc, low, high = delong_interval(labels, scores)
    importance = drops.mean(axis=0)
    separation = tuple(
        Separation(feature=names[index], importance=float(importance[index]))
        for index in np.argsort(-importance, kind="stable")
    )
    severity, reasons = _grade(auroc, (low, high), settings)
    # Named: the features whose permutation removes a tenth of the separation or more
    # (noise features drop the AUROC by a few thousandths either way).
    floor = max(0.1 * (auroc - 0.5), 1e-9)
    named = [item.feature for item in separation if item.importance >= floor]
    top = tuple(named[: settings.multivariate_top_features]) if severity != "none" else ()
    return MultivariateDrift(
        status="ok",
        severity=severity,
        auroc=auroc,
        low=low,
        high=high,
        fold_auroc=tuple(fold_auroc),
        separation=separation,
        top_features=top,
        reasons=tuple(reasons),
        thresholds=thresholds,
        **base,
    )
