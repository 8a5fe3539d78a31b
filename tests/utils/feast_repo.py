"""A private copy of the project's Feast repo, so tests never share registry or data."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from core.settings import PROJECT_ROOT, DataSettings, FeastProfile, FeastSettings
from tests.utils.services import REDIS_HOST, REDIS_PORT

FEATURE_REPO = PROJECT_ROOT / "feature_repo"


@dataclass(frozen=True)
class TestRepo:
    """Settings of one isolated copy of the feature repo and its data folder."""

    __test__ = False  # a factory result, not a test class

    project: str
    feast: FeastSettings
    data: DataSettings


def make_feature_repo(
    root: Path,
    *,
    project: str,
    profile: FeastProfile = "production",
    registry_url: str | None = None,
    redis_db: int = 0,
    spark_master: str = "local[2]",
    redis_cluster_nodes: str | None = None,
) -> TestRepo:
    """Copy ``feature_repo/`` into ``root`` with its own project name and data folder.

    Only the project name of each yaml changes; the definitions and profiles are the
    project's own. Data lives in ``root/data`` (where the repo's relative paths point); the
    spark profile stages query results in ``root/data/spark-staging``; the cluster profile
    reads ``redis_cluster_nodes`` (tests/utils/redis_cluster.py).
    """
    repo = root / "feature_repo"
    shutil.copytree(FEATURE_REPO, repo, ignore=shutil.ignore_patterns("__pycache__", "data"))
    for yaml_file in repo.glob("feature_store*.yaml"):
        text = re.sub(r"^project: .*$", f"project: {project}", yaml_file.read_text(), flags=re.M)
        yaml_file.write_text(text)
    data_dir = root / "data"
    data_dir.mkdir(exist_ok=True)
    feast = FeastSettings(
        repo_path=repo,
        profile=profile,
        redis_url=f"{REDIS_HOST}:{REDIS_PORT},db={redis_db}",
        registry_url=registry_url,
        redis_cluster_nodes=redis_cluster_nodes,
        spark_master=spark_master,
        spark_staging=str((data_dir / "spark-staging").resolve()),
    )
    return TestRepo(project=project, feast=feast, data=DataSettings(data_dir=data_dir))


def tamper_registry(repo: TestRepo, view: str, extra: str) -> None:
    """Append ``extra`` to a view's stored function source in the file registry."""
    from feast.protos.feast.core.Registry_pb2 import Registry

    path = repo.data.data_dir / "registry.db"
    registry = Registry.FromString(path.read_bytes())
    [stored] = [v for v in registry.on_demand_feature_views if v.spec.name == view]
    udf = stored.spec.feature_transformation.user_defined_function
    udf.body_text = udf.body_text + extra
    path.write_bytes(registry.SerializeToString())
