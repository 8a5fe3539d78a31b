"""Training: point-in-time training sets from Feast, Optuna tuning, the MLflow registry.

This package's public entry point, for the stages above it (monitoring retrains through
it): everything else in ``training`` is internal and may change. The import-linter
contract in pyproject keeps other stages off the submodules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from training.config import TrainingConfig, TrainingError, TrainingResult
from training.registry import alias_version

if TYPE_CHECKING:
    from core.settings import MlflowSettings

__all__ = ["TrainingConfig", "TrainingError", "TrainingResult", "alias_version", "run_training"]


def run_training(
    config: TrainingConfig, *, mlflow_settings: MlflowSettings | None = None
) -> TrainingResult:
    """Train, gate and register one model (see :func:`training.pipeline.run_training`).

    The pipeline (pandas, scikit-learn, MLflow, Optuna) is imported on the first call only,
    so importing this package stays cheap.
    """
    from training.pipeline import run_training as run

    return run(config, mlflow_settings=mlflow_settings)
