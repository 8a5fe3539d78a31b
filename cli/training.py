"""`churn train`, `promote`, `rollback`: the ML engineer's commands.

Each command turns its options into the stage's request (:mod:`training.config`, light),
calls the entry point of :mod:`training` inside its body (so ``churn --help`` loads neither
Feast nor MLflow), prints the outcome and exits with its code.

Exit codes of ``churn train``: 0 a model was registered (or ``--tune-only`` finished), 3
trained but below the ``--min-auc`` gate (nothing registered), 2 bad input or
configuration, 1 any other failure.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.errors import exit_on_error
from cli.options import ProfileOption, given_options
from core.settings import DEFAULT_MODEL_NAME
from training.config import (
    MissingPolicy,
    ModelFamily,
    PromoteOutcome,
    PromoteRequest,
    RollbackRequest,
    TrainingConfig,
    TrainingResult,
)


def train_command(
    ctx: typer.Context,
    repo: Annotated[
        Path | None, typer.Option(help="Feast repo folder (default: this project's).")
    ] = None,
    profile: ProfileOption = None,
    feature_service: Annotated[
        str, typer.Option(help="Feature service giving the model's features, in order.")
    ] = "churn_v1",
    labels: Annotated[
        Path | None,
        typer.Option(
            help="Labels Parquet: entity key(s), event_timestamp, label column "
            "(default: <data_dir>/offline/labels.parquet)."
        ),
    ] = None,
    label_column: Annotated[str, typer.Option(help="0/1 label column.")] = "label",
    trials: Annotated[int, typer.Option(min=1, help="Optuna trials (over all workers).")] = 50,
    timeout: Annotated[
        float, typer.Option(min=1, help="Tuning time budget in seconds, per worker.")
    ] = 3600,
    model_name: Annotated[str, typer.Option(help="Registered model name.")] = DEFAULT_MODEL_NAME,
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment (default: the model name).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampler and the models.")] = 42,
    model_family: Annotated[
        ModelFamily,
        typer.Option(
            help="hist_gradient_boosting (fast default) or gradient_boosting (reference)."
        ),
    ] = "hist_gradient_boosting",
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna storage URL, e.g. postgresql+psycopg://user@host/db (default: in "
            "memory; a temporary journal file with --workers > 1)."
        ),
    ] = None,
    study_name: Annotated[
        str | None, typer.Option(help="Optuna study to create or join (default: a new one).")
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Local tuning processes working on the study.")
    ] = 1,
    min_auc: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Register only at or above this test AUC.")
    ] = 0.78,
    missing: Annotated[
        MissingPolicy,
        typer.Option(help="Rows with missing features: drop them, or keep them as NaN."),
    ] = "drop",
    tune_only: Annotated[
        bool,
        typer.Option(
            "--tune-only", help="Only add trials to --study-name in --storage (helper worker)."
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show the tuning progress bar.")] = True,
    threads: Annotated[
        int, typer.Option(min=1, help="OpenMP threads per process (workers give parallelism).")
    ] = 1,
) -> None:
    """Train on point-in-time features from Feast, tune with Optuna, gate and register.

    Exit codes: 0 registered (or --tune-only done), 3 trained but below --min-auc,
    2 bad input or configuration, 1 other errors.
    """
    # Only the options given on the command line override the fields: the others come from
    # CHURN_TRAIN_* and CHURN_MODEL_NAME (and then the field defaults), as for every
    # settings class.
    given = given_options(ctx, rename={"repo": "repo_path", "labels": "labels_path"})
    with exit_on_error():
        from training import run_training

        result = run_training(TrainingConfig(**given))
    for line in describe_result(result):
        typer.echo(line)
    raise typer.Exit(result.exit_code)


def promote_command(
    ctx: typer.Context,
    version: Annotated[str, typer.Option(help="Model version to make champion.")],
    model_name: Annotated[str, typer.Option(help="Registered model name.")] = DEFAULT_MODEL_NAME,
) -> None:
    """Make a registered model version the champion (alias), keeping the history."""
    with exit_on_error():
        from training import run_promote

        outcome = run_promote(PromoteRequest(**given_options(ctx)))
    typer.echo(describe_promotion(outcome))


def rollback_command(
    ctx: typer.Context,
    model_name: Annotated[str, typer.Option(help="Registered model name.")] = DEFAULT_MODEL_NAME,
) -> None:
    """Give the champion alias back to the previous champion."""
    with exit_on_error():
        from training import run_rollback

        outcome = run_rollback(RollbackRequest(**given_options(ctx)))
    typer.echo(f"{outcome.model_name}@champion -> v{outcome.new} (rolled back from v{outcome.old})")


COMMANDS: dict[str, Callable[..., None]] = {
    "train": train_command,
    "promote": promote_command,
    "rollback": rollback_command,
}


def describe_promotion(outcome: PromoteOutcome) -> str:
    """The line ``churn promote`` prints."""
    if not outcome.changed:
        return f"{outcome.model_name} v{outcome.version} is already champion"
    was = f" (was v{outcome.previous})" if outcome.previous else ""
    return f"{outcome.model_name}@champion -> v{outcome.version}{was}"


def describe_result(result: TrainingResult) -> list[str]:
    """Summary lines of a training run for the terminal."""
    lines = [*_describe_data(result.data_report)]
    lines += [
        f"study {result.study_name}: {result.trials_complete} complete, "
        f"{result.trials_pruned} pruned trials in {result.tuning_seconds:.1f} s",
        f"rows: {', '.join(f'{part} {count}' for part, count in result.rows.items())}",
    ]
    if result.best_params:
        params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(result.best_params.items()))
        lines.append(f"best params: {params}")
    if result.val_roc_auc is not None:
        lines.append(f"val ROC AUC {result.val_roc_auc:.4f}")
    if result.test_roc_auc is not None:
        lines.append(f"test ROC AUC {result.test_roc_auc:.4f}")
    if result.champion_test_roc_auc is not None:
        lines.append(f"champion's ROC AUC on this test window {result.champion_test_roc_auc:.4f}")
    if result.run_id:
        lines.append(f"MLflow run {result.run_id} (experiment {result.experiment_id})")
    lines.append(result.reason)
    return lines


def _describe_data(report: dict[str, Any]) -> list[str]:
    """Lines about rejected, missing and audited label rows."""
    if not report:
        return []
    missing = ", ".join(f"{k} {v}" for k, v in report["missing_by_feature"].items() if v)
    return [
        f"labels: {report['label_rows']} rows read, {report['rejected_null_labels']} rejected "
        f"(null label, key or time), {report['duplicate_label_rows']} duplicate key+time",
        f"missing features: {report['missing_rows']} rows"
        + (f" ({missing})" if missing else "")
        + f", {report['dropped_missing_rows']} dropped",
        f"point-in-time audit: {report['leakage_rows']} leaking rows "
        f"({len(report['audited_features'])} features checked against their source)",
        f"training rows: {report['rows']}",
    ]


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
