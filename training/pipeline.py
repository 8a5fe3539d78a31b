"""The training pipeline: Feast training set -> time split -> Optuna -> refit -> gate -> registry.

``run_training(config)`` is the entry point for the command line and for other components
(the monitoring job's retraining trigger). One MLflow parent run records everything: the
lineage (feature service, refs, Feast project, labels, split, data hash, code version),
the trials as nested runs, the metrics, the feature importances and the model. The model
is registered only when its test ROC AUC reaches ``min_auc``; a new version becomes
``challenger`` and is promoted to ``champion`` when it beats the current champion on this
run's test window (or there is none).
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from core.model_trust import (
    HASH_TAG,
    UntrustedModelError,
    load_registered_model,
    logged_model_sha256,
)
from training.config import ModelFamily, TrainingConfig, TrainingError, TrainingResult
from training.dataset import TrainingSet, build_training_set, report_as_params
from training.models import (
    FAMILIES,
    build_model,
    evaluate,
    feature_importances,
    limit_threads,
)
from training.registry import (
    CHAMPION,
    alias_version,
    register_version,
    set_challenger,
    set_champion,
)
from training.split import TimeSplit, split_by_time
from training.tracking import (
    MlflowSettings,
    champion_lock,
    code_version,
    configure_mlflow,
    ensure_experiment,
)
from training.tuning import StudySpec, TuningData, count_trials, redact_storage_url, tune

if TYPE_CHECKING:
    import optuna
    from feast import FeatureStore
    from sklearn.base import ClassifierMixin

    from core.settings import FeastSettings

_EXAMPLE_ROWS = 5


def open_training_store(feast: FeastSettings, *, tracking_uri: str) -> FeatureStore:
    """Open the feature store with Feast's MLflow integration switched on.

    With it, ``get_historical_features`` inside an active run tags the run with the Feast
    project, feature service, views and refs, and uploads the entity frame (the labels),
    whatever the repo's yaml says about MLflow.
    """
    from feast import FeatureStore

    from core.feast_store import load_repo_config

    config = load_repo_config(feast)
    configured = config.mlflow_config if isinstance(config.mlflow_config, dict) else {}
    config.mlflow_config = {
        **configured,
        "enabled": True,
        "tracking_uri": tracking_uri,
        "auto_log": True,
        "auto_log_entity_df": True,
    }
    store = FeatureStore(repo_path=str(feast.repo_path), config=config)
    # Feast executes the on-demand views' code stored in the registry: only the repo's.
    from core.feast_trust import OnDemandSourceMismatch, check_on_demand_sources

    try:
        check_on_demand_sources(store, feast.repo_path)
    except OnDemandSourceMismatch as error:
        raise TrainingError(str(error)) from error
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
        TrainingError: Bad input or configuration (the command exits with 2).
    """
    # Fitting and scoring (also MLflow's input-example check and permutation importance)
    # use OpenMP; on shared cores more threads than cores made them up to 10x slower.
    with limit_threads(config.threads):
        try:
            result = _run_training(config, mlflow_settings)
        except Exception as error:
            _record_metrics(None, config, error=error)
            raise
    _record_metrics(result, config)
    return result


