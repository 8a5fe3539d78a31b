"""The repo's profiles: each names what it needs, each expires online rows."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.errors import ConfigurationError
from core.feast_store import open_feature_store
from core.settings import FeastSettings
from tests.utils.feast_repo import make_feature_repo

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


def test_team_profile_without_registry_url_names_the_variable(
    tmp_path, feast_project, monkeypatch
) -> None:
    monkeypatch.delenv("CHURN_REGISTRY_URL", raising=False)
    repo = make_feature_repo(tmp_path, project=feast_project, profile="team")
    with pytest.raises(ConfigurationError, match="CHURN_REGISTRY_URL"):
        open_feature_store(repo.feast)


def test_cluster_profile_without_nodes_names_the_variable(
    tmp_path, feast_project, monkeypatch
) -> None:
    monkeypatch.delenv("CHURN_REDIS_CLUSTER_NODES", raising=False)
    repo = make_feature_repo(tmp_path, project=feast_project, profile="cluster")
    with pytest.raises(ConfigurationError, match="CHURN_REDIS_CLUSTER_NODES"):
        open_feature_store(repo.feast)


def test_missing_profile_file_is_named(tmp_path) -> None:
    settings = FeastSettings(repo_path=tmp_path)
    with pytest.raises(ConfigurationError, match=r"feature_store\.yaml"):
        open_feature_store(settings)


def test_every_profile_expires_online_rows_after_the_view_ttl() -> None:
    import yaml

    from tests.utils.feast_repo import FEATURE_REPO

    profiles = sorted(FEATURE_REPO.glob("feature_store*.yaml"))
    assert [path.name for path in profiles] == [
        "feature_store.cluster.yaml",
        "feature_store.embedded.yaml",
        "feature_store.spark.yaml",
        "feature_store.team.yaml",
        "feature_store.yaml",
    ]
    view_ttl = timedelta(days=21).total_seconds()  # user_features' ttl (views.py)
    for path in profiles:
        config = yaml.safe_load(path.read_text())
        online = config["online_store"]
        # Redis takes it natively; Feast's SQLite config refuses it, so the engine applies it.
        block = online if online["type"] == "redis" else config["batch_engine"]
        assert block.get("key_ttl_seconds") == view_ttl, path.name
