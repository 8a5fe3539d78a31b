"""The training pipeline: Feast training set -> time split -> Optuna -> refit -> gate -> registry.

``run_training(config)`` is the entry point for the command line and for other components
(the monitoring job's retraining trigger). This module orchestrates the steps; what is
recorded lives in ``training.mlflow_logging`` and who becomes champion in
``training.promotion``. One MLflow parent run records everything: the lineage (feature
service, refs, Feast project, labels, split, data hash, code version), the trials as
nested runs, the metrics, the feature importances and the model. The model is registered
only when its test ROC AUC reaches ``min_auc``; a new version becomes ``challenger`` and is
promoted to ``champion`` when it beats the current champion on this run's test window (or
there is none).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict
from typing import Any

import mlflow
import numpy as np
from feast import FeatureStore
from sklearn.base import ClassifierMixin

from core.calibration import calibrate
from core.errors import InputError
from core.estimate_shift import shift_calibration
from core.estimate_support import range_metrics
from core.feast_store import open_feature_store
from core.lineage import ModelLineage
from core.model_trust import logged_model_sha256
from core.models import ModelRegistry
from core.settings import FeastSettings, MlflowSettings
from core.stage_metrics import record_champion_from_registry, record_training
from training.config import ModelFamily, TrainingConfig, TrainingResult
from training.dataset import TrainingSet, build_training_set
from training.mlflow_logging import (
    config_params,
    log_calibration,
    log_data_report,
    log_dataset_input,
    log_importances,
    log_lineage,
    log_model,
    log_trials,
    to_datetime,
)
from training.models import FAMILIES, build_model, evaluate, limit_threads
from training.promotion import Registration, register_and_promote
from training.split import TimeSplit, split_by_time
from training.tracking import champion_lock, code_version, configure_mlflow, ensure_experiment
from training.tuning import StudySpec, TuningData, count_trials, tune


def open_training_store(feast: FeastSettings, *, tracking_uri: str) -> FeatureStore:
    """Open the feature store (its on-demand code verified) with Feast's MLflow integration on.

    With it, ``get_historical_features`` inside an active run tags the run with the Feast
    project, feature service, views and refs, and uploads the entity frame (the labels),
    whatever the repo's yaml says about MLflow.
    """
    store = open_feature_store(feast)
    config = store.config
    configured = config.mlflow_config if isinstance(config.mlflow_config, dict) else {}
    # Feast reads this block when a retrieval first asks for it, so it takes effect here.
    config.mlflow_config = {
        **configured,
        "enabled": True,
        "tracking_uri": tracking_uri,
        "auto_log": True,
        "auto_log_entity_df": True,
    }
    return store


def run_training(
    config: TrainingConfig, *, mlflow_settings: MlflowSettings | None = None
) -> TrainingResult:
    """Train, evaluate, and (if good enough) register and maybe promote a model.

    Args:
        config: What to train on and how.
        mlflow_settings: Where MLflow keeps runs and models (read from the environment
            when omitted).

    Raises:
        InputError: Bad input or configuration (the command exits with 2).
    """
    # Fitting and scoring (also MLflow's input-example check and permutation importance)
    # use OpenMP; on shared cores more threads than cores made them up to 10x slower.
    with limit_threads(config.threads):
        try:
            result = _run_training(config, mlflow_settings)
        except Exception as error:
            _record_metrics(None, config, mlflow_settings, error=error)
            raise
    _record_metrics(result, config, mlflow_settings)
    return result


def _record_metrics(
    result: TrainingResult | None,
    config: TrainingConfig,
    mlflow_settings: MlflowSettings | None,
    *,
    error: Exception | None = None,
) -> None:
    """Training outcome, test AUC and the champion for Prometheus (core.stage_metrics)."""
    if config.tune_only:
        return
    if result is None:
        outcome = "bad_input" if isinstance(error, InputError) else "failed"
    elif result.below_gate:
        outcome = "below_gate"
    else:
        outcome = "promoted" if result.promoted else "registered"
    test_auc = result.test_roc_auc if result else None
    record_training(outcome=outcome, test_auc=test_auc, min_auc=config.min_auc)
    if result is not None:
        record_champion_from_registry(
            config.model_name,
            tracking_uri=(mlflow_settings or MlflowSettings()).resolved_tracking_uri(),
        )


def _run_training(config: TrainingConfig, mlflow_settings: MlflowSettings | None) -> TrainingResult:
    started = time.monotonic()
    _check_config(config)
    mlflow_settings = mlflow_settings or MlflowSettings()
    tracking_uri = configure_mlflow(mlflow_settings)
    store = open_training_store(config.feast_settings(), tracking_uri=tracking_uri)
    spec = StudySpec(
        study_name=config.study_name
        or f"{config.model_name}-{config.model_family}-{uuid.uuid4().hex[:8]}",
        family=config.model_family,
        seed=config.seed,
        trials=config.trials,
        timeout=config.timeout,
        storage=config.storage,
        threads=config.threads,
        storage_retry_seconds=config.storage_retry_seconds,
    )
    if config.tune_only:
        return _tune_only(store, config, spec, started)

    experiment_id = ensure_experiment(config.resolved_experiment(), mlflow_settings)
    run_name = f"train-{config.model_family}-{time.strftime('%Y%m%d-%H%M%S')}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        run_id = run.info.run_id
        mlflow.set_tags(code_version())
        mlflow.log_params(config_params(config, spec))
        training_set = _build_training_set(store, config)
        split = _split(training_set)
        log_lineage(training_set, split, config)
        log_dataset_input(training_set, config)

        tuning_started = time.monotonic()
        study = tune(
            _tuning_data(training_set, split),
            spec,
            workers=config.workers,
            progress=config.progress,
        )
        tuning_seconds = time.monotonic() - tuning_started
        log_trials(
            study, experiment_id=experiment_id, parent_run_id=run_id, tracking_uri=tracking_uri
        )
        complete, pruned = count_trials(study)
        if complete == 0:
            raise InputError(
                f"no tuning trial finished ({pruned} pruned) within --timeout "
                f"{config.timeout} s: allow more time or trials"
            )
        best = study.best_trial
        mlflow.log_params(best.params)
        mlflow.log_metrics(
            {
                "val_roc_auc": float(best.value or 0.0),
                "val_pr_auc": float(best.user_attrs.get("val_pr_auc", float("nan"))),
                "val_brier": float(best.user_attrs.get("val_brier", float("nan"))),
                "trials_complete": complete,
                "trials_pruned": pruned,
                "tuning_seconds": tuning_seconds,
                "trials_per_minute": 60.0 * (complete + pruned) / max(tuning_seconds, 1e-9),
            }
        )

        model, inner_model, test_metrics = _refit_and_test(
            training_set, split, best.params, family=config.model_family, seed=config.seed
        )
        mlflow.log_metrics({f"test_{name}": value for name, value in test_metrics.items()})
        log_importances(inner_model, training_set, split, config.seed)
        model_uri = log_model(model, training_set, split)

        test_auc = test_metrics["roc_auc"]
        registration: Registration | None = None
        if test_auc is None or test_auc < config.min_auc:
            reason = (
                f"test ROC AUC {test_metrics['roc_auc']:.4f} is below the gate "
                f"{config.min_auc:.4f}: not registered"
            )
            mlflow.set_tags({"gate.passed": "false", "gate.reason": reason})
        else:
            mlflow.set_tag("gate.passed", "true")
            lineage = _model_lineage(
                training_set, split, test_auc, model_uri, tracking_uri=tracking_uri
            )
            with champion_lock(config.model_name, mlflow_settings):
                registration = register_and_promote(
                    ModelRegistry(tracking_uri),
                    model_name=config.model_name,
                    model_uri=model_uri,
                    run_id=run_id,
                    lineage=lineage,
                    training_set=training_set,
                    split=split,
                )
            reason = registration.reason
            mlflow.set_tag("registry.outcome", reason)
        total_seconds = time.monotonic() - started
        mlflow.log_metric("total_seconds", total_seconds)
    return TrainingResult(
        run_id=run_id,
        experiment_id=experiment_id,
        test_roc_auc=test_auc,
        val_roc_auc=float(best.value or 0.0),
        registered=registration is not None,
        version=registration.version if registration else None,
        promoted=registration.promoted if registration else False,
        reason=reason,
        best_params=dict(best.params),
        model_name=config.model_name,
        study_name=spec.study_name,
        trials_complete=complete,
        trials_pruned=pruned,
        rows=split.row_counts(),
        champion_test_roc_auc=registration.champion_test_roc_auc if registration else None,
        below_gate=registration is None,
        tuning_seconds=tuning_seconds,
        total_seconds=total_seconds,
        data_report=asdict(training_set.report),
    )


def _model_lineage(
    training_set: TrainingSet,
    split: TimeSplit,
    test_auc: float,
    model_uri: str,
    *,
    tracking_uri: str,
) -> ModelLineage:
    """The registered version's lineage (core.lineage), checked by every loader."""
    bounds = split.boundaries()
    return ModelLineage(
        feature_service=training_set.features.service,
        features=tuple(training_set.feature_names),
        project=training_set.project,
        test_start=to_datetime(bounds["data.test_start"]),
        test_end=to_datetime(bounds["data.test_end"]),
        test_roc_auc=test_auc,
        artifact_sha256=logged_model_sha256(model_uri, tracking_uri),
        # The fill missing-value policy's values (core.missing_values): recorded with
        # every version, so a service can switch to fill without retraining.
        fill_values={
            name: float(value)
            for name, value in split.train[training_set.feature_names].median().items()
        },
    )


