"""Training's MLflow set-up: the store, its locks, experiments and code version.

The store's location (:class:`core.settings.MlflowSettings`) is shared by every stage.
Registry reads and writes use a client on that explicit URI (:mod:`core.models`); only the
run's own logging (``mlflow.start_run``, ``log_model``) uses the process's URI, which
:func:`configure_mlflow` sets when a training run starts.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

import mlflow

from core.locks import champion_lock_name, store_lock
from core.models import mlflow_client
from core.settings import PROJECT_ROOT, DataSettings, MlflowSettings


def configure_mlflow(settings: MlflowSettings | None = None) -> str:
    """Point this process's MLflow logging at the configured store; return its URI."""
    settings = settings or MlflowSettings()
    uri = settings.prepare()
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
    with store_lock_for(uri, "store-init"):
        client = mlflow_client(uri)
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
    _INITIALIZED.add(uri)


@contextlib.contextmanager
def store_lock_for(uri: str, name: str) -> Iterator[None]:
    """The cross-process lock ``name`` of the tracking store at ``uri`` (see core.locks)."""
    with store_lock(uri, name, fallback_dir=DataSettings().data_dir / "locks"):
        yield


def champion_lock(
    model_name: str, settings: MlflowSettings | None = None
) -> contextlib.AbstractContextManager[None]:
    """The lock that serializes every champion decision of one registered model.

    ``churn train``, ``churn drift --retrain``, ``churn promote`` and ``churn rollback``
    read the champion, decide and move the alias inside it.
    """
    uri = (settings or MlflowSettings()).resolved_tracking_uri()
    return store_lock_for(uri, champion_lock_name(model_name))


def ensure_experiment(name: str, settings: MlflowSettings | None = None) -> str:
    """Id of the experiment, created with its artifacts under the artifact root if new.

    MLflow would otherwise put artifacts in ``./mlruns`` of whichever process creates the
    experiment.
    """
    settings = settings or MlflowSettings()
    uri = settings.resolved_tracking_uri()
    client = mlflow_client(uri)
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return str(existing.experiment_id)
    # Several jobs may create it at once: one creates it, the others then find it.
    with store_lock_for(uri, f"experiment:{name}"):
        existing = client.get_experiment_by_name(name)
        if existing is not None:
            return str(existing.experiment_id)
        location = settings.resolved_artifact_root() / _safe_folder_name(name)
        return str(client.create_experiment(name, artifact_location=location.as_uri()))


def _safe_folder_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "experiment"


def code_version() -> dict[str, str]:
    """The git commit of the project checkout (and whether it has local changes)."""

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
