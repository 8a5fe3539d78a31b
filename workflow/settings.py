"""Settings of the orchestrated schedule (prefix ``CHURN_WORKFLOW_``).

Connections (profile, Redis, MLflow, data folder) are the stages' own variables
(``CHURN_FEAST_PROFILE``, ``CHURN_REDIS_URL``, ``MLFLOW_TRACKING_URI``, ``CHURN_DATA_DIR``...):
the tasks run the ``churn`` commands with this process's environment, so one set of
variables configures both. The fields below only add what the schedule itself decides.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_churn() -> str:
    return str(Path(sys.executable).with_name("churn"))


class WorkflowSettings(BaseSettings):
    """What runs when, and how hard to retry (prefix ``CHURN_WORKFLOW_``)."""

    model_config = SettingsConfigDict(env_prefix="CHURN_WORKFLOW_", extra="ignore")

    churn_executable: str = Field(
        default_factory=_default_churn,
        description="The `churn` command the tasks run (default: the one beside this Python).",
    )
    timezone: str = "UTC"
    schedules_running: bool = Field(
        default=True, description="Schedules start switched on (Dagster's default is off)."
    )
    hourly_cron: str = "5 * * * *"
    nightly_cron: str = "30 2 * * *"
    evaluate_cron: str = "0 7 * * *"
    feature_views: list[str] = Field(
        default_factory=lambda: ["user_features"],
        description="One materialization task per view (JSON list).",
    )
    profile: str | None = Field(
        default=None, description="Feast profile passed as --profile (default: the stages')."
    )
    retry_attempts: int = Field(default=4, ge=0, description="Retries of an unreachable store.")
    retry_delay_s: float = Field(default=30.0, ge=0, description="First retry delay; doubles.")
    skew_sample: int = Field(default=1000, ge=1)
    skew_service: str = "churn_v1"
    drift_window: str | None = Field(
        default=None, description="--window of drift (default: CHURN_MONITORING_WINDOW_DAYS)."
    )
    drift_trials: int | None = Field(default=None, ge=1, description="Trials of a retraining.")
    evaluate_window: str = "1d"
    evaluate_max_label_age: str = "7d"
    evaluate_min_auc: float = Field(default=0.78, ge=0.0, le=1.0)
    command_timeout_s: float = Field(default=6 * 3600, gt=0)

    @field_validator("hourly_cron", "nightly_cron", "evaluate_cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"{value!r} is not a five-field cron expression")
        return value
