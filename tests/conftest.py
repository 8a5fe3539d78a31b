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
from tests.utils.redis_cluster import (
    redis_cluster,  # noqa: F401  (session fixture for cluster-profile tests)
)
from tests.utils.redis_cluster import stop_shared_cluster as stop_shared_redis_cluster
from tests.utils.services import (
    delete_project_keys,
    redis_client,
    temporary_postgres_database,
    unique_name,
)
from tests.utils.shared import is_xdist_worker, run_folder_of, set_run_folder
from tests.utils.spark import (
    spark_cluster,  # noqa: F401  (session fixture for spark tests)
    stop_shared_cluster,
)

# The xdist group of the tests that use the Spark cluster: they run one at a time, on one
# worker, so each sees only its own applications on the cluster.
SPARK_GROUP = "spark"
_DURATIONS_KEY = "churn/group-durations"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that is not a ``unit`` test as ``services`` (``-m unit`` / ``-m services``).

    Unit is the claim a module makes (``pytestmark = pytest.mark.unit``); anything that
    makes no claim is taken to need the real services, so a new test is never skipped by
    ``make test-unit`` on a wrong guess.

    Under pytest-xdist (``make test``: ``--dist loadgroup``) every test also gets a group:
    its module (so a module's fixtures are built on one worker only), or ``spark`` for every
    test of the Spark cluster. Groups are handed out longest first, by the durations the
    last runs recorded (pytest's cache), unknown ones and ``spark`` first: the worker that
    takes the longest group starts it at once and the short ones fill in at the end.
    """
    for item in items:
        if item.get_closest_marker("unit") is None:
            item.add_marker(pytest.mark.services)
    if not is_xdist_worker():
        return
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            group = SPARK_GROUP if "spark_cluster" in item.fixturenames else _module_of(item)
            item.add_marker(pytest.mark.xdist_group(group))
    recorded: dict[str, float] = config.cache.get(_DURATIONS_KEY, {}) if config.cache else {}

    def longest_first(item: pytest.Item) -> tuple[bool, float]:
        group = _group_of(item)
        return group != SPARK_GROUP, -recorded.get(group, float("inf"))

    items.sort(key=longest_first)  # stable: the random order holds inside each group


def _module_of(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


def _group_of(item: pytest.Item) -> str:
    marker = item.get_closest_marker("xdist_group")
    return str(marker.args[0]) if marker and marker.args else _module_of(item)


class _GroupDurations:
    """Controller side of ``make test``: sums each group's test durations for the next run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        nodeid, _, group = report.nodeid.rpartition("@")
        group = group if nodeid else report.nodeid.split("::", 1)[0]
        self.seconds[group] = self.seconds.get(group, 0.0) + report.duration


def pytest_configure(config: pytest.Config) -> None:
    if not is_xdist_worker():
        config.pluginmanager.register(_GroupDurations(), "churn-group-durations")


@pytest.hookimpl(trylast=True)  # after pytest-xdist has shut its workers down
def pytest_sessionfinish(session: pytest.Session) -> None:
    """On the xdist controller: stop the run's Spark and Redis clusters, keep durations."""
    config = session.config
    durations = config.pluginmanager.get_plugin("churn-group-durations")
    if durations is None or not config.pluginmanager.hasplugin("dsession"):
        return
    if config.cache is not None and durations.seconds:
        recorded = config.cache.get(_DURATIONS_KEY, {})
        config.cache.set(_DURATIONS_KEY, {**recorded, **durations.seconds})
    # The workers' base temp folders are inside the controller's: the run folder.
    run_folder = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    stop_shared_cluster(run_folder)
    stop_shared_redis_cluster(run_folder)


@pytest.fixture(scope="session", autouse=True)
def _run_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Where things built once per run live (tests/utils/shared.py); only a path is set."""
    set_run_folder(run_folder_of(tmp_path_factory))


@pytest.fixture(scope="session", autouse=True)
def _batch_commands_at_full_priority() -> None:
    """The suite's ``churn`` subprocesses keep the test's priority: two xdist workers share
    the cores, and a niced command behind the other worker's CPU-bound test would only wait
    longer (tests/cli/test_batch_priority.py checks the shipped default itself)."""
    os.environ["CHURN_BATCH_NICENESS"] = "0"


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