def _check_config(config: TrainingConfig) -> None:
    family = FAMILIES[config.model_family]
    if config.missing == "keep" and not family.handles_missing:
        raise InputError(
            f"--missing keep needs a model family that handles missing values; "
            f"{config.model_family} does not (use hist_gradient_boosting or --missing drop)"
        )
    if config.tune_only and not (config.storage and config.study_name):
        raise InputError("--tune-only joins a shared study: give --storage and --study-name")


def _build_training_set(
    store: FeatureStore, config: TrainingConfig, *, log: bool = True
) -> TrainingSet:
    """Build the training set (logging its report on the active run) and refuse leakage."""
    training_set = build_training_set(
        store,
        feature_service=config.feature_service,
        labels_path=config.resolved_labels_path(),
        label_column=config.label_column,
        missing=config.missing,
    )
    report = training_set.report
    if log:
        log_data_report(report)
    if report.leakage_rows:
        raise InputError(
            f"point-in-time audit: {report.leakage_rows} row(s) use a feature value newer "
            "than their label time; refusing to train"
        )
    return training_set


def _split(training_set: TrainingSet) -> TimeSplit:
    split = split_by_time(training_set.frame)
    label = training_set.label_column
    for part, frame in (("train", split.train), ("val", split.val), ("test", split.test)):
        if frame[label].nunique() < 2:
            raise InputError(
                f"the {part} part ({len(frame)} rows) has only one label class; ROC AUC "
                "needs both (more labels, or a longer time range)"
            )
    return split


