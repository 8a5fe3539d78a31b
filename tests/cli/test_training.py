"""The training commands: `churn train`, `churn promote`, `churn rollback` as users run them.

Options in, exit codes and printed lines out; what a training run does is tested in
tests/training/.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

# Imported at collection: Feast calls warnings.simplefilter when imported, which inside a
# test would put its filters before the suite's "warnings are errors" for that test.
from feast import FeatureStore  # noqa: F401
from typer.testing import CliRunner

from core.exits import ExitCode
from core.settings import MlflowSettings
from tests.utils.services import unique_name
from tests.utils.training import (
    ChurnRepo,
    make_churn_repo,
    make_shop_repo,
    training_cli,
    write_parquet,
)
from training import PromoteRequest, RollbackRequest, TrainingConfig
from training.tracking import configure_mlflow


@pytest.fixture(scope="module")
def churn_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChurnRepo]:
    """An applied churn repo for this module's commands (tests only read it)."""
    yield make_churn_repo(tmp_path_factory.mktemp("churn_repo"))


def _client() -> mlflow.MlflowClient:
    configure_mlflow(MlflowSettings())
    return mlflow.MlflowClient()


def _repo_options(churn_repo: ChurnRepo) -> list[str]:
    feast = churn_repo.repo.feast
    return ["--repo", str(feast.repo_path), "--profile", feast.profile, "--no-progress"]


def test_promote_and_rollback_of_an_unknown_model_exit_2_naming_it() -> None:
    runner, cli = CliRunner(), training_cli()

    promoted = runner.invoke(cli, ["promote", "--version", "1", "--model-name", "nobody"])
    rolled = runner.invoke(cli, ["rollback", "--model-name", "nobody"])

    assert promoted.exit_code == ExitCode.BAD_INPUT
    assert "model 'nobody' has no version 1" in promoted.output
    assert rolled.exit_code == ExitCode.BAD_INPUT
    assert "model 'nobody' has no champion to roll back" in rolled.output


def test_the_model_name_comes_from_churn_model_name_unless_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One variable for every stage (core.settings.ModelSettings); training has no copy.
    monkeypatch.setenv("CHURN_MODEL_NAME", "shared-name")
    monkeypatch.setenv("CHURN_TRAIN_MODEL_NAME", "not-read")

    rolled = CliRunner().invoke(training_cli(), ["rollback"])

    assert rolled.exit_code == ExitCode.BAD_INPUT
    assert "model 'shared-name' has no champion" in rolled.output
    assert TrainingConfig().model_name == "shared-name"
    assert TrainingConfig(model_name="given").model_name == "given"
    assert PromoteRequest(version="1").model_name == "shared-name"
    assert RollbackRequest().model_name == "shared-name"


def test_a_model_below_the_gate_is_not_registered(churn_repo: ChurnRepo) -> None:
    result = CliRunner().invoke(
        training_cli(),
        [
            "train",
            *_repo_options(churn_repo),
            "--labels",
            str(churn_repo.tables.labels_path),
            "--trials",
            "2",
            "--min-auc",
            "0.999",
        ],
    )

    assert result.exit_code == ExitCode.BLOCKED, result.output
    assert "below the gate 0.9990: not registered" in result.output
    client = _client()
    assert client.search_registered_models() == []
    [run] = mlflow.search_runs(
        experiment_names=["churn-predictor"],
        filter_string="tags.`gate.passed` = 'false'",
        output_format="list",
    )
    assert "below the gate" in run.data.tags["gate.reason"]
    # Feast's own MLflow integration, switched on for training, tagged the retrieval.
    assert run.data.tags["feast.retrieval_type"] == "historical"
    assert run.data.metrics["test_roc_auc"] < 0.999
    parts = [int(run.data.params[f"data.rows_{part}"]) for part in ("train", "val", "test")]
    assert sum(parts) == len(churn_repo.tables.labels)
    assert run.data.params["data.train_end"] < run.data.params["data.test_start"]
    logged = {artifact.path for artifact in client.list_artifacts(run.info.run_id)}
    assert {"mean_abs_contributions.json", "mean_abs_contributions.png"} <= logged


def test_another_feast_repo_trains_through_the_same_command(tmp_path: Path) -> None:
    shop = make_shop_repo(tmp_path, project=unique_name("shops"))

    result = CliRunner().invoke(
        training_cli(),
        [
            "train",
            "--repo",
            str(shop.feast.repo_path),
            "--feature-service",
            "shop_risk_v2",
            "--labels",
            str(shop.labels_path),
            "--label-column",
            "defaulted",
            "--model-name",
            "shop-risk",
            "--trials",
            "3",
            "--min-auc",
            "0.7",
            "--no-progress",
        ],
    )

    assert result.exit_code == 0, result.output
    version = _client().get_model_version_by_alias("shop-risk", "champion")
    assert version.tags["feast.feature_service"] == "shop_risk_v2"
    assert version.tags["feast.features"] == ",".join(shop.features)
    model = mlflow.sklearn.load_model("models:/shop-risk@champion")
    assert list(model.feature_names_in_) == shop.features


def test_bad_input_exits_2_naming_the_problem(churn_repo: ChurnRepo, tmp_path: Path) -> None:
    labels = write_parquet(
        churn_repo.tables.labels.rename(columns={"label": "churned"}), tmp_path / "l.parquet"
    )

    result = CliRunner().invoke(
        training_cli(), ["train", *_repo_options(churn_repo), "--labels", str(labels)]
    )

    assert result.exit_code == ExitCode.BAD_INPUT
    assert "lacks column(s) label" in result.output


def test_churn_train_takes_its_options_from_churn_train_variables(
    churn_repo: ChurnRepo, tmp_path: Path
) -> None:
    # As a scheduler runs it: no option on the command line, everything from CHURN_TRAIN_*.
    feast = churn_repo.repo.feast
    environment = {
        **os.environ,
        "CHURN_DATA_DIR": str(churn_repo.repo.data.data_dir),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "CHURN_MLFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "CHURN_TRAIN_REPO_PATH": str(feast.repo_path),
        "CHURN_TRAIN_PROFILE": feast.profile,
        "CHURN_TRAIN_LABELS_PATH": str(churn_repo.tables.labels_path),
        "CHURN_TRAIN_TRIALS": "3",
        "CHURN_TRAIN_MIN_AUC": "0.999",
        "CHURN_TRAIN_PROGRESS": "false",
    }

    completed = subprocess.run(
        [str(Path(sys.executable).with_name("churn")), "train"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )

    output = completed.stdout + completed.stderr
    # Exit 3: CHURN_TRAIN_MIN_AUC=0.999 was honoured too (the default gate is 0.78).
    assert completed.returncode == ExitCode.BLOCKED, output
    assert re.search(r"study \S+: 3 complete", output), output
    assert "below the gate 0.9990" in output