def _record_metrics(
    result: TrainingResult | None, config: TrainingConfig, *, error: Exception | None = None
) -> None:
    """Training outcome, test AUC and the champion for Prometheus (core.stage_metrics)."""
    from core.stage_metrics import record_champion_from_registry, record_training

    if config.tune_only:
        return
    if result is None:
        outcome = "bad_input" if isinstance(error, TrainingError) else "failed"
    elif result.below_gate:
        outcome = "below_gate"
    else:
        outcome = "promoted" if result.promoted else "registered"
    test_auc = result.test_roc_auc if result else None
    record_training(outcome=outcome, test_auc=test_auc, min_auc=config.min_auc)
    if result is not None:
        record_champion_from_registry(config.model_name)


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

    import mlflow

    experiment_id = ensure_experiment(config.resolved_experiment(), mlflow_settings)
    run_name = f"train-{config.model_family}-{time.strftime('%Y%m%d-%H%M%S')}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        run_id = run.info.run_id
        mlflow.set_tags(code_version())
        mlflow.log_params(_config_params(config, spec))
        training_set = _build_training_set(store, config)
        split = _split(training_set)
        lineage = _lineage(training_set, split, config)
        mlflow.log_params(lineage)
        mlflow.set_tags(lineage)
        _log_dataset_input(training_set, config)

        tuning_started = time.monotonic()
        study = tune(
            _tuning_data(training_set, split),
            spec,
            workers=config.workers,
            progress=config.progress,
        )
        tuning_seconds = time.monotonic() - tuning_started
        _log_trials(study, experiment_id=experiment_id, parent_run_id=run_id)
        complete, pruned = count_trials(study)
        if complete == 0:
            raise TrainingError(
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

        model, test_metrics = _refit_and_test(
            training_set, split, best.params, family=config.model_family, seed=config.seed
        )
        mlflow.log_metrics({f"test_{name}": value for name, value in test_metrics.items()})
        _log_importances(model, training_set, split, config.seed)
        model_uri = _log_model(model, training_set, split)

        result = TrainingResult(
            run_id=run_id,
            experiment_id=experiment_id,
            test_roc_auc=test_metrics["roc_auc"],
            val_roc_auc=float(best.value or 0.0),
            registered=False,
            version=None,
            promoted=False,
            reason="",
            best_params=dict(best.params),
            model_name=config.model_name,
            study_name=spec.study_name,
            trials_complete=complete,
            trials_pruned=pruned,
            rows=split.row_counts(),
            tuning_seconds=tuning_seconds,
            data_report=asdict(training_set.report),
        )
        if result.test_roc_auc is None or result.test_roc_auc < config.min_auc:
            result.below_gate = True
            result.reason = (
                f"test ROC AUC {test_metrics['roc_auc']:.4f} is below the gate "
                f"{config.min_auc:.4f}: not registered"
            )
            mlflow.set_tags({"gate.passed": "false", "gate.reason": result.reason})
        else:
            mlflow.set_tag("gate.passed", "true")
            with champion_lock(config.model_name):
                _register_and_promote(result, model_uri, training_set, split, config)
            mlflow.set_tag("registry.outcome", result.reason)
        result.total_seconds = time.monotonic() - started
        mlflow.log_metric("total_seconds", result.total_seconds)
    return result


def _check_config(config: TrainingConfig) -> None:
    family = FAMILIES[config.model_family]
    if config.missing == "keep" and not family.handles_missing:
        raise TrainingError(
            f"--missing keep needs a model family that handles missing values; "
            f"{config.model_family} does not (use hist_gradient_boosting or --missing drop)"
        )
    if config.tune_only and not (config.storage and config.study_name):
        raise TrainingError("--tune-only joins a shared study: give --storage and --study-name")


def _config_params(config: TrainingConfig, spec: StudySpec) -> dict[str, Any]:
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


def _build_training_set(
    store: FeatureStore, config: TrainingConfig, *, log: bool = True
) -> TrainingSet:
    """Build the training set (logging its report on the active run) and refuse leakage."""
    import mlflow

    training_set = build_training_set(
        store,
        feature_service=config.feature_service,
        labels_path=config.resolved_labels_path(),
        label_column=config.label_column,
        missing=config.missing,
    )
    report = training_set.report
    if log:
        mlflow.log_params(report_as_params(report))
        mlflow.log_metrics({"data.leakage_rows": report.leakage_rows})
        mlflow.log_dict(
            {"missing_by_feature": report.missing_by_feature, "audited": report.audited_features},
            "data_report.json",
        )
    if report.leakage_rows:
        raise TrainingError(
            f"point-in-time audit: {report.leakage_rows} row(s) use a feature value newer "
            "than their label time; refusing to train"
        )
    return training_set


def _split(training_set: TrainingSet) -> TimeSplit:
    split = split_by_time(training_set.frame)
    label = training_set.label_column
    for part, frame in (("train", split.train), ("val", split.val), ("test", split.test)):
        if frame[label].nunique() < 2:
            raise TrainingError(
                f"the {part} part ({len(frame)} rows) has only one label class; ROC AUC "
                "needs both (more labels, or a longer time range)"
            )
    return split


def _lineage(training_set: TrainingSet, split: TimeSplit, config: TrainingConfig) -> dict[str, Any]:
    """Lineage logged as both params and tags of the parent run."""
    frame = training_set.frame
    counts = split.row_counts()
    report = training_set.report
    return {
        "feast.feature_service": training_set.features.service,
        "feast.features": ",".join(training_set.feature_names),
        "feast.feature_refs": ",".join(training_set.features.refs),
        "feast.project": training_set.project,
        "feast.repo_path": str(config.feast_settings().repo_path),
        "data.labels_path": str(config.resolved_labels_path().resolve()),
        "data.labels_start": frame["event_timestamp"].min().isoformat(),
        "data.labels_end": frame["event_timestamp"].max().isoformat(),
        "data.rows": report.rows,
        "data.rows_train": counts["train"],
        "data.rows_val": counts["val"],
        "data.rows_test": counts["test"],
        "data.sha256": training_set.fingerprint(),
        **split.boundaries(),
    }


def _log_dataset_input(training_set: TrainingSet, config: TrainingConfig) -> None:
    """Record the training set as the run's dataset input (name, digest, schema, source)."""
    import warnings

    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.pandas_dataset import from_pandas

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


def _tuning_data(training_set: TrainingSet, split: TimeSplit) -> TuningData:
    names, label = training_set.feature_names, training_set.label_column
    return TuningData(
        x_train=split.train[names],
        y_train=split.train[label],
        x_val=split.val[names],
        y_val=split.val[label],
    )


def _log_trials(study: optuna.Study, *, experiment_id: str, parent_run_id: str) -> None:
    """Record every finished trial of the study as a nested run of the parent."""
    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    client = mlflow.MlflowClient()
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


def _refit_and_test(
    training_set: TrainingSet,
    split: TimeSplit,
    params: dict[str, Any],
    *,
    family: ModelFamily,
    seed: int,
) -> tuple[ClassifierMixin, dict[str, float]]:
    """Refit on train + validation with the best parameters; evaluate on test."""
    import mlflow

    names, label = training_set.feature_names, training_set.label_column
    train_val = pd.concat([split.train, split.val], ignore_index=True)
    model = build_model(family, params, seed=seed)
    fit_started = time.monotonic()
    model.fit(train_val[names], train_val[label])
    mlflow.log_metric("refit_seconds", time.monotonic() - fit_started)
    return model, evaluate(model, split.test[names], split.test[label])


def _log_importances(
    model: ClassifierMixin, training_set: TrainingSet, split: TimeSplit, seed: int
) -> None:
    import mlflow

    names, label = training_set.feature_names, training_set.label_column
    importances, method = feature_importances(
        model, split.test[names], split.test[label], seed=seed
    )
    mlflow.log_dict({"method": method, "importances": importances}, "feature_importances.json")
    from training.global_view import log_mean_contributions

    log_mean_contributions(model, split.test[names])


def _log_model(model: ClassifierMixin, training_set: TrainingSet, split: TimeSplit) -> str:
    """Log the model (skops with its trusted types) with signature and input example.

    The trusted types are the fixed list the loaders accept (core.model_trust), never
    ones read off this model: a model needing others could not be loaded, so it fails here.
    """
    import mlflow
    from mlflow.models import infer_signature

    from core.model_trust import TRUSTED_TYPES, untrusted_types_of

    unknown = untrusted_types_of(model)
    if unknown:
        raise TrainingError(
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
        metadata={
            "feast.feature_service": training_set.features.service,
            "feast.features": ",".join(training_set.feature_names),
            "feast.project": training_set.project,
        },
    )
    # The file Feast's own MLflow integration attaches to a logged model: its feature refs.
    mlflow.log_text(json.dumps(training_set.features.refs), "feast_features.json")
    _log_check_rows(split.test, training_set.feature_names)
    return str(info.model_uri)


def _log_check_rows(test: pd.DataFrame, features: list[str]) -> None:
    """Leave the test rows for serving, which checks faster inference engines against them."""
    import mlflow

    from core.model_checks import CHECK_ROWS_ARTIFACT, select_check_rows

    folder, name = CHECK_ROWS_ARTIFACT.rsplit("/", 1)
    with tempfile.TemporaryDirectory(prefix="churn-check-rows-") as scratch:
        path = Path(scratch) / name
        select_check_rows(test, features).to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=folder)


