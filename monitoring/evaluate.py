"""Stage: ``churn evaluate``, how well the served model did once the labels arrived.

:func:`run_evaluation` takes an :class:`EvaluateRequest` and returns an
:class:`EvaluateOutcome`.

Join policy: a prediction is scored against the label of the snapshot it was served from,
that is the user's latest label whose ``event_timestamp`` (the snapshot time) is at or
before the prediction time, and at most ``max_label_age`` older (default 7 days).
Serving reads the latest materialized snapshot, so this is the label of the features the
model saw. Predictions without such a label are counted as unmatched and left out.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from core.calibration import RELIABILITY_BINS, ReliabilityBin, reliability
from core.compute import offline_compute
from core.compute.statistics import StatisticsCompute
from core.errors import InputError
from core.estimate_shift import CalibrationTerm
from core.feast_store import feature_store_session
from core.files import write_text_atomically
from core.models import ModelRegistry
from core.settings import DataSettings, FeastSettings, MlflowSettings, ModelSettings
from core.stage_metrics import record_champion_from_registry, record_evaluation
from core.tables import read_time_window
from monitoring.estimate import champion_reference
from monitoring.estimation import METRICS, PerformanceEstimate, estimate_performance
from monitoring.settings import MonitoringSettings
from monitoring.snapshots import read_prediction_log

TIMESTAMP = "event_timestamp"
LABEL_TIMESTAMP = "label_timestamp"


@dataclass(frozen=True)
class EvaluateRequest:
    """Which predictions to evaluate, against which labels.

    Attributes:
        window: Predictions of the last ``window`` (ending at ``until``).
        until: End of the window (default: the newest prediction).
        max_label_age: Oldest label (snapshot) a prediction may be matched to.
        labels: Labels Parquet (default: the offline labels table); on the spark profile
            any location the cluster reads (``s3a://...``).
        out_dir: Folder to write evaluation.json into (default: none written).
        min_auc: The ROC AUC the outcome is checked against (:attr:`EvaluateOutcome.below_min_auc`).
    """

    window: timedelta = timedelta(days=7)
    until: datetime | None = None
    max_label_age: timedelta = timedelta(days=7)
    labels: str | None = None
    out_dir: Path | None = None
    min_auc: float | None = None
    feast: FeastSettings = field(default_factory=FeastSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    settings: MonitoringSettings = field(default_factory=MonitoringSettings)


@dataclass
class Evaluation:
    """Performance of served predictions whose labels have arrived.

    Below ``min_rows`` labelled predictions (overall, and per model version) no figure is
    claimed: the status is ``insufficient_data`` and the figures are None. ``estimated``
    holds, per metric, what was estimated without labels for the same predictions
    (:mod:`monitoring.estimation`) beside the realized figure, and whether the realized
    one fell inside the estimate's interval.
    """

    window: list[str]
    predictions: int
    matched: int
    unmatched: int
    roc_auc: float | None
    brier: float | None
    log_loss: float | None
    base_rate: float | None
    mean_predicted: float | None
    expected_calibration_error: float | None
    reliability: list[ReliabilityBin]
    by_version: dict[str, dict[str, Any]] = field(default_factory=dict)
    champion: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    status: str = "ok"
    min_rows: int = 0
    estimated: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``evaluation.json``)."""
        return asdict(self)


@dataclass(frozen=True)
class EvaluateOutcome:
    """The evaluation, where its JSON went, and whether the AUC is below the minimum."""

    evaluation: Evaluation
    json_path: Path | None
    below_min_auc: bool


def join_labels(
    predictions: pd.DataFrame, labels: pd.DataFrame, *, max_label_age: timedelta
) -> pd.DataFrame:
    """Attach to each prediction the label of its user's latest snapshot before it.

    Returns the predictions with ``label`` and ``label_timestamp`` (NaN / NaT when no label
    within ``max_label_age``), in the predictions' order.
    """
    left = predictions.assign(_order=range(len(predictions)))
    left[TIMESTAMP] = pd.to_datetime(left[TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
    right = labels[["user_id", TIMESTAMP, "label"]].rename(columns={TIMESTAMP: LABEL_TIMESTAMP})
    right[LABEL_TIMESTAMP] = pd.to_datetime(right[LABEL_TIMESTAMP], utc=True).astype(
        "datetime64[ns, UTC]"
    )
    right = right.dropna(subset=["label", LABEL_TIMESTAMP])
    joined = pd.merge_asof(
        left.sort_values(TIMESTAMP),
        right.sort_values(LABEL_TIMESTAMP),
        left_on=TIMESTAMP,
        right_on=LABEL_TIMESTAMP,
        by="user_id",
        direction="backward",  # the snapshot served, never a later one
        tolerance=pd.Timedelta(max_label_age),
    )
    return joined.sort_values("_order").drop(columns="_order").reset_index(drop=True)


def read_label_window(
    location: str,
    *,
    start: pd.Timestamp,
    end: pd.Timestamp,
    compute: StatisticsCompute | None = None,
) -> pd.DataFrame:
    """The labels whose snapshot time is in ``[start, end]``: user, time and label only.

    Without ``compute`` a local table is scanned here (no feature store needed). With the
    offline-compute backend of a profile, the backend reads the window: on the spark
    profile the executors filter the table at ``location`` (any location the cluster reads,
    ``s3a://...``) and this process reads only the window, in bounded batches. The whole
    table never reaches this process.

    Raises:
        InputError: The table is missing or lacks a column, the backend cannot read the
            location, or the window holds no label.
    """
    columns = ["user_id", TIMESTAMP, "label"]
    try:
        if compute is None:
            frame = read_time_window(location, columns, start=start, end=end)
        else:
            frame = compute.read_window(location, columns, start=start, end=end)
    except InputError as error:
        raise InputError(f"labels {error}") from error
    if frame.empty:
        raise InputError(
            f"no label between {start} and {end} in {location} (labels arrive after the "
            "outcome is known; try an earlier --until or a larger --max-label-age)"
        )
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    return frame


def _realized(labels: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    """ROC AUC, PR AUC, Brier score and churn rate on labels (AUCs None with one class)."""
    both = len(np.unique(labels)) == 2
    return {
        "roc_auc": float(roc_auc_score(labels, scores)) if both else None,
        "pr_auc": float(average_precision_score(labels, scores)) if both else None,
        "brier": float(brier_score_loss(labels, scores)),
        "churn_rate": float(labels.mean()),
    }


def _beside_estimate(
    realized: dict[str, float | None], estimate: PerformanceEstimate
) -> dict[str, dict[str, Any]]:
    """Per metric: the estimate, its interval, the realized figure and whether it is inside."""
    table: dict[str, dict[str, Any]] = {}
    for name in METRICS:
        interval, value = estimate.figure(name), realized.get(name)
        if interval is None:
            continue
        table[name] = {
            "estimate": interval.estimate,
            "low": interval.low,
            "high": interval.high,
            "realized": value,
            "inside": None if value is None else interval.contains(value),
        }
    return table


def evaluate_predictions(
    joined: pd.DataFrame,
    *,
    window: tuple[Any, Any],
    bins: int = RELIABILITY_BINS,
    min_rows: int = 500,
    confidence: float = 0.95,
    term: CalibrationTerm | None = None,
) -> Evaluation:
    """ROC AUC, Brier score, log loss and reliability of the labelled predictions, beside
    what was estimated for them without labels.

    Args:
        joined: Predictions with ``label`` (NaN: not arrived) and ``churn_probability``.
        window: The window's bounds, for the report.
        bins: Reliability bins.
        min_rows: Fewest labelled predictions a figure is claimed for, overall and per
            model version.
        confidence: Coverage of the estimate's intervals.
        term: The champion's calibration term, widening the estimated ROC AUC's interval
            as ``churn estimate`` does (:mod:`core.estimate_shift`).

    Raises:
        InputError: No prediction has a label yet.
    """
    labelled = joined.dropna(subset=["label"])
    if labelled.empty:
        raise InputError(
            f"none of the {len(joined)} predictions has a label yet (labels arrive after "
            "the outcome is known; try an earlier --until or a larger --max-label-age)"
        )
    labels = labelled["label"].to_numpy(dtype=np.int64)
    scores = labelled["churn_probability"].to_numpy(dtype=np.float64)
    by_version: dict[str, dict[str, Any]] = {}
    if "model_version" in labelled.columns:
        for version, part in labelled.groupby(labelled["model_version"].astype(str)):
            part_labels = part["label"].to_numpy(dtype=np.int64)
            enough = len(part) >= min_rows
            by_version[str(version)] = {
                "rows": len(part),
                "status": "ok" if enough else "insufficient_data",
                "roc_auc": float(roc_auc_score(part_labels, part["churn_probability"]))
                if enough and len(np.unique(part_labels)) == 2
                else None,
            }
    common: dict[str, Any] = {
        "window": [str(window[0]), str(window[1])],
        "predictions": len(joined),
        "matched": len(labelled),
        "unmatched": len(joined) - len(labelled),
        "by_version": by_version,
        "min_rows": min_rows,
    }
    if len(labelled) < min_rows:
        return Evaluation(
            **common,
            roc_auc=None,
            brier=None,
            log_loss=None,
            base_rate=None,
            mean_predicted=None,
            expected_calibration_error=None,
            reliability=[],
            status="insufficient_data",
            note=f"{len(labelled)} labelled predictions, fewer than the minimum {min_rows} "
            "(CHURN_MONITORING_MIN_WINDOW_ROWS): no figure is claimed",
        )
    single_class = len(np.unique(labels)) < 2
    reliability_bins, ece = reliability(labels, scores, bins)
    realized = _realized(labels, scores)
    estimate = estimate_performance(
        scores,
        min_rows=min_rows,
        confidence=confidence,
        calibration_sd=(term or CalibrationTerm()).for_window(scores),
    )
    return Evaluation(
        **common,
        roc_auc=realized["roc_auc"],
        brier=realized["brier"],
        log_loss=float(log_loss(labels, np.clip(scores, 1e-15, 1 - 1e-15), labels=[0, 1])),
        base_rate=float(labels.mean()),
        mean_predicted=float(scores.mean()),
        expected_calibration_error=ece,
        reliability=reliability_bins,
        note="ROC AUC undefined: every label has the same class" if single_class else None,
        estimated=_beside_estimate(realized, estimate),
    )


def _training_aucs(evaluation: Evaluation, model: ModelSettings) -> None:
    """Add each served version's training test AUC, and the current champion's."""
    registry = ModelRegistry.from_settings()

    def test_auc(version: str) -> float | None:
        try:
            found = registry.find(model.name, version=version)
            if found is None or not found.run_id:
                return None
            value = registry.client.get_run(found.run_id).data.metrics.get("test_roc_auc")
        except Exception:  # a version from another registry or deleted: say so, not crash
            return None
        return float(value) if value is not None else None

    for version, values in evaluation.by_version.items():
        values["training_test_roc_auc"] = test_auc(version)
    champion = registry.find(model.name, alias=model.alias)
    if champion is not None:
        evaluation.champion = {
            "version": champion.version,
            "training_test_roc_auc": test_auc(champion.version),
        }


def run_evaluation(request: EvaluateRequest) -> EvaluateOutcome:
    """Evaluate the window's predictions against the labels that have arrived.

    Writes evaluation.json when ``out_dir`` is given and records the AUC and the champion
    for Prometheus (:mod:`core.stage_metrics`).

    Raises:
        InputError: Nothing to evaluate: no prediction in the window, no label matched.
    """
    data = DataSettings()
    predictions, bounds = read_prediction_log(
        data.prediction_log_path, window=request.window, until=request.until
    )
    # Only the labels a prediction of the window can match: from max_label_age before it.
    location = request.labels or str(data.labels_path)
    start, end = bounds[0] - pd.Timedelta(request.max_label_age), bounds[1]
    if "://" in location:  # a location the cluster reads: the profile's backend reads it
        with feature_store_session(request.feast) as store:
            compute = offline_compute(store)
            label_window = read_label_window(location, start=start, end=end, compute=compute)
    else:  # a local table needs no feature store
        label_window = read_label_window(location, start=start, end=end)
    joined = join_labels(predictions, label_window, max_label_age=request.max_label_age)
    try:
        reference = champion_reference(request.model)
    except Exception:  # the realized figures stand without it; the interval is then noise only
        reference = None
    evaluation = evaluate_predictions(
        joined,
        window=(bounds[0].isoformat(), bounds[1].isoformat()),
        min_rows=request.settings.min_window_rows,
        confidence=request.settings.estimate_confidence,
        term=reference.term() if reference is not None else CalibrationTerm(),
    )
    _training_aucs(evaluation, request.model)
    json_path = None
    if request.out_dir is not None:
        request.out_dir.mkdir(parents=True, exist_ok=True)
        json_path = request.out_dir / "evaluation.json"
        write_text_atomically(json_path, json.dumps(evaluation.to_dict(), indent=2) + "\n")
    roc_auc, min_auc = evaluation.roc_auc, request.min_auc
    record_evaluation(roc_auc=roc_auc, matched=evaluation.matched, min_auc=min_auc)
    _publish_beside_estimate(evaluation)
    record_champion_from_registry(
        request.model.name,
        alias=request.model.alias,
        tracking_uri=MlflowSettings().resolved_tracking_uri(),
    )
    below = (
        min_auc is not None and evaluation.status == "ok" and (roc_auc is None or roc_auc < min_auc)
    )
    return EvaluateOutcome(evaluation=evaluation, json_path=json_path, below_min_auc=below)


def _publish_beside_estimate(evaluation: Evaluation) -> None:
    """Realized and estimated figures of the window, for the disagreement alert."""
    from prometheus_client import CollectorRegistry, Gauge

    from core.stage_metrics import publish_stage_metrics

    registry = CollectorRegistry()
    estimated = Gauge(
        "churn_evaluate_estimated_performance",
        "Estimated without labels for the evaluated predictions: bound estimate, low, high",
        ["metric", "bound"],
        registry=registry,
    )
    realized = Gauge(
        "churn_evaluate_realized_performance",
        "Realized on the landed labels of the evaluated predictions",
        ["metric"],
        registry=registry,
    )
    for name, row in evaluation.estimated.items():
        for bound in ("estimate", "low", "high"):
            estimated.labels(metric=name, bound=bound).set(row[bound])
        if row["realized"] is not None:
            realized.labels(metric=name).set(row["realized"])
    Gauge(
        "churn_evaluate_sufficient",
        "1 when enough labelled predictions for a figure, else 0",
        registry=registry,
    ).set(1 if evaluation.status == "ok" else 0)
    publish_stage_metrics("evaluate_estimate", registry)
