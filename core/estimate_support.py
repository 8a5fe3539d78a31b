"""Where a label-free estimate can be claimed: the training range of each model feature.

A performance estimate (:mod:`monitoring.estimation`) trusts the model's calibrated
probabilities, and those were checked on the training distribution only. Where a window's
rows lie outside the values the model was fitted on, the model extrapolates, and no
label-free estimator knows how well it does there. The support check measures, per model
feature, the share of a window's rows outside the training set's ``[min, max]`` (the range
the data-quality check of ``churn drift`` compares against, :mod:`monitoring.quality`).

Training logs each feature's range with the model version as run metrics
(:func:`range_metrics`: ``train_min.<feature>``, ``train_max.<feature>``), so that
``churn estimate`` reads it with the reference (through :mod:`core.registry_sqlite`, no
MLflow import) and a file of probabilities costs nothing more. Only numpy here.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

MIN_PREFIX = "train_min."
MAX_PREFIX = "train_max."
RANGE_PREFIXES: tuple[str, ...] = (MIN_PREFIX, MAX_PREFIX)


def range_metrics(columns: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The run metrics of each numeric column's range (columns without a finite value are
    left out)."""
    metrics: dict[str, float] = {}
    for name, raw in columns.items():
        values = np.asarray(raw, dtype=np.float64)
        values = values[np.isfinite(values)]
        if len(values):
            metrics[MIN_PREFIX + name] = float(values.min())
            metrics[MAX_PREFIX + name] = float(values.max())
    return metrics


def ranges_from_metrics(metrics: Mapping[str, float]) -> dict[str, tuple[float, float]]:
    """Each feature's training ``(min, max)`` from a run's metrics (features with both)."""
    ranges: dict[str, tuple[float, float]] = {}
    for key, low in metrics.items():
        if not key.startswith(MIN_PREFIX):
            continue
        name = key.removeprefix(MIN_PREFIX)
        high = metrics.get(MAX_PREFIX + name)
        if high is not None and np.isfinite(low) and np.isfinite(high):
            ranges[name] = (float(low), float(high))
    return ranges


def out_of_range_shares(
    columns: Mapping[str, np.ndarray], ranges: Mapping[str, tuple[float, float]]
) -> dict[str, float]:
    """Per feature both sides know, the share of the window's known (finite) values
    outside the training range (a feature without a known value: 0)."""
    shares: dict[str, float] = {}
    for name, (low, high) in ranges.items():
        if name not in columns:
            continue
        values = np.asarray(columns[name], dtype=np.float64)
        values = values[np.isfinite(values)]
        shares[name] = float(np.mean((values < low) | (values > high))) if len(values) else 0.0
    return shares
