"""The two model families, their search spaces, staged fitting and evaluation.

``gradient_boosting`` is the reference design's GradientBoostingClassifier (its search
space verbatim; the reference's StandardScaler is left out: trees are scale-invariant).
``hist_gradient_boosting`` is the fast default: HistGradientBoostingClassifier, which bins
the features once and handles missing values natively. It has no row subsampling, so its
search uses feature subsampling per split (``max_features``, same 0.6-1.0 range) instead of
``subsample``; ``max_iter`` plays ``n_estimators``.

Models are fitted in stages of ``STAGE_SIZE`` trees with ``warm_start`` so a pruner can
stop a hopeless trial after its first stages instead of after its full fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
from sklearn.base import ClassifierMixin
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
from sklearn.inspection import permutation_importance
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from threadpoolctl import threadpool_limits

from training.config import ModelFamily

STAGE_SIZE = 50


@dataclass(frozen=True)
class FamilySpec:
    """How one model family is searched and built."""

    name: ModelFamily
    size_parameter: str  # the number of trees, fitted in stages
    handles_missing: bool


FAMILIES: dict[str, FamilySpec] = {
    "hist_gradient_boosting": FamilySpec("hist_gradient_boosting", "max_iter", True),
    "gradient_boosting": FamilySpec("gradient_boosting", "n_estimators", False),
}


def limit_threads(threads: int) -> Any:
    """A context limiting OpenMP/BLAS threads of the model libraries to ``threads``.

    threadpoolctl only limits libraries already loaded: this module imports scikit-learn's
    ensembles (and so its OpenMP runtime) first; a limit set before that import is silently
    ignored (we measured 30 s first trials in fresh worker processes that way).
    """
    return threadpool_limits(limits=threads)


def suggest_params(trial: optuna.Trial, family: ModelFamily) -> dict[str, Any]:
    """Draw one point of the family's search space (the reference design's ranges)."""
    spec = FAMILIES[family]
    params: dict[str, Any] = {
        spec.size_parameter: trial.suggest_int(spec.size_parameter, 100, 500),
        "max_depth": trial.suggest_int("max_depth", 3, 8),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
    }
    if family == "gradient_boosting":
        params["subsample"] = trial.suggest_float("subsample", 0.6, 1.0)
    else:
        params["max_features"] = trial.suggest_float("max_features", 0.6, 1.0)
    params["min_samples_leaf"] = trial.suggest_int("min_samples_leaf", 5, 50)
    return params


def build_model(family: ModelFamily, params: dict[str, Any], *, seed: int) -> ClassifierMixin:
    """An unfitted classifier of the family with these parameters."""
    if family == "gradient_boosting":
        return GradientBoostingClassifier(random_state=seed, **params)
    # Early stopping would hold out a random slice of the (time-ordered) training rows;
    # the pruner and the time-based validation set do that job instead.
    return HistGradientBoostingClassifier(random_state=seed, early_stopping=False, **params)


def fit_in_stages(
    family: ModelFamily,
    params: dict[str, Any],
    *,
    seed: int,
    train: tuple[pd.DataFrame, pd.Series],
    val: tuple[pd.DataFrame, pd.Series],
    report: Callable[[int, float], None],
) -> tuple[ClassifierMixin, float]:
    """Fit in stages of trees, reporting validation ROC AUC after each stage.

    Args:
        family: Model family.
        params: Its parameters (the full number of trees included).
        seed: Random state.
        train: Training features and labels.
        val: Validation features and labels.
        report: Called with (stage, validation AUC) after each stage; it may raise (a
            pruner's TrialPruned) to stop the fit.

    Returns:
        The model and the validation ROC AUC of its last fitted stage.
    """
    spec = FAMILIES[family]
    total = int(params[spec.size_parameter])
    model = build_model(family, params, seed=seed)
    model.set_params(warm_start=True)
    auc = float("nan")
    sizes = [*range(STAGE_SIZE, total, STAGE_SIZE), total]
    for stage, size in enumerate(sizes):
        model.set_params(**{spec.size_parameter: size})
        model.fit(*train)
        auc = float(roc_auc_score(val[1], model.predict_proba(val[0])[:, 1]))
        report(stage, auc)
    return model, auc


def evaluate(model: ClassifierMixin, features: pd.DataFrame, labels: pd.Series) -> dict[str, float]:
    """ROC AUC, PR AUC (average precision) and Brier score of the churn probability."""
    probability = model.predict_proba(features)[:, 1]
    return {
        "roc_auc": float(roc_auc_score(labels, probability)),
        "pr_auc": float(average_precision_score(labels, probability)),
        "brier": float(brier_score_loss(labels, probability)),
    }


def feature_importances(
    model: ClassifierMixin, features: pd.DataFrame, labels: pd.Series, *, seed: int
) -> tuple[dict[str, float], str]:
    """Importance of each feature and the method used.

    The model's own (impurity) importances when it has them, otherwise permutation
    importance: the mean drop in ROC AUC on the given rows when a feature is shuffled.
    """
    own = getattr(model, "feature_importances_", None)
    if own is not None:
        values, method = np.asarray(own), "impurity"
    else:
        result = permutation_importance(
            model, features, labels, scoring="roc_auc", n_repeats=5, random_state=seed
        )
        values, method = result.importances_mean, "permutation_roc_auc"
    return {
        name: float(value) for name, value in zip(features.columns, values, strict=True)
    }, method
