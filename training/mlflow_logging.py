"""What a training run records in MLflow: config, lineage, data report, trials, model.

Every function writes to the active run (or, for trials, nested runs of it); none decides
anything. The lineage written here is core.lineage's contract, which serving, batch
scoring and drift parse back.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
import pandas as pd
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import Metric, Param
from mlflow.models import infer_signature
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from sklearn.base import ClassifierMixin

from core.calibration import CalibrationChoice, reliability
from core.errors import UntrustedModelError
from core.lineage import ModelLineage, TimeWindow, TrainingWindow
from core.model_checks import CHECK_ROWS_ARTIFACT, select_check_rows
from core.model_trust import TRUSTED_TYPES, untrusted_types_of
from core.models import mlflow_client
from training.config import TrainingConfig
from training.dataset import DatasetReport, TrainingSet, report_as_params
from training.global_view import log_mean_contributions
from training.models import feature_importances
from training.split import TimeSplit
from training.tuning import StudySpec, redact_storage_url

_EXAMPLE_ROWS = 5


def config_params(config: TrainingConfig, spec: StudySpec) -> dict[str, Any]:
    """The run's options as MLflow params (the storage URL without its password)."""
    return {
        "model_family": config.model_family,
        "seed": config.seed,
        "trials": config.trials,
        "timeout": config.timeout,
        "workers": config.workers,
        "min_auc": config.min_auc,
        "missing_policy": config.missing,
        "label_column": config.label_column,
        "optuna.storage": redact_storage_url(config.storage),
        "optuna.study_name": spec.study_name,
    }


def log_data_report(report: DatasetReport) -> None:
    """The training set's report: params, the leakage count, and missing values per feature."""
    mlflow.log_params(report_as_params(report))
    mlflow.log_metrics({"data.leakage_rows": report.leakage_rows})
    mlflow.log_dict(
        {"missing_by_feature": report.missing_by_feature, "audited": report.audited_features},
        "data_report.json",
    )


def training_window(split: TimeSplit, labels_path: Path) -> TrainingWindow:
    """The typed window of a split (core.lineage), for the run's tags."""
    bounds = split.boundaries()

    def part(name: str) -> TimeWindow:
        return TimeWindow(
            start=to_datetime(bounds[f"data.{name}_start"]),
            end=to_datetime(bounds[f"data.{name}_end"]),
        )

    return TrainingWindow(
        labels_path=labels_path.resolve(), train=part("train"), val=part("val"), test=part("test")
    )


def to_datetime(value: str) -> datetime:
    """An ISO time as an aware datetime (to the microsecond, datetime's resolution)."""
    return pd.Timestamp(value).floor("us").to_pydatetime()


def log_lineage(training_set: TrainingSet, split: TimeSplit, config: TrainingConfig) -> None:
    """Lineage logged as both params and tags of the parent run.

    Tags carry the contract (core.lineage) for readers; params make the same values
    searchable and comparable across runs in the MLflow UI.
    """
    frame = training_set.frame
    counts = split.row_counts()
    report = training_set.report
    lineage: dict[str, Any] = {
        **ModelLineage(
            feature_service=training_set.features.service,
            features=tuple(training_set.feature_names),
            project=training_set.project,
        ).to_tags(),
        **training_window(split, config.resolved_labels_path()).to_tags(),
        "feast.feature_refs": ",".join(training_set.features.refs),
        "feast.repo_path": str(config.feast_settings().repo_path),
        "data.labels_start": frame["event_timestamp"].min().isoformat(),
        "data.labels_end": frame["event_timestamp"].max().isoformat(),
        "data.rows": report.rows,
        "data.rows_train": counts["train"],
        "data.rows_val": counts["val"],
        "data.rows_test": counts["test"],
        "data.sha256": training_set.fingerprint(),
    }
    mlflow.log_params(lineage)
    mlflow.set_tags(lineage)


def log_dataset_input(training_set: TrainingSet, config: TrainingConfig) -> None:
    """Record the training set as the run's dataset input (name, digest, schema, source)."""
    # The set is produced by code (Feast's point-in-time join of the labels), not read from
    # one file, so its source names the inputs.
    source = CodeDatasetSource(
        tags={
            "feast.feature_service": training_set.features.service,
            "feast.project": training_set.project,
            "labels": str(config.resolved_labels_path().resolve()),
        }
    )
    with warnings.catch_warnings():
        # Keys and labels are integers by contract; MLflow hints about integer columns.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        dataset = from_pandas(
            training_set.frame,
            name=f"{training_set.features.service}-training-set",
            targets=training_set.label_column,
            source=source,
        )
        mlflow.log_input(dataset, context="training")  # the schema is inferred here


