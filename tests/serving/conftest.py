"""Fixtures of the serving tests: one applied, materialized repo per package, registries."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from core.settings import FeastSettings, MlflowSettings
from serving.app import create_app
from serving.settings import AuthSettings, ServingSettings
from tests.utils.feast_repo import TestRepo, make_feature_repo
from tests.utils.services import delete_project_keys, unique_name
from tests.utils.serving import (
    OnlineUsers,
    load_online_features,
    register_model,
    tracking_uri_in,
    training_frame,
)


@pytest.fixture(autouse=True)
def _trusted_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serving loads models from its own registry, as `churn serve` allows it to."""
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="package")
def online_repo(
    tmp_path_factory: pytest.TempPathFactory, redis_available: None
) -> Iterator[tuple[TestRepo, OnlineUsers]]:
    """A repo applied and materialized into the test Redis once for all serving tests.

    Tests only read it; those that need to change online data build their own.
    """
    root = tmp_path_factory.mktemp("serving-repo")
    project = unique_name("churn_serving")
    repo = make_feature_repo(root, project=project)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHURN_DATA_DIR", str(repo.data.data_dir))
        users = load_online_features(repo, now=datetime.now(UTC))
    yield repo, users
    delete_project_keys(project)


@pytest.fixture
def repo(online_repo: tuple[TestRepo, OnlineUsers]) -> TestRepo:
    """The shared repo's settings."""
    return online_repo[0]


@pytest.fixture
def users(online_repo: tuple[TestRepo, OnlineUsers]) -> OnlineUsers:
    """The shared repo's users, by case."""
    return online_repo[1]


@pytest.fixture(scope="package")
def registry_templates(
    tmp_path_factory: pytest.TempPathFactory, online_repo: tuple[TestRepo, OnlineUsers]
) -> dict[str, Path]:
    """MLflow databases built once: an empty one, and one with a champion (version 1).

    Creating an MLflow database runs its migrations (seconds); tests copy these instead.
    Artifacts stay in this package folder, where the copies' runs point.
    """
    root = tmp_path_factory.mktemp("registries")
    empty = tracking_uri_in(root / "empty")
    with_champion = tracking_uri_in(root / "champion")
    register_model(with_champion, project=online_repo[0].project)
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=empty).search_experiments()  # creates the schema
    return {"empty": _database(empty), "champion": _database(with_champion)}


def _database(tracking_uri: str) -> Path:
    return Path(tracking_uri.removeprefix("sqlite:///"))


@pytest.fixture
def tracking_uri(tmp_path: Path, registry_templates: dict[str, Path]) -> str:
    """An empty MLflow registry for this test (a copy of the template)."""
    uri = tracking_uri_in(tmp_path / "mlflow")
    shutil.copyfile(registry_templates["empty"], _database(uri))
    return uri


@pytest.fixture
def champion(tracking_uri: str, registry_templates: dict[str, Path]) -> str:
    """Version 1 of churn-predictor as champion in this test's registry (on churn_v1)."""
    shutil.copyfile(registry_templates["champion"], _database(tracking_uri))
    return "1"


@pytest.fixture
def make_app(repo: TestRepo, tracking_uri: str, tmp_path: Path) -> Callable[..., FastAPI]:
    """Build the app on the shared repo and this test's registry; settings overridable."""

    def build(
        *,
        feast: FeastSettings | None = None,
        prediction_log_dir: Path | None = None,
        auth: AuthSettings | None = None,
        **overrides: Any,
    ) -> FastAPI:
        values: dict[str, Any] = {"poll_interval_s": 0, **overrides}
        log_dir = prediction_log_dir or tmp_path / "predictions"
        return create_app(
            ServingSettings(**values),
            feast=feast or repo.feast,
            mlflow=MlflowSettings(tracking_uri=tracking_uri),
            data=repo.data.model_copy(update={"prediction_log_dir": log_dir}),
            auth=auth or AuthSettings(),
        )

    return build


def _hist_model() -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    frame, labels = training_frame(2000, seed=3)
    return HistGradientBoostingClassifier(max_iter=80, early_stopping=False, random_state=0).fit(
        frame, labels
    )


def _gradient_model() -> Any:
    from sklearn.ensemble import GradientBoostingClassifier

    frame, labels = training_frame(2000, seed=3)
    return GradientBoostingClassifier(n_estimators=40, max_depth=4, random_state=0).fit(
        frame, labels
    )


@pytest.fixture(scope="module")
def scoring_registry(
    tmp_path_factory: pytest.TempPathFactory, online_repo: tuple[TestRepo, OnlineUsers]
) -> str:
    """Batch scoring's registry. Version 1: HistGradientBoosting (champion); version 2:
    GradientBoosting."""
    repo, _ = online_repo
    uri = tracking_uri_in(tmp_path_factory.mktemp("mlflow"))
    register_model(uri, project=repo.project, model=_hist_model())
    register_model(uri, project=repo.project, model=_gradient_model(), alias=None)
    return uri
