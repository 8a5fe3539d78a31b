"""Monitoring: drift of what the model sees, its performance before and after labels arrive.

The entry points of ``churn drift``, ``churn estimate`` and ``churn evaluate``: a request
in, an outcome out. Everything else in ``monitoring`` is internal.

They are loaded on first use: a cluster's executors import ``monitoring.snapshots`` (the
champion's scorer runs where the rows are), and each of their Python workers would
otherwise load the whole stage, training and MLflow with it, before scoring a batch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitoring.drift import DriftOutcome, DriftRequest, run_drift
    from monitoring.estimate import EstimateOutcome, EstimateRequest, run_estimate
    from monitoring.evaluate import EvaluateOutcome, EvaluateRequest, run_evaluation
    from monitoring.windows import parse_window

__all__ = [
    "DriftOutcome",
    "DriftRequest",
    "EstimateOutcome",
    "EstimateRequest",
    "EvaluateOutcome",
    "EvaluateRequest",
    "parse_window",
    "run_drift",
    "run_estimate",
    "run_evaluation",
]

_MODULES = {
    "DriftOutcome": "monitoring.drift",
    "DriftRequest": "monitoring.drift",
    "run_drift": "monitoring.drift",
    "EstimateOutcome": "monitoring.estimate",
    "EstimateRequest": "monitoring.estimate",
    "run_estimate": "monitoring.estimate",
    "EvaluateOutcome": "monitoring.evaluate",
    "EvaluateRequest": "monitoring.evaluate",
    "run_evaluation": "monitoring.evaluate",
    "parse_window": "monitoring.windows",
}


def __getattr__(name: str) -> Any:
    """An entry point, imported from its module on first use."""
    if name not in _MODULES:
        raise AttributeError(f"module 'monitoring' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULES[name]), name)
