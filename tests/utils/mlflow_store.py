"""Empty MLflow tracking databases, migrated once per test run and copied.

Creating an MLflow SQLite database runs all of MLflow's schema migrations: seconds of
CPU each time. The first process that needs one builds it (tests/utils/shared.py), every
test gets a byte copy, as empty and as fresh as one it would have created itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.utils.shared import build_once

_DATABASE = "mlflow.db"


def _migrate(folder: Path) -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{folder / _DATABASE}").search_experiments()


def copy_empty_store(database: Path) -> Path:
    """Put an empty, migrated MLflow SQLite database at ``database`` (if none is there).

    Returns:
        The database path.
    """
    if not database.exists():
        database.parent.mkdir(parents=True, exist_ok=True)
        template = build_once("mlflow-empty-store", _migrate) / _DATABASE
        shutil.copyfile(template, database)
    return database
