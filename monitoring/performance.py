"""The drift job's performance signals: the current window's estimated performance, and
its realized performance where labels have landed, each held to the champion's reference.

``churn drift`` compares distributions; what decides a retraining is harm
(:mod:`monitoring.retrain`). Both are built here from the current window as the drift job
compared it: its ``churn_probability`` column (the prediction log's served probability, or
the champion's score added by the drift job).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import InputError
from core.prediction_log import PROBABILITY
from core.settings import DataSettings
from monitoring.estimate import Reference, estimate_window, render_estimate_html
from monitoring.estimation import PerformanceEstimate
from monitoring.metrics import add_estimate_gauges
from monitoring.retrain import HarmSignals, estimated_harm, realized_harm

if TYPE_CHECKING:
    import pandas as pd
    from prometheus_client import CollectorRegistry

    from monitoring.drift import DriftRequest
    from monitoring.snapshots import ChampionLineage


@dataclass
class WindowPerformance:
    """The current window's estimate, realized figure and harm signals (or why none)."""

    estimate: PerformanceEstimate | None
    reference: Reference | None
    harm: HarmSignals
    realized: dict[str, Any] = field(default_factory=dict)
    note: str | None = None

    @property
    def harmful(self) -> bool:
        """Whether either performance signal shows harm."""
        return bool(self.harm.estimated or self.harm.realized)

    def to_dict(self) -> dict[str, Any]:
        """The ``estimated_performance`` section of drift.json."""
        return {
            "estimate": self.estimate.to_dict() if self.estimate else None,
            "reference": vars(self.reference) if self.reference else None,
            "realized": self.realized,
            "harm": {"estimated": self.harm.estimated, "realized": self.harm.realized},
            "note": self.note,
        }

    def render_html(self) -> str:
        """The drift report's section."""
        if self.estimate is None:
            return (
                "<section id='estimated-performance'><h2>Estimated performance</h2>"
                f"<p class='meta'>not estimated: {self.note or ''}</p></section>"
            )
        section = render_estimate_html(self.estimate, self.reference, self.harm.estimated)
        if self.realized.get("roc_auc") is not None:
            section += (
                f"<p>Realized on {self.realized['rows']} labelled predictions: ROC AUC "
                f"{self.realized['roc_auc']:.4f}"
                + (f" <b>{self.harm.realized}</b>" if self.harm.realized else "")
                + ".</p>"
            )
        return section

    def add_gauges(self, registry: CollectorRegistry) -> None:
        """The estimate's gauges in the drift job's registry (``churn_drift_estimate_*``)."""
        if self.estimate is not None:
            add_estimate_gauges(
                registry,
                self.estimate,
                self.reference,
                harm=self.harm.estimated,
                prefix="churn_drift_estimate",
            )


def window_performance(
    current: pd.DataFrame | None, lineage: ChampionLineage | None, request: DriftRequest
) -> WindowPerformance:
    """Estimate the current window's performance and, where labels landed, realize it.

    Never fails the drift job: what cannot be measured is said in ``note``.
    """
    settings = request.settings
    reference = (
        Reference.with_term(
            f"{lineage.model_name}@{lineage.alias}",
            lineage.version,
            lineage.test_roc_auc,
            lineage.estimate_term,
            lineage.ranges,
        )
        if lineage is not None
        else None
    )
    if current is None or PROBABILITY not in current.columns:
        return WindowPerformance(
            estimate=None,
            reference=reference,
            harm=HarmSignals(),
            note=f"the current window has no {PROBABILITY} column (score drift not measured, "
            "or aggregated where the rows are)",
        )
    estimate = estimate_window(
        current[PROBABILITY].to_numpy(dtype=np.float64), settings, reference, current
    )
    reference_auc = reference.roc_auc if reference else None
    margin = settings.retrain_auc_margin
    realized, note = _realized(current, settings.min_window_rows)
    figures: dict[str, Any] = {
        "estimated_roc_auc": vars(estimate.roc_auc) if estimate.roc_auc else None,
        "estimate_rows": estimate.rows,
        "estimate_status": estimate.status,
        "out_of_range": estimate.out_of_range,
        "reference_roc_auc": reference_auc,
        "realized": realized,
    }
    harm = HarmSignals(
        estimated=estimated_harm(estimate, reference_auc, margin=margin),
        realized=realized_harm(
            realized.get("roc_auc"),
            int(realized.get("rows", 0)),
            reference_auc,
            margin=margin,
            min_rows=settings.min_window_rows,
        ),
        figures=figures,
        unsupported=estimate.note if estimate.status == "out_of_support" else None,
    )
    return WindowPerformance(
        estimate=estimate, reference=reference, harm=harm, realized=realized, note=note
    )


def _realized(current: pd.DataFrame, min_rows: int) -> tuple[dict[str, Any], str | None]:
    """ROC AUC on the labels that have landed for the window's rows (the offline labels
    table; the label of each row's latest snapshot at or before it, as ``churn evaluate``
    joins them), or why there is none."""
    from sklearn.metrics import roc_auc_score

    from monitoring.evaluate import join_labels, read_label_window

    if not {"user_id", "event_timestamp"} <= set(current.columns):
        return {}, "no realized figure: the window has no user_id and event_timestamp"
    age = timedelta(days=7)
    times = current["event_timestamp"]
    try:
        labels = read_label_window(
            str(DataSettings().labels_path), start=times.min() - age, end=times.max()
        )
    except InputError as error:
        return {}, f"no realized figure: {error}"
    joined = join_labels(current, labels, max_label_age=age).dropna(subset=["label", PROBABILITY])
    rows = len(joined)
    values = joined["label"].to_numpy(dtype=np.int64)
    if rows < min_rows or len(np.unique(values)) < 2:
        return {"rows": rows, "roc_auc": None}, (
            f"no realized figure: {rows} labelled predictions (minimum {min_rows})"
        )
    auc = float(roc_auc_score(values, joined[PROBABILITY].to_numpy(dtype=np.float64)))
    return {"rows": rows, "roc_auc": auc}, None