def _register_and_promote(
    result: TrainingResult,
    model_uri: str,
    training_set: TrainingSet,
    split: TimeSplit,
    config: TrainingConfig,
) -> None:
    """Register a new version, make it challenger, and champion if it beats the champion.

    Called under the model's champion lock: another training, a retraining, a promotion
    or a rollback finishing at the same time waits, then decides against the champion
    this one left (so the best version wins and no history entry is lost).
    """
    import mlflow

    client = mlflow.MlflowClient()
    name = config.model_name
    champion = alias_version(client, name, CHAMPION)
    champion_auc, champion_note = (None, "")
    if champion is not None:
        champion_auc, champion_note = _score_champion(champion, training_set, split)
    tags = {
        "feast.feature_service": training_set.features.service,
        "feast.features": ",".join(training_set.feature_names),
        "feast.project": training_set.project,
        "data.test_start": split.boundaries()["data.test_start"],
        "data.test_end": split.boundaries()["data.test_end"],
        "test_roc_auc": f"{result.test_roc_auc:.6f}",
        # Checked by every loader (serving, training, drift) before the files are read.
        HASH_TAG: logged_model_sha256(model_uri, mlflow.get_tracking_uri()),
    }
    version = register_version(
        client,
        name=name,
        model_uri=model_uri,
        run_id=str(result.run_id),
        tags=tags,
        description=f"Classifier on Feast feature service {training_set.features.service}.",
    )
    result.registered, result.version = True, str(version.version)
    set_challenger(client, name, result.version)
    new_auc = float(result.test_roc_auc or 0.0)
    if champion_auc is not None:
        result.champion_test_roc_auc = champion_auc
        mlflow.log_metric("champion_test_roc_auc", champion_auc)
    if champion is None:
        promote, why = True, "first champion"
    elif champion_auc is None:
        promote, why = False, champion_note
    elif new_auc > champion_auc:
        promote, why = (
            True,
            (
                f"beats champion v{champion.version} on this test window "
                f"({new_auc:.4f} > {champion_auc:.4f})"
            ),
        )
    else:
        promote, why = (
            False,
            (
                f"does not beat champion v{champion.version} on this test window "
                f"({new_auc:.4f} <= {champion_auc:.4f})"
            ),
        )
    if promote:
        expected = str(champion.version) if champion is not None else None
        set_champion(client, name, result.version, reason=why, expected=expected)
    result.promoted = promote
    role = "champion" if promote else "challenger"
    result.reason = f"registered {name} v{result.version} as {role}: {why}"