def _tuning_data(training_set: TrainingSet, split: TimeSplit) -> TuningData:
    names, label = training_set.feature_names, training_set.label_column
    return TuningData(
        x_train=split.train[names],
        y_train=split.train[label],
        x_val=split.val[names],
        y_val=split.val[label],
    )


def _refit_and_test(
    training_set: TrainingSet,
    split: TimeSplit,
    params: dict[str, Any],
    *,
    family: ModelFamily,
    seed: int,
) -> tuple[ClassifierMixin, ClassifierMixin, dict[str, float]]:
    """Fit on the training window, calibrate on the validation window, evaluate on test.

    The model is fitted on the training rows only, so the validation rows it never saw
    can fit the calibrator (core.calibration). The test window measures both: the
    calibrated model's figures are the run's ``test_*`` metrics, the model's own ones
    ``test_*_uncalibrated``, with the reliability curves and ECE of both.

    Returns:
        The calibrated model (what is registered), the model inside it, and the metrics.
    """
    names, label = training_set.feature_names, training_set.label_column
    model = build_model(family, params, seed=seed)
    fit_started = time.monotonic()
    model.fit(split.train[names], split.train[label])
    mlflow.log_metric("refit_seconds", time.monotonic() - fit_started)
    calibrated, choice = calibrate(model, split.val[names], split.val[label], seed=seed)
    metrics = evaluate(calibrated, split.test[names], split.test[label])
    uncalibrated = evaluate(model, split.test[names], split.test[label])
    metrics.update({f"{name}_uncalibrated": value for name, value in uncalibrated.items()})
    probabilities = calibrated.predict_proba(split.test[names])[:, 1]
    log_calibration(
        choice,
        labels=split.test[label].to_numpy(),
        calibrated=probabilities,
        uncalibrated=model.predict_proba(split.test[names])[:, 1],
        metrics=metrics,
    )
    # The bias a shifted window adds to label-free estimates (core.estimate_shift): carried
    # with the version as test_estimate_*, widening every estimate's interval.
    shift = shift_calibration(
        split.test[label].to_numpy(),
        probabilities,
        {
            name: split.test[name].to_numpy(dtype=np.float64)
            for name in names
            if np.issubdtype(split.test[name].dtype, np.number)
        },
        seed=seed,
    )
    metrics.update(shift.metrics())
    # Each feature's range over the training set (core.estimate_support): where a window's
    # rows leave it, estimates of this version claim no figure.
    mlflow.log_metrics(
        range_metrics(
            {
                name: training_set.frame[name].to_numpy(dtype=np.float64)
                for name in names
                if np.issubdtype(training_set.frame[name].dtype, np.number)
            }
        )
    )
    return calibrated, model, metrics


def _tune_only(
    store: FeatureStore, config: TrainingConfig, spec: StudySpec, started: float
) -> TrainingResult:
    """Add trials to a shared study without refitting or registering (a helper worker)."""
    training_set = _build_training_set(store, config, log=False)  # no MLflow run here
    split = _split(training_set)
    tuning_started = time.monotonic()
    study = tune(
        _tuning_data(training_set, split), spec, workers=config.workers, progress=config.progress
    )
    complete, pruned = count_trials(study)
    return TrainingResult(
        run_id=None,
        test_roc_auc=None,
        registered=False,
        version=None,
        promoted=False,
        reason=f"tune-only: study {spec.study_name} has {complete} complete, {pruned} pruned",
        val_roc_auc=study.best_value if complete else None,
        best_params=dict(study.best_params) if complete else {},
        model_name=config.model_name,
        study_name=spec.study_name,
        trials_complete=complete,
        trials_pruned=pruned,
        rows=split.row_counts(),
        data_report=asdict(training_set.report),
        tuning_seconds=time.monotonic() - tuning_started,
        total_seconds=time.monotonic() - started,
    )
