"""Training sets on the spark profile, run on a local standalone cluster (two workers).

The same tables are applied twice: once on the embedded profile (DuckDB offline store) and
once on the spark profile (SparkSource, Spark offline store); the training sets must match.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from core.compute.spark.io import spark_session
from core.feast_store import open_feature_store
from core.settings import FeastProfile
from materialize.apply import apply_feature_repo
from tests.utils.feast_repo import TestRepo, make_feature_repo
from tests.utils.services import unique_name
from tests.utils.spark import SparkCluster
from tests.utils.training import (
    BACKFILLED_USER,
    LATER_SNAPSHOT_USER,
    add_planted_rows,
    make_churn_tables,
    write_parquet,
)
from training.dataset import build_training_set

# Spark on the shared 2-core machine: a driver JVM starts in 10-60 s and each `feast`/`churn`
# process starts its own; the session-wide cluster start counts against the first test.
pytestmark = pytest.mark.timeout(1800)


@dataclass(frozen=True)
class TwinRepos:
    """One set of tables applied on the DuckDB (embedded) and on the spark profile."""

    duckdb: TestRepo
    spark: TestRepo
    labels: Path


def _applied(root: Path, *, profile: FeastProfile, master: str) -> tuple[TestRepo, pd.DataFrame]:
    """An applied repo with the same (seeded) tables; returns it and the planted labels."""
    repo = make_feature_repo(
        root, project=unique_name("churn_spark"), profile=profile, spark_master=master
    )
    make_churn_tables(repo.data, users=60, snapshots=6)
    planted = add_planted_rows(repo.data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHURN_DATA_DIR", str(repo.data.data_dir))
        apply_feature_repo(repo.feast)
    return repo, planted


@pytest.fixture(scope="module")
def twin_repos(tmp_path_factory: pytest.TempPathFactory, spark_cluster: SparkCluster) -> TwinRepos:
    master = spark_cluster.master_url
    duckdb, planted = _applied(tmp_path_factory.mktemp("duckdb"), profile="embedded", master=master)
    spark, _ = _applied(tmp_path_factory.mktemp("spark"), profile="spark", master=master)
    labels = pd.read_parquet(duckdb.data.labels_path)
    labels_path = write_parquet(
        pd.concat([labels, planted], ignore_index=True),
        tmp_path_factory.mktemp("labels") / "labels.parquet",
    )
    return TwinRepos(duckdb=duckdb, spark=spark, labels=labels_path)


def test_the_cluster_runs_tasks_in_two_worker_executors(
    twin_repos: TwinRepos, spark_cluster: SparkCluster
) -> None:
    store = open_feature_store(twin_repos.spark.feast)
    build_training_set(store, feature_service="churn_v1", labels_path=twin_repos.labels)

    # The run's cluster is shared by the test workers: find this session's application.
    application_id = spark_session(store).sparkContext.applicationId
    with urllib.request.urlopen(f"{spark_cluster.web_url}/json/", timeout=5) as response:
        status = json.load(response)
    [application] = [app for app in status["activeapps"] if app["id"] == application_id]
    assert application["cores"] == 2  # one executor on each worker
    assert all(worker["coresused"] >= 1 for worker in status["workers"])


def test_a_second_application_runs_while_this_session_holds_its_executors(
    twin_repos: TwinRepos, spark_cluster: SparkCluster
) -> None:
    # The commands a test (or a scheduler) starts run their own driver beside a live session:
    # the cluster must have room for both, or the second waits for ever.
    store = open_feature_store(twin_repos.spark.feast)
    build_training_set(store, feature_service="churn_v1", labels_path=twin_repos.labels)
    script = (
        "from pyspark.sql import SparkSession; "
        f"s = SparkSession.builder.master({spark_cluster.master_url!r})"
        ".config('spark.ui.enabled', 'false').getOrCreate(); "
        "print(s.range(1000).count()); s.stop()"
    )

    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=240
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip().splitlines()[-1] == "1000"


def test_the_training_set_on_spark_equals_the_duckdb_one(twin_repos: TwinRepos) -> None:
    on_duckdb = build_training_set(
        open_feature_store(twin_repos.duckdb.feast),
        feature_service="churn_v1",
        labels_path=twin_repos.labels,
        missing="keep",
    )
    on_spark = build_training_set(
        open_feature_store(twin_repos.spark.feast),
        feature_service="churn_v1",
        labels_path=twin_repos.labels,
        missing="keep",
    )

    pd.testing.assert_frame_equal(on_spark.frame, on_duckdb.frame)
    assert on_spark.fingerprint() == on_duckdb.fingerprint()
    assert on_spark.report == on_duckdb.report
    assert on_spark.report.leakage_rows == 0
    planted = on_spark.frame.set_index("user_id")
    assert planted.loc[LATER_SNAPSHOT_USER, "feature_1"] == 1.0
    assert planted.loc[BACKFILLED_USER, "feature_1"] == 1.0
