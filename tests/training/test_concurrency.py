"""Jobs that overlap: trainings started together, and the champion lock they share."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow

from tests.training.conftest import ChurnRepo
from tests.utils.locks import assert_serializes
from tests.utils.training import shuffle_labels_before, write_parquet
from training.registry import HISTORY_TAG
from training.split import split_by_time

CHURN = str(Path(sys.executable).with_name("churn"))


def _train_process(
    churn_repo: ChurnRepo, labels: Path, seed: int, env: dict[str, str]
) -> subprocess.Popen[str]:
    feast = churn_repo.repo.feast
    command = [
        CHURN,
        "train",
        "--repo",
        str(feast.repo_path),
        "--profile",
        feast.profile,
        "--labels",
        str(labels),
        "--trials",
        "2",
        "--min-auc",
        "0",
        "--seed",
        str(seed),
        "--no-progress",
    ]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_three_trainings_at_once_on_a_fresh_store_keep_the_best_champion(
    churn_repo: ChurnRepo, tmp_path: Path
) -> None:
    labels = churn_repo.tables.labels
    test_start = split_by_time(labels).test["event_timestamp"].min()
    # Same rows and test window, three qualities: the true labels and two noisy versions.
    files = [
        churn_repo.tables.labels_path,
        write_parquet(shuffle_labels_before(labels, test_start, seed=1), tmp_path / "a.parquet"),
        write_parquet(shuffle_labels_before(labels, test_start, seed=2), tmp_path / "b.parquet"),
    ]
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    (tmp_path / "fresh").mkdir()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "CHURN_MLFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "CHURN_DATA_DIR": str(churn_repo.repo.data.data_dir),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }

    processes = [
        _train_process(churn_repo, path, seed, env)
        for seed, path in zip((11, 12, 13), files, strict=True)
    ]
    outputs = [process.communicate(timeout=550)[0] for process in processes]

    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = client.search_model_versions("name = 'churn-predictor'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3]
    scores = {str(v.version): float(v.tags["test_roc_auc"]) for v in versions}
    champion = client.get_model_version_by_alias("churn-predictor", "champion")
    # Every comparison used the same test window, so the champion is the best version.
    assert str(champion.version) == max(scores, key=lambda version: scores[version])
    promoted = [
        match.group(1)
        for output in outputs
        for match in re.finditer(r"registered churn-predictor v(\d+) as champion", output)
    ]
    history = json.loads(client.get_registered_model("churn-predictor").tags[HISTORY_TAG])
    # Every promotion is in the history, in an order where each beat the one before.
    assert sorted(history) == sorted(promoted)
    assert history[-1] == str(champion.version)
    assert [scores[v] for v in history] == sorted(scores[v] for v in history)
    assert len(set(history)) == len(history)


def test_the_postgresql_lock_is_an_advisory_lock_across_connections(
    postgres_url: str, tmp_path: Path
) -> None:
    assert_serializes(postgres_url, tmp_path / "unused")
    assert not (tmp_path / "unused").exists()
