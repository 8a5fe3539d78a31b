"""Fixtures of the scoring tests: one repo with offline and online features per package."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.utils.feast_repo import TestRepo, make_feature_repo
from tests.utils.services import delete_project_keys, unique_name
from tests.utils.serving import OnlineUsers, load_online_features


@pytest.fixture(autouse=True)
def _trusted_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Models come from the test's own registry (as `churn serve` allows for its own)."""
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="package")
def scoring_repo(
    tmp_path_factory: pytest.TempPathFactory, redis_available: None
) -> Iterator[tuple[TestRepo, OnlineUsers]]:
    """Offline features written, applied and materialized into the test Redis once."""
    root = tmp_path_factory.mktemp("scoring-repo")
    project = unique_name("churn_scoring")
    repo = make_feature_repo(root, project=project)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHURN_DATA_DIR", str(repo.data.data_dir))
        users = load_online_features(repo, now=datetime.now(UTC))
    yield repo, users
    delete_project_keys(project)
