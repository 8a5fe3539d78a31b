"""Settings of the prediction service (prefix ``CHURN_SERVING_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from materialize.settings import DataSettings


class ServingSettings(BaseSettings):
    """How ``churn serve`` listens, which model it serves and how it protects itself.

    Feast (``CHURN_FEAST_*``, ``CHURN_REDIS_URL``) and MLflow (``MLFLOW_TRACKING_URI``) keep
    their own settings classes; these are the service's own knobs.
    """

    model_config = SettingsConfigDict(env_prefix="CHURN_SERVING_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Interface to listen on.")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port to listen on.")
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the admin routes; without one they are not mounted.",
    )
    model_name: str = Field(default="churn-predictor", description="Registered model name.")
    model_alias: str = Field(default="champion", description="Alias of the version to serve.")
    poll_interval_s: float = Field(
        default=10.0,
        ge=0,
        description="How often the alias is checked for a new version (0: never).",
    )
    batch_limit: int = Field(
        default=100, ge=1, le=10_000, description="Most user_ids in one /predict/batch."
    )
    online_timeout_s: float = Field(
        default=0.5,
        gt=0,
        le=30,
        description="Bound on one online-store lookup; beyond it the answer is 503.",
    )
    decision_threshold: float = Field(
        default=0.5, ge=0, le=1, description="churn_predicted is probability >= this."
    )
    max_micro_batch: int = Field(
        default=256,
        ge=1,
        description="Most rows that concurrent requests share in one lookup and one predict.",
    )
    prediction_log_dir: Path | None = Field(
        default=None,
        description="Root of the partitioned prediction log (default <data_dir>/predictions).",
    )
    log_flush_interval_s: float = Field(
        default=5.0, gt=0, description="How often buffered predictions are written."
    )
    log_flush_rows: int = Field(
        default=50_000, ge=1, description="Buffered rows that trigger an early write."
    )
    log_max_buffer_rows: int = Field(
        default=500_000,
        ge=1,
        description="Most prediction-log rows kept in memory while writes fail; the oldest "
        "beyond it are dropped and counted (churn_prediction_log_rows_total{outcome=dropped}).",
    )

    def resolved_prediction_log_dir(self, data: DataSettings | None = None) -> Path:
        """The prediction log root: the setting, else ``<data_dir>/predictions``."""
        if self.prediction_log_dir is not None:
            return self.prediction_log_dir
        return (data or DataSettings()).data_dir / "predictions"
