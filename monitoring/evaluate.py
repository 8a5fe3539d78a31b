"""Stage: ``churn evaluate``, how well the served model did once the labels arrived.

Join policy: a prediction is scored against the label of the snapshot it was served from,
that is the user's latest label whose ``event_timestamp`` (the snapshot time) is at or
before the prediction time, and at most ``--max-label-age`` older (default 7 days).
Serving reads the latest materialized snapshot, so this is the label of the features the
model saw. Predictions without such a label are counted as unmatched and left out.

Exit codes: 0 evaluated, 4 ROC AUC below ``--min-auc`` (only when given), 2 bad input or
nothing to evaluate (no prediction in the window, no label matched), 1 other failures.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.options import ProfileOption, profile_settings
from core.errors import InputError
from core.exits import ExitCode
from core.files import write_text_atomically
from core.settings import DataSettings, MlflowSettings
from monitoring.settings import MonitoringSettings

if TYPE_CHECKING:
    import pandas as pd


TIMESTAMP = "event_timestamp"
LABEL_TIMESTAMP = "label_timestamp"
RELIABILITY_BINS = 10


@dataclass
class ReliabilityBin:
    """One bin of the reliability diagram (predicted probability vs observed rate)."""

    low: float
    high: float
    count: int
    mean_predicted: float | None
    observed_rate: float | None


@dataclass
class Evaluation:
    """Performance of served predictions whose labels have arrived."""

    window: list[str]
    predictions: int
    matched: int
    unmatched: int
    roc_auc: float | None
    brier: float
    log_loss: float
    base_rate: float
    mean_predicted: float
    expected_calibration_error: float
    reliability: list[ReliabilityBin]
    by_version: dict[str, dict[str, Any]] = field(default_factory=dict)
    champion: dict[str, Any] = field(default_factory=dict)
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``evaluation.json``)."""
        return asdict(self)


class EvaluationInputError(InputError):
    """Nothing can be evaluated as asked."""


def join_labels(
    predictions: pd.DataFrame, labels: pd.DataFrame, *, max_label_age: timedelta
) -> pd.DataFrame:
    """Attach to each prediction the label of its user's latest snapshot before it.

    Returns the predictions with ``label`` and ``label_timestamp`` (NaN / NaT when no label
    within ``max_label_age``), in the predictions' order.
    """
    import pandas as pd

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
    location: str, *, start: pd.Timestamp, end: pd.Timestamp, store: Any = None
) -> pd.DataFrame:
    """The labels whose snapshot time is in ``[start, end]``: user, time and label only.

    Without ``store`` a local table is scanned here with the time filter pushed down. With
    a spark-profile ``store`` the executors filter the table at ``location`` (any location
    the cluster reads, ``s3a://...``) and stage the window, read back in bounded Arrow
    batches. The whole table never reaches this process.

    Raises:
        EvaluationInputError: The table is missing or lacks a column, ``store`` is not on
            the spark profile, or the window holds no label.
    """
    import pandas as pd

    from core.compute import uses_spark
    from core.tables import TableReadError, read_time_window

    columns = ["user_id", TIMESTAMP, "label"]
    if store is not None:
        if not uses_spark(store):
            raise EvaluationInputError(
                f"labels at {location}: a location only the cluster reads needs --profile spark"
            )
        parts = _label_window_on_spark(store, location, columns, start=start, end=end)
        frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    else:
        try:
            frame = read_time_window(location, columns, start=start, end=end)
        except TableReadError as error:
            raise EvaluationInputError(f"labels {error}") from error
    if frame.empty:
        raise EvaluationInputError(
            f"no label between {start} and {end} in {location} (labels arrive after the "
            "outcome is known; try an earlier --until or a larger --max-label-age)"
        )
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    return frame


