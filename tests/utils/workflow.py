"""Factories for workflow tests: a private platform (repo, data, MLflow store) and runs of
the Dagster jobs with Dagster's own in-process runner."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult, JobDefinition

from tests.utils.feast_repo import TestRepo
from workflow.jobs import ChurnCommands
from workflow.settings import WorkflowSettings

CHURN = str(Path(sys.executable).with_name("churn"))


def today() -> datetime:
    """Midnight UTC today: data written before it is never in the future."""
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass
class Platform:
    """One isolated platform the jobs run against, as the stages' variables describe it."""

    repo: TestRepo
    env: dict[str, str]
    instance: DagsterInstance = field(default_factory=DagsterInstance.ephemeral)

    @property
    def data_dir(self) -> Path:
        return self.repo.data.data_dir

    @property
    def metrics_dir(self) -> Path:
        return self.data_dir / "metrics"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.data_dir / 'mlflow' / 'mlflow.db'}"

    def churn(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a churn command on this platform (set-up steps outside the schedule)."""
        completed = subprocess.run(
            [CHURN, *args], env=self.env, capture_output=True, text=True, timeout=600, check=False
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr
        return completed

    def run(
        self, job: JobDefinition, *, executable: str = CHURN, **env: str
    ) -> ExecuteInProcessResult:
        """Run a job to the end with Dagster's in-process runner (failures are returned)."""
        resources: dict[str, Any] = {
            "churn": ChurnCommands(executable=executable, env={**self.env, **env})
        }
        return job.execute_in_process(
            instance=self.instance, resources=resources, raise_on_error=False
        )

    def tags(self, result: ExecuteInProcessResult) -> dict[str, str]:
        """The run's tags as the instance stores them (what the Dagster UI shows)."""
        run = self.instance.get_run_by_id(result.run_id)
        assert run is not None
        return dict(run.tags)


def make_platform(repo: TestRepo) -> Platform:
    """Environment of the stages for ``repo`` (production profile, its own MLflow store)."""
    env = {
        **os.environ,
        "CHURN_DATA_DIR": str(repo.data.data_dir),
        "CHURN_FEAST_REPO_PATH": str(repo.feast.repo_path),
        "CHURN_FEAST_PROFILE": repo.feast.profile,
        "CHURN_REDIS_URL": repo.feast.redis_url,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "CHURN_TRAIN_MIN_AUC": "0.6",
        # Explicit: the tasks' processes start from this process's environment, where an
        # earlier test's mlflow.set_tracking_uri may have left another store.
        "MLFLOW_TRACKING_URI": f"sqlite:///{repo.data.data_dir / 'mlflow' / 'mlflow.db'}",
    }
    # The registry lives in the same store (an inherited MLFLOW_REGISTRY_URI would split them).
    env["MLFLOW_REGISTRY_URI"] = env["MLFLOW_TRACKING_URI"]
    return Platform(repo=repo, env=env)


def workflow_settings(**overrides: Any) -> WorkflowSettings:
    """Settings for tests: short retry delays, few tuning trials, a small skew sample."""
    values: dict[str, Any] = {
        "retry_attempts": 2,
        "retry_delay_s": 0.2,
        "drift_trials": 2,
        "skew_sample": 40,
        **overrides,
    }
    return WorkflowSettings(**values)


def read_textfile(path: Path) -> dict[str, float]:
    """Samples of a Prometheus textfile: ``name{labels}`` -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def days_ago(days: int) -> datetime:
    """Midnight UTC ``days`` days ago."""
    return today() - timedelta(days=days)
