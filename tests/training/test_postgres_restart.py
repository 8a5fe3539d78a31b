"""A PostgreSQL restart during distributed tuning (`churn train --workers 2 --storage`).

A private cluster (initdb + pg_ctl on a free port) is stopped and started under the
running command; the shared server is never touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from tests.training.conftest import ChurnRepo
from tests.utils.services import PrivatePostgres
from training.tuning import normalize_storage_url

CHURN = str(Path(sys.executable).with_name("churn"))


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres()
    cluster.init()
    yield cluster
    cluster.destroy()


def _start_training(
    churn_repo: ChurnRepo, storage: str, tmp_path: Path, trials: int, retry: float
) -> subprocess.Popen[str]:
    feast = churn_repo.repo.feast
    env = {
        **os.environ,
        "CHURN_DATA_DIR": str(tmp_path / "data"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "CHURN_TRAIN_STORAGE_RETRY_SECONDS": str(retry),
    }
    command = [
        CHURN, "train", "--repo", str(feast.repo_path), "--profile", feast.profile,
        "--labels", str(churn_repo.tables.labels_path), "--trials", str(trials),
        "--workers", "2", "--storage", storage, "--study-name", "restarted",
        "--min-auc", "0", "--no-progress",
    ]  # fmt: skip
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _finished_trials(url: str) -> int:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    sa.text("SELECT count(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')")
                ).scalar_one()
            )
    except sa.exc.SQLAlchemyError:
        return 0  # tables not created yet
    finally:
        engine.dispose()


def _wait_for_trials(url: str, count: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 300
    while _finished_trials(url) < count:
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "tuning did not start"
        time.sleep(0.2)


def test_workers_resume_after_a_postgresql_restart(
    churn_repo: ChurnRepo, private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    url = private_postgres.create_database("optuna")
    trials = 40
    process = _start_training(churn_repo, url, tmp_path, trials, retry=120)

    _wait_for_trials(url, 2, process)
    private_postgres.stop()  # every connection of the workers is cut
    assert process.poll() is None, "tuning finished before the restart: use more trials"
    time.sleep(3)
    private_postgres.start()
    output, _ = process.communicate(timeout=500)

    assert process.returncode == 0, output
    assert "Optuna storage unreachable" in output and "resuming" in output
    storage = optuna.storages.RDBStorage(normalize_storage_url(url))
    try:
        study = optuna.load_study(study_name="restarted", storage=storage)
        finished = [t for t in study.trials if t.state.is_finished() and t.state.name != "FAIL"]
    finally:
        storage.engine.dispose()
    assert len(finished) >= trials  # every worker ran its share, the interrupted ones again
    assert "registered churn-predictor v1 as champion" in output


def test_a_database_that_stays_down_fails_with_a_clear_message(
    churn_repo: ChurnRepo, private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    url = private_postgres.create_database("optuna")
    process = _start_training(churn_repo, url, tmp_path, trials=200, retry=5)

    _wait_for_trials(url, 2, process)
    private_postgres.stop()
    output, _ = process.communicate(timeout=300)

    assert process.returncode == 2, output
    assert "unreachable for 5 s during tuning" in output
    assert "Re-run with --study-name restarted to continue the study" in output
    assert "postgres@127.0.0.1" in output