def _label_window_on_spark(
    store: Any, location: str, columns: list[str], *, start: pd.Timestamp, end: pd.Timestamp
) -> list[pd.DataFrame]:
    from pyspark.sql import functions as F

    from core.compute.spark.io import (
        iter_arrow_batches,
        spark_session,
        spark_uri,
        staged_parquet,
        staging_location,
    )

    try:
        labels = spark_session(store).read.parquet(spark_uri(location))
    except Exception as error:  # Spark's AnalysisException for a missing path
        raise EvaluationInputError(f"labels table {location} is not readable: {error}") from error
    missing = [column for column in columns if column not in labels.columns]
    if missing:
        raise EvaluationInputError(f"labels table {location} lacks {', '.join(missing)}")
    stamp = F.col(TIMESTAMP).cast("timestamp")
    window = labels.where(
        (stamp >= F.lit(start.to_pydatetime())) & (stamp <= F.lit(end.to_pydatetime()))
    ).select(F.col("user_id"), stamp.alias(TIMESTAMP), F.col("label"))
    with staged_parquet(window, staging_location(store), label="labels") as uri:
        return [batch.to_pandas() for batch in iter_arrow_batches(uri) if batch.num_rows]


def _reliability(labels: Any, scores: Any, bins: int) -> tuple[list[ReliabilityBin], float]:
    import numpy as np

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


def evaluate_predictions(
    joined: pd.DataFrame, *, window: tuple[Any, Any], bins: int = RELIABILITY_BINS
) -> Evaluation:
    """ROC AUC, Brier score, log loss and reliability of the labelled predictions.

    Raises:
        EvaluationInputError: No prediction has a label yet.
    """
    import numpy as np
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    labelled = joined.dropna(subset=["label"])
    if labelled.empty:
        raise EvaluationInputError(
            f"none of the {len(joined)} predictions has a label yet (labels arrive after "
            "the outcome is known; try an earlier --until or a larger --max-label-age)"
        )
    labels = labelled["label"].to_numpy(dtype=np.int64)
    scores = labelled["churn_probability"].to_numpy(dtype=np.float64)
    single_class = len(np.unique(labels)) < 2
    reliability, ece = _reliability(labels, scores, bins)
    by_version: dict[str, dict[str, Any]] = {}
    if "model_version" in labelled.columns:
        for version, part in labelled.groupby(labelled["model_version"].astype(str)):
            part_labels = part["label"].to_numpy(dtype=np.int64)
            by_version[str(version)] = {
                "rows": len(part),
                "roc_auc": float(roc_auc_score(part_labels, part["churn_probability"]))
                if len(np.unique(part_labels)) == 2
                else None,
            }
    return Evaluation(
        window=[str(window[0]), str(window[1])],
        predictions=len(joined),
        matched=len(labelled),
        unmatched=len(joined) - len(labelled),
        roc_auc=None if single_class else float(roc_auc_score(labels, scores)),
        brier=float(brier_score_loss(labels, scores)),
        log_loss=float(log_loss(labels, np.clip(scores, 1e-15, 1 - 1e-15), labels=[0, 1])),
        base_rate=float(labels.mean()),
        mean_predicted=float(scores.mean()),
        expected_calibration_error=ece,
        reliability=reliability,
        by_version=by_version,
        note="ROC AUC undefined: every label has the same class" if single_class else None,
    )


def _training_aucs(evaluation: Evaluation, settings: MonitoringSettings) -> None:
    """Add each served version's training test AUC, and the current champion's."""
    import mlflow

    from core.settings import MlflowSettings
    from training import alias_version

    mlflow.set_tracking_uri(MlflowSettings().prepare())
    client = mlflow.MlflowClient()

    def test_auc(version: str) -> float | None:
        try:
            model_version = client.get_model_version(settings.model_name, version)
            if not model_version.run_id:
                return None
            value = client.get_run(model_version.run_id).data.metrics.get("test_roc_auc")
        except Exception:  # a version from another registry or deleted: say so, not crash
            return None
        return float(value) if value is not None else None

    for version, values in evaluation.by_version.items():
        values["training_test_roc_auc"] = test_auc(version)
    champion = alias_version(client, settings.model_name, settings.model_alias)
    if champion is not None:
        evaluation.champion = {
            "version": str(champion.version),
            "training_test_roc_auc": test_auc(str(champion.version)),
        }


