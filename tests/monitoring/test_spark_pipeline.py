"""The churn commands, unchanged, on the spark profile against the standalone cluster.

`churn apply`, `churn materialize`, `churn skew-check`, `churn train` and `churn drift` run
as a user types them, each a process whose Spark driver uses the cluster's two executors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from materialize.apply import apply_feature_repo
from materialize.stream.activity import publish_events
from tests.utils.feast_repo import make_feature_repo
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.history import START, write_history
from tests.utils.monitoring import write_prediction_log
from tests.utils.services import (
    REDIS_HOST,
    REDIS_PORT,
    delete_project_keys,
    redis_client,
    unique_name,
)
from tests.utils.spark import SparkCluster, applications, executor_commands
from tests.utils.stream import activity

# Spark on the shared 2-core machine: a driver JVM starts in 10-60 s and each `feast`/`churn`
# process starts its own; the session-wide cluster start counts against the first test.
pytestmark = [
    pytest.mark.timeout(1800),
    pytest.mark.filterwarnings(
        # MLflow 3.17's SQLite tracking store uses a loader option that SQLAlchemy 2.1 deprecates.
        "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
    ),
]

CHURN = str(Path(sys.executable).with_name("churn"))
_REDIS_DB = 11
_DAYS = 70


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHURN, *args], env=env, capture_output=True, text=True, timeout=900, check=False
    )


@pytest.fixture(scope="module")
def spark_env(
    tmp_path_factory: pytest.TempPathFactory, spark_cluster: SparkCluster, redis_available: None
) -> Iterator[dict[str, str]]:
    """An applied spark-profile repo with 70 days of daily snapshots and labels."""
    project = unique_name("spark_pipe")
    repo = make_feature_repo(
        tmp_path_factory.mktemp("spark_pipeline"),
        project=project,
        profile="spark",
        redis_db=_REDIS_DB,
        spark_master=spark_cluster.master_url,
    )
    env = {
        **os.environ,
        "CHURN_DATA_DIR": str(repo.data.data_dir),
        "CHURN_FEAST_REPO_PATH": str(repo.feast.repo_path),
        "CHURN_FEAST_PROFILE": "spark",
        "CHURN_SPARK_MASTER": spark_cluster.master_url,
        "CHURN_SPARK_STAGING": str(repo.data.data_dir / "spark-staging"),
        "CHURN_REDIS_URL": f"{REDIS_HOST}:{REDIS_PORT},db={_REDIS_DB}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "CHURN_TRAIN_MIN_AUC": "0.6",
        "CHURN_MONITORING_MAX_DATA_LAG_HOURS": "0",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    write_history(repo.data, users=40, days=_DAYS, seed=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHURN_DATA_DIR", env["CHURN_DATA_DIR"])
        apply_feature_repo(repo.feast)
    yield env
    delete_project_keys(project, db=_REDIS_DB)


def _materialization_spark_conf() -> dict[str, str]:
    """The shipped spark profile's batch_engine spark_conf."""
    import yaml

    from core.settings import PROJECT_ROOT

    profile = yaml.safe_load(
        (PROJECT_ROOT / "feature_repo" / "feature_store.spark.yaml").read_text()
    )
    conf: dict[str, str] = profile["batch_engine"]["spark_conf"]
    return conf


def _started_since(cluster: SparkCluster, before: dict[str, str], *, name: str) -> list[str]:
    """The ids of the applications called ``name`` that the cluster lists and ``before`` did not.

    Filtered by name: the run's cluster is shared, and an application of another test (a
    Feast session another worker opened, say) may start in the same interval.
    """
    started = {app: called for app, called in applications(cluster).items() if app not in before}
    found = sorted(app for app, called in started.items() if called == name)
    assert found, f"no new application called {name!r}; new ones: {started}"
    return found


