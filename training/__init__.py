"""Training: point-in-time training sets from Feast, Optuna tuning, the MLflow registry.

This package's public entry points, for the command line and the stages above it
(monitoring retrains through it): a typed request in, an outcome out. Everything else in
``training`` is internal and may change; the import-linter contract in pyproject keeps
other stages off the submodules.

The entry points import the pipeline (Feast, MLflow) when first called, not with this
package: tuning's worker processes import ``training.tuning``, and so this package, and
need neither (they cost seconds per worker to import).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from training.config import (
    PromoteOutcome,
    PromoteRequest,
    RollbackOutcome,
    RollbackRequest,
    TrainingConfig,
    TrainingResult,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from core.settings import MlflowSettings

__all__ = [
    "PromoteOutcome",
    "PromoteRequest",
    "RollbackOutcome",
    "RollbackRequest",
    "TrainingConfig",
    "TrainingResult",
    "alias_version",
    "run_promote",
    "run_rollback",
    "run_training",
]


def run_training(
    config: TrainingConfig, *, mlflow_settings: MlflowSettings | None = None
) -> TrainingResult:
    """Train, gate and register one model (see :func:`training.pipeline.run_training`)."""
    _quiet_mlflow()
    from training.pipeline import run_training as run

    return run(config, mlflow_settings=mlflow_settings)


def run_promote(
    request: PromoteRequest, *, mlflow_settings: MlflowSettings | None = None
) -> PromoteOutcome:
    """Make a version the champion (see :func:`training.promote.promote_version`)."""
    _quiet_mlflow()
    from training.promote import promote_version

    return promote_version(request, mlflow_settings=mlflow_settings)


def run_rollback(
    request: RollbackRequest, *, mlflow_settings: MlflowSettings | None = None
) -> RollbackOutcome:
    """Give the champion back to the previous one (:func:`training.promote.rollback_version`)."""
    _quiet_mlflow()
    from training.promote import rollback_version

    return rollback_version(request, mlflow_settings=mlflow_settings)


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version holding an alias, or None (see :func:`training.registry.alias_version`)."""
    _quiet_mlflow()
    from training.registry import alias_version as find

    return find(client, name, alias)


def _quiet_mlflow() -> None:
    """No MLflow telemetry (it writes under $HOME): read once, when mlflow is first imported."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
