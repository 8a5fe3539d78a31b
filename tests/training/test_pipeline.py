"""End to end: training on real Feast and MLflow, champion/challenger, rollback, promotion.

The commands' options and exit codes are tested in tests/cli/test_training.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import mlflow.artifacts
import numpy as np
import pandas as pd
from typer.testing import CliRunner

from core.exits import ExitCode
from core.model_checks import CHECK_ROWS_ARTIFACT
from core.settings import MlflowSettings
from tests.training.conftest import ChurnRepo
from tests.utils.training import (
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
    # The fill missing-value policy's values: a finite training median per feature.
    fill_values = json.loads(version.tags["churn.fill_values"])
    assert sorted(fill_values) == sorted(features)
    assert all(np.isfinite(value) for value in fill_values.values())
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
    # The registered model is calibrated on the validation window (core.calibration); the
    # run holds the ECE and the reliability curves before and after, on the test window.
    run = client.get_run(version.run_id)
    method = run.data.params["calibration.method"]
    assert method in ("none", "sigmoid", "isotonic")
    assert (type(flavour).__name__ == "CalibratedClassifierCV") == (method != "none")
    metrics = run.data.metrics
    assert {"test_ece", "test_ece_uncalibrated", "test_roc_auc_uncalibrated"} <= set(metrics)
    assert abs(metrics["test_roc_auc"] - metrics["test_roc_auc_uncalibrated"]) < 0.01
    curves = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/calibration/reliability.json")
    assert curves["calibrated"]["ece"] == metrics["test_ece"]
    assert sum(item["count"] for item in curves["uncalibrated"]["bins"]) > 0
    # The bias shifted windows add to label-free estimates, carried with the version.
    assert 0 <= metrics["test_estimate_calibration_sd"] < 0.1
    # Each feature's training range, where estimates of this version claim a figure.
    for name in features:
        assert metrics[f"train_min.{name}"] <= metrics[f"train_max.{name}"]
    assert metrics[f"train_min.{features[0]}"] < metrics[f"train_max.{features[0]}"]


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
