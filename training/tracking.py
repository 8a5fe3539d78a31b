"""Where MLflow keeps runs and models: settings shared by training, serving and monitoring."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
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


def configure_mlflow(settings: MlflowSettings | None = None) -> str:
    """Point the MLflow client of this process at the configured store; return its URI.

    Telemetry is switched off before mlflow is first imported (it writes under $HOME).
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    settings = settings or MlflowSettings()
    uri = settings.prepare()
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    initialize_store(uri)
    return uri


_INITIALIZED: set[str] = set()


def initialize_store(uri: str) -> None:
    """Create and upgrade the tracking and registry schema once, under the store's lock.

    MLflow creates (and migrates) a fresh store in whichever process touches it first;
    several processes doing it at once crash in the migration (``table
    _alembic_tmp_trace_tags already exists``). Here the first one does it under the lock
    and the others then find it ready.
    """
    if uri in _INITIALIZED:
        return
    from mlflow import MlflowClient

    with store_lock_for(uri, "store-init"):
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
    _INITIALIZED.add(uri)


@contextlib.contextmanager
def store_lock_for(uri: str, name: str) -> Iterator[None]:
    """The cross-process lock ``name`` of the tracking store at ``uri`` (see core.locks)."""
    from core.locks import store_lock

    with store_lock(uri, name, fallback_dir=DataSettings().data_dir / "locks"):
        yield


def champion_lock(
    model_name: str, settings: MlflowSettings | None = None
) -> contextlib.AbstractContextManager[None]:
    """The lock that serializes every champion decision of one registered model.

    ``churn train``, ``churn drift --retrain``, ``churn promote`` and ``churn rollback``
    read the champion, decide and move the alias inside it.
    """
    from core.locks import champion_lock_name

    uri = (settings or MlflowSettings()).resolved_tracking_uri()
    return store_lock_for(uri, champion_lock_name(model_name))


def ensure_experiment(name: str, settings: MlflowSettings | None = None) -> str:
    """Id of the experiment, created with its artifacts under the artifact root if new.

    MLflow would otherwise put artifacts in ``./mlruns`` of whichever process creates the
    experiment.
    """
    import mlflow

    settings = settings or MlflowSettings()
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return str(existing.experiment_id)
    # Several jobs may create it at once: one creates it, the others then find it.
    with store_lock_for(settings.resolved_tracking_uri(), f"experiment:{name}"):
        existing = mlflow.get_experiment_by_name(name)
        if existing is not None:
            return str(existing.experiment_id)
        location = settings.resolved_artifact_root() / _safe_folder_name(name)
        return str(mlflow.create_experiment(name, artifact_location=location.as_uri()))


def _safe_folder_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "experiment"


def code_version() -> dict[str, str]:
    """The git commit of the project checkout (and whether it has local changes)."""
    from materialize.settings import PROJECT_ROOT

    def _git(*args: str) -> str | None:
        try:
            completed = subprocess.run(
                ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return None
        return completed.stdout.strip()

    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"code.git_commit": "unknown"}
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "code.git_commit": commit,
        "code.git_dirty": str(dirty).lower(),
        "mlflow.source.git.commit": commit,
    }
