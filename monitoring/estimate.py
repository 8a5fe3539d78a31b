"""Stage: ``churn estimate``, the model's performance on a window before its labels land.

:func:`run_estimate` takes an :class:`EstimateRequest` and returns an
:class:`EstimateOutcome`: the estimate (:mod:`monitoring.estimation`) of the window's ROC
AUC, PR AUC, Brier score and churn rate with their intervals, written as ``estimate.json``
and ``estimate.html`` and published as Prometheus gauges, beside the champion's reference
(its ROC AUC on its training run's test window).

The window is the prediction log's last ``window`` (the calibrated probabilities serving
answered with), or a Parquet file holding either a ``churn_probability`` column or the
champion's feature columns, which the champion then scores (through
:class:`core.models.ModelRegistry`). Rows the model cannot score (a feature missing) are
counted and left out.

Support: where the window has the model's feature columns (the prediction log, a file of
features) each one's share of rows outside the champion's training range is measured
(:mod:`core.estimate_support`; the range is carried with the model version); above
``estimate_max_out_of_range`` the status is ``out_of_support`` and no figure is claimed.
A file holding only ``churn_probability`` has no feature: its support is unknown, the
estimate is claimed as without the check, and ``estimate.json`` says so.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import InputError
from core.estimate_shift import RUN_METRICS, CalibrationTerm
from core.estimate_support import RANGE_PREFIXES, out_of_range_shares, ranges_from_metrics
from core.files import finite_json, write_text_atomically
from core.prediction_log import MODEL_VERSION, PROBABILITY
from core.settings import DataSettings, ModelSettings
from monitoring.estimation import (
    METRICS,
    PerformanceEstimate,
    estimate_performance,
    estimated_harm,
    limit_to_support,
)
from monitoring.settings import MonitoringSettings


@dataclass(frozen=True)
class EstimateRequest:
    """Which predictions to estimate the performance of.

    Attributes:
        window: Predictions of the prediction log's last ``window`` (ending at ``until``).
        until: End of the window (default: the newest prediction).
        current: A Parquet file or folder instead of the log: a ``churn_probability``
            column, or the champion's feature columns (scored by the champion).
        out_dir: Folder of estimate.json and estimate.html (default
            ``<data_dir>/monitoring/estimates/<UTC time>``).
    """

    window: timedelta = timedelta(days=7)
    until: datetime | None = None
    current: Path | None = None
    out_dir: Path | None = None
    settings: MonitoringSettings = field(default_factory=MonitoringSettings)
    model: ModelSettings = field(default_factory=ModelSettings)


@dataclass(frozen=True)
class Reference:
    """The champion's ROC AUC on its training run's test window, estimates are held to,
    and the calibration term its training measured (:mod:`core.estimate_shift`; zeros for
    a version trained before it was measured: label noise only), and each feature's
    training range (:mod:`core.estimate_support`; empty: support not checked)."""

    model: str
    version: str
    roc_auc: float | None
    calibration_sd: float = 0.0
    bias_per_distance: float = 0.0
    logit_mean: float = 0.0
    logit_sd: float = 0.0
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def with_term(
        cls,
        model: str,
        version: str,
        roc_auc: float | None,
        term: CalibrationTerm,
        ranges: dict[str, tuple[float, float]] | None = None,
    ) -> Reference:
        """A reference carrying a model version's calibration term and training ranges."""
        return cls(
            model=model,
            version=version,
            roc_auc=roc_auc,
            calibration_sd=term.calibration_sd,
            bias_per_distance=term.per_distance,
            logit_mean=term.logit_mean,
            logit_sd=term.logit_sd,
            ranges=dict(ranges or {}),
        )

    def term(self) -> CalibrationTerm:
        """The model version's calibration term."""
        return CalibrationTerm(
            calibration_sd=self.calibration_sd,
            per_distance=self.bias_per_distance,
            logit_mean=self.logit_mean,
            logit_sd=self.logit_sd,
        )


REFERENCE_METRICS = ("test_roc_auc", *RUN_METRICS.values())


def reference_from_metrics(model: str, version: str, metrics: dict[str, float]) -> Reference:
    """The reference from a training run's metrics (missing ones: None and zeros)."""
    auc = metrics.get("test_roc_auc")
    return Reference.with_term(
        model,
        version,
        float(auc) if auc is not None and np.isfinite(auc) else None,
        CalibrationTerm.from_metrics(metrics),
        ranges_from_metrics(metrics),
    )