def _print_evaluation(evaluation: Evaluation) -> None:
    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    typer.echo(
        f"window {evaluation.window[0]} - {evaluation.window[1]}: {evaluation.predictions} "
        f"predictions, {evaluation.matched} with labels, {evaluation.unmatched} without"
    )
    typer.echo(
        f"ROC AUC {number(evaluation.roc_auc)}  Brier {evaluation.brier:.4f}  log loss "
        f"{evaluation.log_loss:.4f}  ECE {evaluation.expected_calibration_error:.4f}  "
        f"churn rate {evaluation.base_rate:.3f} vs mean prediction "
        f"{evaluation.mean_predicted:.3f}"
    )
    for version, values in evaluation.by_version.items():
        typer.echo(
            f"  version {version}: {values['rows']} rows, ROC AUC {number(values['roc_auc'])} "
            f"(training test AUC {number(values.get('training_test_roc_auc'))})"
        )
    if evaluation.champion:
        typer.echo(
            f"  champion: version {evaluation.champion['version']}, training test AUC "
            f"{number(evaluation.champion['training_test_roc_auc'])}"
        )
    typer.echo("  reliability (predicted -> observed):")
    for item in evaluation.reliability:
        if item.count:
            typer.echo(
                f"    [{item.low:.1f}, {item.high:.1f}) n={item.count:<6} "
                f"{number(item.mean_predicted)} -> {number(item.observed_rate)}"
            )
    if evaluation.note:
        typer.echo(f"note: {evaluation.note}")


def _record_metrics(
    evaluation: Evaluation, *, min_auc: float | None, settings: MonitoringSettings
) -> None:
    """AUC on landed labels and the champion for Prometheus (core.stage_metrics)."""
    from core.stage_metrics import record_champion_from_registry, record_evaluation

    record_evaluation(roc_auc=evaluation.roc_auc, matched=evaluation.matched, min_auc=min_auc)
    record_champion_from_registry(
        settings.model_name,
        alias=settings.model_alias,
        tracking_uri=MlflowSettings().resolved_tracking_uri(),
    )


def evaluate_command(
    window: Annotated[str, typer.Option(help="Predictions of the last window, e.g. 7d.")] = "7d",
    until: Annotated[
        datetime | None,
        typer.Option(help="End of the window (default: the newest prediction)."),
    ] = None,
    max_label_age: Annotated[
        str, typer.Option(help="Oldest label (snapshot) a prediction may be matched to.")
    ] = "7d",
    labels: Annotated[
        str | None,
        typer.Option(
            help="Labels Parquet (default: the offline labels table); on the spark profile "
            "any location the cluster reads (s3a://...)."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Folder to write evaluation.json into.")] = None,
    min_auc: Annotated[
        float | None, typer.Option(help="Exit 4 when the ROC AUC is below this.")
    ] = None,
    profile: ProfileOption = None,
) -> None:
    """ROC AUC and calibration of served predictions whose labels have arrived.

    Exit code 0: evaluated; 4: ROC AUC below --min-auc; 2: nothing to evaluate; 1: failure.
    """
    import pandas as pd

    from cli.errors import exit_on_error
    from core.feast_store import feature_store_session
    from monitoring.snapshots import read_prediction_log
    from monitoring.windows import parse_window

    with exit_on_error(also_bad_input=(ValueError,)):
        settings = MonitoringSettings()
        span, tolerance = parse_window(window), parse_window(max_label_age)
        predictions, bounds = read_prediction_log(
            DataSettings().prediction_log_path, window=span, until=until
        )
        # Only the labels a prediction of the window can match: from max_label_age before it.
        location = labels or str(DataSettings().labels_path)
        start, end = bounds[0] - pd.Timedelta(tolerance), bounds[1]
        if "://" in location:  # a location the cluster reads
            with feature_store_session(profile_settings(profile)) as store:
                label_window = read_label_window(location, start=start, end=end, store=store)
        else:  # a local table needs no feature store
            label_window = read_label_window(location, start=start, end=end)
        joined = join_labels(predictions, label_window, max_label_age=tolerance)
        evaluation = evaluate_predictions(
            joined, window=(bounds[0].isoformat(), bounds[1].isoformat())
        )
        _training_aucs(evaluation, settings)
    _print_evaluation(evaluation)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        path = out / "evaluation.json"
        write_text_atomically(path, json.dumps(evaluation.to_dict(), indent=2) + "\n")
        typer.echo(f"json: {path}")
    _record_metrics(evaluation, min_auc=min_auc, settings=settings)
    below = min_auc is not None and (evaluation.roc_auc is None or evaluation.roc_auc < min_auc)
    raise typer.Exit(ExitCode.FINDING if below else ExitCode.OK)
