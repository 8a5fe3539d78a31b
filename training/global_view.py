"""The model's global view: mean absolute TreeSHAP contribution per feature on test rows.

Logged to the training run beside the permutation (or impurity) importances, as
``mean_abs_contributions.json`` and a bar chart ``mean_abs_contributions.png``. Unlike
importances, these are in the model's own unit (log-odds of churn) and are the averages of
the very reasons ``/predict`` and ``churn score`` give per user.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from matplotlib.figure import Figure

from core.explain import build_explainer, mean_abs_contributions

CONTRIBUTIONS_JSON = "mean_abs_contributions.json"
CONTRIBUTIONS_PNG = "mean_abs_contributions.png"


def log_mean_contributions(model: Any, features: pd.DataFrame) -> dict[str, float] | None:
    """Log the mean |contribution| per feature on ``features`` to the active MLflow run.

    Returns:
        The means, largest first, or None when the model family cannot be explained (the
        JSON artifact then says why and no chart is drawn).
    """
    names = tuple(str(column) for column in features.columns)
    explainer, problem = build_explainer(model, names)
    if explainer is None:
        mlflow.log_dict({"method": "tree_shap", "unsupported": problem}, CONTRIBUTIONS_JSON)
        return None
    means = mean_abs_contributions(explainer, features.to_numpy(dtype="float64"))
    ordered = dict(sorted(means.items(), key=lambda item: -item[1]))
    mlflow.log_dict(
        {
            "method": "tree_shap",
            "unit": "log-odds of churn",
            "rows": len(features),
            "base_value": explainer.base_value,
            "mean_abs_contributions": ordered,
        },
        CONTRIBUTIONS_JSON,
    )
    mlflow.log_figure(_bar_chart(ordered), CONTRIBUTIONS_PNG)
    return ordered


def _bar_chart(means: dict[str, float]) -> Figure:
    # A bare Figure, not pyplot's: no display backend, nothing kept open afterwards.
    figure = Figure(figsize=(6, 0.45 * len(means) + 1.2))
    axes = figure.subplots()
    names = list(means)[::-1]
    axes.barh(names, [means[name] for name in names], color="#4c72b0")
    axes.set_xlabel("mean |contribution| (log-odds of churn) on test rows")
    axes.set_title("What moves the churn score")
    figure.tight_layout()
    return figure
