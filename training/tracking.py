"""Where MLflow keeps runs and models: settings shared by training, serving and monitoring."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from materialize.settings import DataSettings


class MlflowSettings(BaseSettings):
    """MLflow tracking and registry location (``MLFLOW_TRACKING_URI``).

    Default: a SQLite database under the data folder with artifacts beside it, never in the
    current directory (MLflow's own default depends on where the process runs).
    """

    model_config = SettingsConfigDict(extra="ignore", validate_by_name=True, validate_by_alias=True)

    tracking_uri: str | None = Field(default=None, validation_alias="MLFLOW_TRACKING_URI")
    artifact_root: Path | None = Field(default=None, validation_alias="CHURN_MLFLOW_ARTIFACT_ROOT")

    def resolved_tracking_uri(self, data: DataSettings | None = None) -> str:
        """The tracking URI, defaulting to ``sqlite:///<data_dir>/mlflow/mlflow.db``."""
        if self.tracking_uri:
            return self.tracking_uri
        data = data or DataSettings()
        return f"sqlite:///{(data.data_dir / 'mlflow' / 'mlflow.db').resolve()}"

    def resolved_artifact_root(self, data: DataSettings | None = None) -> Path:
        """Where new experiments store artifacts (``<data_dir>/mlflow/artifacts``)."""
        if self.artifact_root:
            return self.artifact_root.resolve()
        data = data or DataSettings()
        return (data.data_dir / "mlflow" / "artifacts").resolve()

    def prepare(self, data: DataSettings | None = None) -> str:
        """Create the local store folder when the default is used; return the tracking URI.

        Called by commands at start, never at import time.
        """
        uri = self.resolved_tracking_uri(data)
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.resolved_artifact_root(data).mkdir(parents=True, exist_ok=True)
        return uri
