"""Distributed tuning: worker processes share one Optuna study on PostgreSQL."""

from __future__ import annotations

import mlflow
import optuna

from tests.training.conftest import ChurnRepo
from tests.utils.training import training_config
from training.pipeline import run_training
from training.tuning import normalize_storage_url


def test_two_workers_on_postgresql_share_one_study(
    churn_repo: ChurnRepo, postgres_url: str
) -> None:
    config = training_config(
        churn_repo.repo.feast,
        churn_repo.tables.labels_path,
        trials=4,
        workers=2,
        storage=postgres_url,
        study_name="shared-study",
        min_auc=0.0,
    )

    result = run_training(config)

    storage = optuna.storages.RDBStorage(normalize_storage_url(postgres_url))
    try:
        study = optuna.load_study(study_name="shared-study", storage=storage)
        finished = [t for t in study.trials if t.state.is_finished()]
        best_params = study.best_params
    finally:
        storage.engine.dispose()  # the database is dropped after the test
    assert len(finished) == 4
    # Each worker ran its share of the trials in its own process.
    assert sorted(t.user_attrs["worker"] for t in finished) == [0, 0, 1, 1]
    assert result.registered and result.best_params == best_params
    [parent] = mlflow.search_runs(
        experiment_names=["churn-predictor"],
        filter_string=f"attributes.run_id = '{result.run_id}'",
        output_format="list",
    )
    assert parent.data.params["optuna.storage"].startswith("postgresql+psycopg://postgres@")
    assert parent.data.params["workers"] == "2"
    nested = mlflow.search_runs(
        experiment_names=["churn-predictor"],
        filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'",
        output_format="list",
    )
    assert sorted(run.data.tags["optuna.worker"] for run in nested) == ["0", "0", "1", "1"]