@dataclass
class EstimateOutcome:
    """The estimate, its source and reference, and where it went."""

    estimate: PerformanceEstimate
    source: dict[str, Any]
    reference: Reference | None
    json_path: Path
    html_path: Path
    metrics_target: str | None = None
    by_version: dict[str, int] = field(default_factory=dict)
    margin: float = 0.0

    @property
    def harm(self) -> str | None:
        """Why the estimate shows harm (:func:`monitoring.retrain.estimated_harm`), or None."""
        reference = self.reference.roc_auc if self.reference else None
        return estimated_harm(self.estimate, reference, margin=self.margin)

    @property
    def harmful(self) -> bool:
        """Whether the estimated ROC AUC fell below the champion's reference (see harm)."""
        return self.harm is not None

    def to_dict(self) -> dict[str, Any]:
        """The ``estimate.json`` document."""
        document = self.estimate.to_dict()
        document["source"] = self.source
        document["by_version"] = self.by_version
        document["reference"] = None if self.reference is None else vars(self.reference)
        document["harm"] = self.harm
        if self.estimate.out_of_range is None:
            document["support"] = (
                "unknown: the window has none of the model's feature columns, or the "
                "champion carries no training range; the estimate is claimed unchecked"
            )
        return finite_json(document)


def champion_reference(model: ModelSettings) -> Reference | None:
    """The champion's test ROC AUC and calibration term from its training run (None: no
    champion).

    A local SQLite store is read directly (:mod:`core.registry_sqlite`: no MLflow import);
    any other store through MLflow's client.
    """
    from core.registry_sqlite import UNREAD, AliasMetrics, alias_metrics
    from core.settings import MlflowSettings

    label = f"{model.name}@{model.alias}"
    settings = MlflowSettings()
    quick = alias_metrics(
        settings.resolved_tracking_uri(),
        model.name,
        model.alias,
        REFERENCE_METRICS,
        prefixes=RANGE_PREFIXES,
    )
    if isinstance(quick, AliasMetrics):
        return reference_from_metrics(label, quick.version, quick.metrics)
    if quick is not UNREAD:
        return None
    from core.models import ModelRegistry

    registry = ModelRegistry.from_settings(settings)
    found = registry.find(model.name, alias=model.alias)
    if found is None:
        return None
    metrics = registry.client.get_run(found.run_id).data.metrics if found.run_id else {}
    return reference_from_metrics(label, found.version, dict(metrics))


def score_with_champion(frame: pd.DataFrame, model: ModelSettings) -> np.ndarray:
    """The champion's calibrated probability of each row (NaN where a feature is missing).

    Raises:
        InputError: The file lacks one of the champion's features.
    """
    from core.models import ModelRegistry
    from monitoring.snapshots import load_champion_lineage, score_rows

    registry = ModelRegistry.from_settings()
    lineage = load_champion_lineage(registry, model.name, model.alias)
    missing = [name for name in lineage.features if name not in frame.columns]
    if missing:
        raise InputError(
            f"the file has neither a {PROBABILITY} column nor the champion's feature(s) "
            f"{', '.join(missing)}"
        )
    _, fitted = registry.load_version(lineage.model_name, version=lineage.version)
    return score_rows(fitted, frame, lineage.features).to_numpy(dtype=np.float64)


def read_window(
    request: EstimateRequest,
) -> tuple[np.ndarray, dict[str, Any], dict[str, int], pd.DataFrame]:
    """The window's probabilities, where they came from, rows per model version, and the
    window's rows (their feature columns, where it has them, for the support check).

    Raises:
        InputError: No such file or log, nothing in the window, or no usable column.
    """
    from monitoring.windows import read_sample

    if request.current is not None:
        frame = read_sample(request.current)
        if PROBABILITY in frame.columns:
            probabilities = frame[PROBABILITY].to_numpy(dtype=np.float64)
            source: dict[str, Any] = {"file": str(request.current), "column": PROBABILITY}
        else:
            probabilities = score_with_champion(frame, request.model)
            source = {"file": str(request.current), "scored_by": "champion"}
    else:
        from monitoring.snapshots import read_prediction_log

        log_dir = DataSettings().prediction_log_path
        frame, (start, end) = read_prediction_log(
            log_dir, window=request.window, until=request.until
        )
        probabilities = frame[PROBABILITY].to_numpy(dtype=np.float64)
        source = {"prediction_log": str(log_dir), "window": [start.isoformat(), end.isoformat()]}
    versions: dict[str, int] = {}
    if MODEL_VERSION in frame.columns:
        counts = frame[MODEL_VERSION].astype(str).value_counts()
        versions = {str(key): int(value) for key, value in sorted(counts.items())}
    return probabilities, source, versions, frame


