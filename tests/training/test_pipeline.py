"""End to end: `churn train` on real Feast and MLflow, the gate, champion/challenger, rollback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.artifacts
import pandas as pd
from typer.testing import CliRunner

from core.exits import ExitCode
from core.model_checks import CHECK_ROWS_ARTIFACT
from core.settings import MlflowSettings
from tests.training.conftest import ChurnRepo
from tests.utils.services import unique_name
from tests.utils.training import (
    make_shop_repo,
    shuffle_labels_before,
    training_cli,
    training_config,
    write_parquet,
)
from training.pipeline import run_training
from training.registry import HISTORY_TAG
from training.split import split_by_time
from training.tracking import configure_mlflow


def _client() -> mlflow.MlflowClient:
    configure_mlflow(MlflowSettings())
    return mlflow.MlflowClient()


def _repo_options(churn_repo: ChurnRepo) -> list[str]:
    feast = churn_repo.repo.feast
    return ["--repo", str(feast.repo_path), "--profile", feast.profile, "--no-progress"]


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


def test_champion_challenger_rollback_and_promotion(churn_repo: ChurnRepo, tmp_path: Path) -> None:
    labels = churn_repo.tables.labels
    test_start = split_by_time(labels).test["event_timestamp"].min()
    # Same rows and test window; labels before the test window permuted: a weak model.
    weak = write_parquet(shuffle_labels_before(labels, test_start), tmp_path / "weak.parquet")
    good = churn_repo.tables.labels_path
    feast = churn_repo.repo.feast

    first = run_training(training_config(feast, weak, min_auc=0.0))
    better = run_training(training_config(feast, good, min_auc=0.0))
    worse = run_training(training_config(feast, weak, min_auc=0.0, seed=4))

    assert (first.version, first.promoted, first.reason.endswith("first champion")) == (
        "1",
        True,
        True,
    )
    assert better.version == "2" and better.promoted
    assert better.champion_test_roc_auc is not None and better.test_roc_auc is not None
    assert better.champion_test_roc_auc < better.test_roc_auc
    assert worse.version == "3" and not worse.promoted
    assert "does not beat champion v2" in worse.reason
    client = _client()
    assert str(client.get_model_version_by_alias("churn-predictor", "champion").version) == "2"
    assert str(client.get_model_version_by_alias("churn-predictor", "challenger").version) == "3"

    runner, cli = CliRunner(), training_cli()
    rolled = runner.invoke(cli, ["rollback"])
    assert rolled.exit_code == 0, rolled.output
    assert "-> v1 (rolled back from v2)" in rolled.output
    assert str(client.get_model_version_by_alias("churn-predictor", "champion").version) == "1"
    again = runner.invoke(cli, ["rollback"])
    assert again.exit_code == ExitCode.BAD_INPUT
    assert "nothing to roll back to" in again.output

    promoted = runner.invoke(cli, ["promote", "--version", "3"])
    assert promoted.exit_code == 0, promoted.output
    model = client.get_registered_model("churn-predictor")
    # The challenger became champion, so its challenger alias is gone.
    assert {alias: str(v) for alias, v in model.aliases.items()} == {"champion": "3"}
    assert model.tags[HISTORY_TAG] == '["1", "3"]'
    unknown = runner.invoke(cli, ["promote", "--version", "42"])
    assert unknown.exit_code == ExitCode.BAD_INPUT and "has no version 42" in unknown.output

    version = client.get_model_version("churn-predictor", "2")
    features = version.tags["feast.features"].split(",")
    assert version.tags["feast.feature_service"] == "churn_v1"
    assert version.tags["feast.project"] == churn_repo.repo.project
    rows = pd.DataFrame([[1.5, 4.0, 0.37, 0.9, 0.0, 1.0, 0.0]], columns=features)
    flavour = mlflow.sklearn.load_model("models:/churn-predictor/2")
    generic = mlflow.pyfunc.load_model("models:/churn-predictor/2")
    assert list(flavour.feature_names_in_) == features
    assert generic.predict(rows)[0, 1] == flavour.predict_proba(rows)[0, 1]
    # Serving checks its inference engine on the run's test rows, left beside the model.
    check_rows = mlflow.artifacts.download_artifacts(
        run_id=version.run_id, artifact_path=CHECK_ROWS_ARTIFACT, dst_path=str(tmp_path)
    )
    assert list(pd.read_parquet(check_rows).columns) == features


def test_the_same_seed_gives_the_same_best_parameters(churn_repo: ChurnRepo) -> None:
    feast, labels = churn_repo.repo.feast, churn_repo.tables.labels_path

    first = run_training(training_config(feast, labels, trials=7, min_auc=0.0))
    second = run_training(training_config(feast, labels, trials=7, min_auc=0.0))

    assert first.best_params == second.best_params
    assert first.test_roc_auc == second.test_roc_auc
    assert first.trials_complete + first.trials_pruned == 7
    runs = mlflow.search_runs(experiment_names=["churn-predictor"], output_format="list")
    first_run = next(run for run in runs if run.info.run_id == first.run_id)
    second_run = next(run for run in runs if run.info.run_id == second.run_id)
    assert first_run.data.tags["data.sha256"] == second_run.data.tags["data.sha256"]
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == first.run_id]
    assert len(nested) == 7


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


def test_a_champion_is_not_scored_on_rows_it_was_fitted_on(
    churn_repo: ChurnRepo, tmp_path: Path
) -> None:
    labels = churn_repo.tables.labels
    feast = churn_repo.repo.feast
    champion = run_training(training_config(feast, churn_repo.tables.labels_path, min_auc=0.0))
    # A shorter labels file: its whole test window lies in the champion's training rows.
    cutoff = split_by_time(labels).train["event_timestamp"].max()
    earlier = write_parquet(labels[labels["event_timestamp"] <= cutoff], tmp_path / "early.parquet")

    challenger = run_training(training_config(feast, earlier, min_auc=0.0))

    assert champion.promoted and challenger.registered and not challenger.promoted
    assert challenger.champion_test_roc_auc is None
    assert f"champion v{champion.version} was fitted on rows up to" in challenger.reason


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
