"""Reading an aliased version's metrics straight from a SQLite MLflow store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from core.registry_sqlite import UNREAD, AliasMetrics, alias_metrics


def test_other_stores_and_foreign_files_are_left_to_mlflows_client(tmp_path: Path) -> None:
    assert alias_metrics("http://mlflow:5000", "m", "champion", ["a"]) is UNREAD
    assert alias_metrics(f"sqlite:///{tmp_path / 'none.db'}", "m", "champion", ["a"]) is None
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE t (x)")
    assert alias_metrics(f"sqlite:///{foreign}", "m", "champion", ["a"]) is UNREAD
    assert not (tmp_path / "none.db").exists()  # reading never creates a store


def test_the_alias_version_and_its_runs_latest_metrics_as_mlflow_reports_them(
    tmp_path: Path,
) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("e", (tmp_path / "artifacts").as_uri())
    runs = [client.create_run(experiment).info.run_id for _ in range(2)]
    client.log_metric(runs[1], "test_roc_auc", 0.7, step=0)
    client.log_metric(runs[1], "test_roc_auc", 0.8, step=1)  # the latest is read
    client.log_metric(runs[1], "other", 1.0)
    client.log_metric(runs[1], "train_min.feature_1", -2.5)
    client.log_metric(runs[1], "train_max.feature_1", 9.0)
    client.log_metric(runs[1], "train_minx", 3.0)  # not under the prefix "train_min."
    client.log_metric(runs[0], "train_min.feature_1", 0.0)  # another run's
    client.create_registered_model("m")
    for run_id in runs:
        client.create_model_version("m", f"runs:/{run_id}/model", run_id=run_id)
    assert alias_metrics(uri, "m", "champion", ["test_roc_auc"]) is None  # no alias yet
    client.set_registered_model_alias("m", "champion", "2")

    found = alias_metrics(
        uri, "m", "champion", ["test_roc_auc", "absent"], prefixes=["train_min.", "train_max."]
    )

    assert isinstance(found, AliasMetrics)
    assert found.version == "2" and found.run_id == runs[1]
    assert found.metrics == {
        "test_roc_auc": pytest.approx(0.8),
        "train_min.feature_1": -2.5,
        "train_max.feature_1": 9.0,
    }
    # The same answer as MLflow's own client on the same store: a schema change in a new
    # MLflow (renamed tables, metrics kept elsewhere) fails here, not in production.
    version = client.get_model_version_by_alias("m", "champion")
    assert (found.version, found.run_id) == (str(version.version), version.run_id)
    logged = client.get_run(str(version.run_id)).data.metrics
    assert found.metrics == {
        key: value
        for key, value in logged.items()
        if key == "test_roc_auc" or key.startswith(("train_min.", "train_max."))
    }
    assert alias_metrics(uri, "m", "champion", ["other"]) == AliasMetrics(
        version="2", run_id=runs[1], metrics={"other": logged["other"]}
    )