def _score_champion(
    champion: Any, training_set: TrainingSet, split: TimeSplit
) -> tuple[float | None, str]:
    """The champion's test ROC AUC on this run's test rows, or None and why not."""
    import mlflow

    features = [f for f in champion.tags.get("feast.features", "").split(",") if f]
    missing = [f for f in features if f not in split.test.columns]
    if not features or missing:
        return None, (
            f"champion v{champion.version} uses other features "
            f"({', '.join(missing) or 'unknown'}) and cannot be scored on this test window; "
            "promote by hand if wanted"
        )
    # The champion was refit on every row before its own test window: scoring it on rows it
    # was fitted on would inflate its score (a back-fill or a shorter labels file).
    fitted_before = champion.tags.get("data.test_start")
    test_start = split.boundaries()["data.test_start"]
    if fitted_before and pd.Timestamp(fitted_before) > pd.Timestamp(test_start):
        return None, (
            f"champion v{champion.version} was fitted on rows up to {fitted_before}, inside "
            f"this test window (from {test_start}), so it cannot be compared fairly; "
            "promote by hand if wanted"
        )
    try:
        model = load_registered_model(
            mlflow.get_tracking_uri(), str(champion.name), str(champion.version)
        )
    except UntrustedModelError as error:
        return None, (
            f"champion v{champion.version} cannot be loaded safely ({error}); "
            "promote by hand if wanted"
        )
    try:
        metrics = evaluate(model, split.test[features], split.test[training_set.label_column])
    except ValueError as error:  # e.g. a model without null support on rows kept with nulls
        return None, f"champion v{champion.version} cannot score this test window: {error}"
    return metrics["roc_auc"], ""


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