def log_trials(
    study: optuna.Study, *, experiment_id: str, parent_run_id: str, tracking_uri: str
) -> None:
    """Record every finished trial of the study as a nested run of the parent."""
    client = mlflow_client(tracking_uri)
    for trial in study.get_trials(deepcopy=False):
        if trial.datetime_start is None or trial.datetime_complete is None:
            continue
        start = int(trial.datetime_start.timestamp() * 1000)
        end = int(trial.datetime_complete.timestamp() * 1000)
        child = client.create_run(
            experiment_id,
            start_time=start,
            run_name=f"trial-{trial.number}",
            tags={
                MLFLOW_PARENT_RUN_ID: parent_run_id,
                "optuna.state": trial.state.name,
                "optuna.worker": str(trial.user_attrs.get("worker", 0)),
            },
        )
        metrics = [
            Metric("val_roc_auc_stage", float(value), end, int(step))
            for step, value in sorted(trial.intermediate_values.items())
        ]
        if trial.value is not None:
            metrics.append(Metric("val_roc_auc", float(trial.value), end, 0))
        params = [Param(name, str(value)) for name, value in trial.params.items()]
        client.log_batch(child.info.run_id, metrics=metrics, params=params)
        client.set_terminated(child.info.run_id, "FINISHED", end_time=end)


def log_importances(
    model: ClassifierMixin, training_set: TrainingSet, split: TimeSplit, seed: int
) -> None:
    """Feature importances on the test rows and the mean contributions (global view)."""
    names, label = training_set.feature_names, training_set.label_column
    importances, method = feature_importances(
        model, split.test[names], split.test[label], seed=seed
    )
    mlflow.log_dict({"method": method, "importances": importances}, "feature_importances.json")
    log_mean_contributions(model, split.test[names])


def log_model(model: ClassifierMixin, training_set: TrainingSet, split: TimeSplit) -> str:
    """Log the model (skops with its trusted types) with signature and input example.

    The trusted types are the fixed list the loaders accept (core.model_trust), never
    ones read off this model: a model needing others could not be loaded, so it fails here.

    Returns:
        The logged model's URI.
    """
    unknown = untrusted_types_of(model)
    if unknown:
        raise UntrustedModelError(
            f"the fitted model needs types the loaders do not trust: {', '.join(unknown)} "
            "(add them to core.model_trust.TRUSTED_TYPES after review)"
        )
    example = split.test[training_set.feature_names].head(_EXAMPLE_ROWS)
    signature = infer_signature(example, model.predict_proba(example))
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        # Given, not inferred: inference re-imports the model in a subprocess (10 s here).
        pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True),
        serialization_format="skops",
        skops_trusted_types=list(TRUSTED_TYPES),
        signature=signature,
        input_example=example,
        pyfunc_predict_fn="predict_proba",
        metadata=ModelLineage(
            feature_service=training_set.features.service,
            features=tuple(training_set.feature_names),
            project=training_set.project,
        ).to_tags(),
    )
    # The file Feast's own MLflow integration attaches to a logged model: its feature refs.
    mlflow.log_text(json.dumps(training_set.features.refs), "feast_features.json")
    _log_check_rows(split.test, training_set.feature_names)
    return str(info.model_uri)


def _log_check_rows(test: pd.DataFrame, features: list[str]) -> None:
    """Leave the test rows for serving, which checks faster inference engines against them."""
    folder, name = CHECK_ROWS_ARTIFACT.rsplit("/", 1)
    with tempfile.TemporaryDirectory(prefix="churn-check-rows-") as scratch:
        path = Path(scratch) / name
        select_check_rows(test, features).to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=folder)


def log_calibration(
    choice: CalibrationChoice,
    *,
    labels: np.ndarray,
    calibrated: np.ndarray,
    uncalibrated: np.ndarray,
    metrics: dict[str, float],
) -> None:
    """The calibrator chosen, the ECE before and after, and the reliability curves (test).

    Adds ``ece`` and ``ece_uncalibrated`` to ``metrics`` (logged by the caller as
    ``test_*``); writes ``calibration/reliability.json`` and ``calibration/reliability.png``.
    """
    curves: dict[str, Any] = {}
    for name, scores in (("calibrated", calibrated), ("uncalibrated", uncalibrated)):
        bins, ece = reliability(labels, scores)
        curves[name] = {"ece": ece, "bins": [asdict(item) for item in bins]}
        metrics["ece" if name == "calibrated" else "ece_uncalibrated"] = ece
    mlflow.log_params({"calibration.method": choice.method, "calibration.rows": choice.rows})
    mlflow.log_metrics(
        {f"calibration.cv_log_loss.{name}": value for name, value in choice.log_loss.items()}
    )
    mlflow.log_dict(
        {"method": choice.method, "window": "test", **curves}, "calibration/reliability.json"
    )
    mlflow.log_figure(_reliability_figure(curves), "calibration/reliability.png")


def _reliability_figure(curves: dict[str, Any]) -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display; a no-op when already selected
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.8, 4.8), dpi=80)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="#999999", linestyle=":", label="perfect")
    for name, curve in curves.items():
        points = [
            (item["mean_predicted"], item["observed_rate"])
            for item in curve["bins"]
            if item["count"]
        ]
        axes.plot(*zip(*points, strict=True), marker="o", label=f"{name} (ECE {curve['ece']:.3f})")
    axes.set_xlabel("mean predicted probability (test window)")
    axes.set_ylabel("observed churn rate")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure
