"""Shared fixtures: real Redis, real PostgreSQL, isolated Feast repos.

prometheus_client is imported first on purpose: it picks in-process or file-backed metric
values once, at import, from PROMETHEUS_MULTIPROC_DIR, and Feast's ``feast.metrics`` exports
that variable when a materialization first imports it. Imported later, every app's metrics
would share files and count each other's requests (as in ``churn serve``, where the app
imports prometheus_client before Feast).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import prometheus_client  # noqa: F401  (see below)
import pytest

from tests.utils.feast_repo import TestRepo, make_feature_repo
from tests.utils.services import (
    delete_project_keys,
    redis_client,
    temporary_postgres_database,
    unique_name,
)
from tests.utils.spark import spark_cluster  # noqa: F401  (session fixture for spark tests)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Keep every test away from the developer's data, MLflow store and home.

    MLflow's ``set_tracking_uri``/``set_registry_uri`` keep the URI in module globals and
    export it (MLFLOW_TRACKING_URI, MLFLOW_REGISTRY_URI) for subprocesses, so a test that
    trains in-process would otherwise send every later ``churn`` subprocess, and every
    later in-process load, to its own store. Both are reset after each test.
    """
    monkeypatch.setenv("CHURN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("CHURN_FEAST_PROFILE", raising=False)
    # Not through monkeypatch: it would restore a value a module-scoped fixture exported.
    _forget_mlflow_uris()
    yield
    _forget_mlflow_uris()


def _forget_mlflow_uris() -> None:
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  (None unsets it)
        mlflow.set_registry_uri(None)  # type: ignore[arg-type]
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_REGISTRY_URI", None)


@pytest.fixture(scope="session")
def redis_available() -> None:
    """Fail (never skip) when the test Redis is not running."""
    redis_client().ping()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database, dropped after the test."""
    with temporary_postgres_database() as url:
        yield url


@pytest.fixture
def feast_project() -> Iterator[str]:
    """A unique Feast project name; its Redis keys are deleted afterwards."""
    project = unique_name("churn_test")
    yield project
    delete_project_keys(project)


@pytest.fixture
def feature_repo(tmp_path: Path, feast_project: str, redis_available: None) -> TestRepo:
    """An isolated copy of the feature repo on the production (Redis) profile."""
    return make_feature_repo(tmp_path, project=feast_project)