def test_materialize_skew_check_train_and_drift_run_on_the_spark_profile(
    spark_env: dict[str, str], spark_cluster: SparkCluster, tmp_path: Path
) -> None:
    # Up to the history's end, not now: the skew check compares at the materialization's end,
    # and by now the whole history may be older than the view's ttl.
    end = (START + timedelta(days=_DAYS)).isoformat()
    before = applications(spark_cluster)
    materialized = _run(spark_env, "materialize", "--start", "2025-01-01", "--end", end)
    assert materialized.returncode == 0, materialized.stdout + materialized.stderr
    # The engine started the materialization's own application, with the profile's
    # batch_engine spark_conf over the offline store's: its executors' JVM options.
    engine_conf = _materialization_spark_conf()
    java_options = engine_conf["spark.executor.extraJavaOptions"]
    for materializing in _started_since(spark_cluster, before, name=engine_conf["spark.app.name"]):
        launched = executor_commands(spark_cluster, materializing)
        assert launched, "no executor of the materialization's application"
        assert all(java_options in command for command in launched)

    skew = _run(spark_env, "skew-check", "--sample", "20", "--seed", "1")
    assert skew.returncode == 0, skew.stdout + skew.stderr
    assert "OK: online and offline agree on every sampled value" in skew.stdout
    assert "on 20 entities (profile spark)" in skew.stdout
    # The users' activity, streamed into the spark profile's push source (its SparkSource
    # directory): the streamed windows read offline through Spark equal the online ones.
    key = unique_name("churn:spark-events")
    events = activity(list(range(1, 41)), per_user=12, start=START + timedelta(days=_DAYS - 1))
    publish_events(redis_client(_REDIS_DB), events, key=key)
    stream_env = {
        **spark_env,
        "CHURN_STREAM_KEY": key,
        "CHURN_STREAM_DEAD_LETTER_KEY": f"{key}:dead",
    }
    streamed = _run(stream_env, "stream", "--until-idle")
    redis_client(_REDIS_DB).delete(key, f"{key}:dead")
    assert streamed.returncode == 0, streamed.stdout + streamed.stderr
    assert f"{len(events)} entries: {len(events)} applied" in streamed.stdout
    skew_v2 = _run(
        spark_env, "skew-check", "--service", "churn_v2", "--sample", "40", "--seed", "1"
    )
    assert skew_v2.returncode == 0, skew_v2.stdout + skew_v2.stderr
    assert "events_24h" in skew_v2.stdout and "on 40 entities (profile spark)" in skew_v2.stdout
    staging = Path(spark_env["CHURN_SPARK_STAGING"])
    # Every read is staged by the executors and removed after (Feast's to_df() keeps its copy).
    assert not staging.exists() or list(staging.iterdir()) == []

    before = applications(spark_cluster)
    trained = _run(spark_env, "train", "--trials", "2", "--no-progress")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    # Training's joins run in the offline store's application, without those options.
    for training in _started_since(spark_cluster, before, name="churn-feast"):
        joined = executor_commands(spark_cluster, training)
        assert joined, "no executor of training's application"
        assert not any(java_options in command for command in joined)

    out = tmp_path / "drift"
    drift = _run(spark_env, "drift", "--out", str(out))
    assert drift.returncode == 0, drift.stdout + drift.stderr
    document = json.loads((out / "drift.json").read_text())
    assert [item["feature"] for item in document["features"]] == CHURN_V1_FEATURES
    assert document["summary"]["major"] == []
    assert document["summary"]["sources"]["statistics"].startswith("in process")

    # The same comparison from Spark aggregates: PSI and counts exact, KS within its bound.
    aggregated_out = tmp_path / "drift-spark"
    aggregated = _run(
        {**spark_env, "CHURN_MONITORING_STATISTICS": "spark"}, "drift", "--out", str(aggregated_out)
    )
    assert aggregated.returncode == 0, aggregated.stdout + aggregated.stderr
    on_spark = json.loads((aggregated_out / "drift.json").read_text())
    assert on_spark["summary"]["sources"]["statistics"].startswith("spark aggregates")
    rows = ("reference_rows", "current_rows")
    assert [on_spark["summary"][n] for n in rows] == [document["summary"][n] for n in rows]
    pairs = [*zip(on_spark["features"], document["features"], strict=True)]
    pairs.append((on_spark["score"], document["score"]))
    for spark_result, local in pairs:
        assert (spark_result["feature"], spark_result["kind"]) == (local["feature"], local["kind"])
        assert spark_result["severity"] == local["severity"]
        for side in ("reference", "current"):
            assert spark_result[side]["count"] == local[side]["count"]
            assert spark_result[side]["mean"] == pytest.approx(local[side]["mean"], rel=1e-9)
        if local["psi"] is None:  # insufficient or empty: nothing tested on either side
            assert spark_result["psi"] is None and spark_result["statistic"] is None
            continue
        assert spark_result["psi"] == pytest.approx(local["psi"], rel=1e-9, abs=1e-12)
        if local["kind"] == "continuous":  # D_grid <= D <= D_grid + about 2 / 1000
            assert spark_result["statistic"] <= local["statistic"] + 1e-12
            assert local["statistic"] <= spark_result["statistic"] + 0.0025
        else:
            assert spark_result["statistic"] == pytest.approx(local["statistic"], rel=1e-9)
    # The quality checks come from the same aggregates: the same findings, the same counts.
    assert on_spark["summary"]["quality"] == document["summary"]["quality"]
    for spark_check, local_check in zip(on_spark["quality"], document["quality"], strict=True):
        assert spark_check["rows"] == local_check["rows"]
        for part in ("out_of_range", "unseen_categories"):
            if local_check[part] is None:
                assert spark_check[part] is None
            else:
                assert spark_check[part]["share"] == pytest.approx(local_check[part]["share"])
    # The classifier's rows are drawn by the executors on one side, here on the other.
    for verdict in (on_spark["summary"]["multivariate"], document["summary"]["multivariate"]):
        assert verdict["status"] == "ok" and verdict["severity"] == "none"
        assert verdict["rows"]["current"] == document["summary"]["current_rows"]

    # Evaluation reads the labels window on the cluster: the same figures as in process.
    data_dir = Path(spark_env["CHURN_DATA_DIR"])
    labels = pd.read_parquet(data_dir / "offline" / "labels.parquet")
    scores = np.random.default_rng(2).random(len(labels))
    write_prediction_log(data_dir, labels, scores=scores, features=[], delay=timedelta(hours=2))
    evaluations = {}
    on_cluster = ["--labels", f"file://{data_dir / 'offline' / 'labels.parquet'}"]
    for profile, labels_option in (("spark", on_cluster), ("production", [])):
        evaluated = _run(
            spark_env,
            "evaluate",
            "--profile",
            profile,
            *labels_option,
            "--window",
            "7d",
            "--out",
            str(tmp_path / profile),
        )
        assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
        evaluations[profile] = json.loads((tmp_path / profile / "evaluation.json").read_text())
    assert evaluations["spark"]["matched"] == evaluations["production"]["matched"] >= 6 * 40
    assert evaluations["spark"]["roc_auc"] == evaluations["production"]["roc_auc"]

    staging = Path(spark_env["CHURN_SPARK_STAGING"])
    assert list(staging.iterdir()) == []