def estimate_window(
    probabilities: np.ndarray,
    settings: MonitoringSettings,
    reference: Reference | None = None,
    frame: pd.DataFrame | None = None,
) -> PerformanceEstimate:
    """The estimate of one window with the monitoring settings' minimum and confidence,
    and the reference model version's calibration term for it (none without a reference).

    With the window's rows (``frame``) and the version's training ranges, the support is
    checked too (:func:`monitoring.estimation.limit_to_support`); without either, or when
    the rows have none of the model's features, it is unknown and the estimate stands.
    """
    term = reference.term() if reference is not None else CalibrationTerm()
    estimate = estimate_performance(
        probabilities,
        min_rows=settings.min_window_rows,
        confidence=settings.estimate_confidence,
        calibration_sd=term.for_window(probabilities),
    )
    shares = None
    if frame is not None and reference is not None and reference.ranges:
        columns = {
            name: pd.to_numeric(frame[name], errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan
            )
            for name in reference.ranges
            if name in frame.columns
        }
        shares = out_of_range_shares(columns, reference.ranges) if columns else None
    return limit_to_support(estimate, shares, limit=settings.estimate_max_out_of_range)


def run_estimate(request: EstimateRequest) -> EstimateOutcome:
    """Estimate the window's performance; write estimate.json and estimate.html; publish
    the gauges.

    Raises:
        InputError: Nothing to estimate (see :func:`read_window`), or probabilities that
            are not probabilities.
    """
    started = datetime.now(UTC)
    probabilities, source, versions, frame = read_window(request)
    try:
        reference = champion_reference(request.model)
    except Exception as error:  # the estimate stands without it; say why it is missing
        source["reference"] = f"not read: {type(error).__name__}: {error}"
        reference = None
    estimate = estimate_window(probabilities, request.settings, reference, frame)
    out_dir = request.out_dir or (
        DataSettings().data_dir / "monitoring" / "estimates" / started.strftime("%Y%m%dT%H%M%SZ")
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    outcome = EstimateOutcome(
        estimate=estimate,
        source=source,
        reference=reference,
        json_path=out_dir / "estimate.json",
        html_path=out_dir / "estimate.html",
        by_version=versions,
        margin=request.settings.retrain_auc_margin,
    )
    write_text_atomically(
        outcome.json_path, json.dumps(outcome.to_dict(), indent=2, allow_nan=False) + "\n"
    )
    write_text_atomically(
        outcome.html_path,
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Estimated "
        f"performance</title></head><body>{render_estimate_html(estimate, reference, outcome.harm)}"
        "</body></html>\n",
    )
    from core.stage_metrics import publish_stage_metrics
    from monitoring.metrics import build_estimate_registry

    outcome.metrics_target = publish_stage_metrics(
        "estimate", build_estimate_registry(estimate, reference, harm=outcome.harm)
    )
    return outcome


_NAMES = {
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC",
    "brier": "Brier score",
    "churn_rate": "churn rate",
}


def render_estimate_html(
    estimate: PerformanceEstimate, reference: Reference | None, harm: str | None
) -> str:
    """The estimate as an HTML section (for estimate.html and the drift report)."""
    rows = "".join(
        f"<tr><td>{_NAMES[name]}</td><td>{interval.estimate:.4f}</td>"
        f"<td>{interval.low:.4f} - {interval.high:.4f}</td></tr>"
        for name in METRICS
        if (interval := estimate.figure(name)) is not None
    )
    if estimate.status == "ok":
        claim = (
            f"<table><tr><th>metric</th><th>estimate</th><th>{estimate.confidence:.0%} "
            f"interval</th></tr>{rows}</table>"
        )
    elif estimate.status == "out_of_support":
        claim = (
            "<p><b>out of support: no figure claimed</b>. "
            f"{html.escape(estimate.note or '')}. Wait for the labels (churn evaluate), and "
            "check the data-quality findings: a broken upstream, or a population the model "
            "was never trained on (retrain on it once labelled).</p>"
        )
    else:
        claim = f"<p><b>insufficient data</b>: {html.escape(estimate.note or '')}</p>"
    shares = estimate.out_of_range
    support = (
        "<p>Support: unknown (no model feature in the window, or no training range with "
        "the model version): the figures are claimed unchecked.</p>"
        if shares is None
        else "<p>Rows outside the training range (limit "
        f"{estimate.max_out_of_range or 0:.1%}): "
        + ", ".join(f"{html.escape(name)} {share:.1%}" for name, share in sorted(shares.items()))
        + "</p>"
    )
    held_to = (
        f"<p>Champion {html.escape(reference.model)} version {html.escape(reference.version)}: "
        f"test ROC AUC {reference.roc_auc:.4f} at training"
        + (f" <b>Estimated harm: {html.escape(harm)}</b>" if harm else "")
        + ".</p>"
        if reference is not None and reference.roc_auc is not None
        else ""
    )
    return (
        "<section id='estimated-performance'><h2>Estimated performance (no labels)</h2>"
        f"<p>{estimate.rows} predictions; estimated from the calibrated probabilities "
        "(confidence-based performance estimation). Realized figures land in the interval "
        f"about {estimate.confidence:.0%} of the time when the probabilities are calibrated; "
        "the ROC AUC's interval also carries the model version's calibration term "
        f"({estimate.calibration_sd:.4f}), the bias shifted windows showed on its held-out "
        f"rows.</p>{claim}{support}{held_to}</section>"
    )
