"""The training run's global view: mean |TreeSHAP contribution| per feature, JSON and chart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

from tests.utils.mlflow_store import copy_empty_store
from tests.utils.serving import training_frame
from training.global_view import CONTRIBUTIONS_JSON, CONTRIBUTIONS_PNG, log_mean_contributions

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


@pytest.fixture(autouse=True)
def _own_store(tmp_path: Path) -> Iterator[None]:
    """A tracking store of this test's own; the process-wide URI is restored after."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{copy_empty_store(tmp_path / 'mlflow.db')}")
    yield
    mlflow.set_tracking_uri(previous)


def _artifacts(run_id: str, folder: Path) -> Path:
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(folder)))


def test_mean_contributions_are_logged_as_json_and_a_bar_chart(tmp_path: Path) -> None:
    frame, labels = training_frame(1500, seed=6)
    model = HistGradientBoostingClassifier(max_iter=40, early_stopping=False).fit(frame, labels)
    experiment = mlflow.create_experiment("view", (tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        means = log_mean_contributions(model, frame.iloc[:300])
    folder = _artifacts(run.info.run_id, tmp_path / "out")
    logged = json.loads((folder / CONTRIBUTIONS_JSON).read_text())

    assert means is not None
    assert logged["mean_abs_contributions"] == means
    assert next(iter(means)) == "feature_1"  # the training frame's churn follows usage
    assert list(means.values()) == sorted(means.values(), reverse=True)
    assert logged["rows"] == 300
    assert (folder / CONTRIBUTIONS_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_family_without_explanations_logs_why(tmp_path: Path) -> None:
    frame, labels = training_frame(300, seed=6)
    forest = RandomForestClassifier(n_estimators=3).fit(frame, labels)
    experiment = mlflow.create_experiment("view", (tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        assert log_mean_contributions(forest, frame) is None
    folder = _artifacts(run.info.run_id, tmp_path / "out")

    assert (
        "RandomForestClassifier"
        in json.loads((folder / CONTRIBUTIONS_JSON).read_text())["unsupported"]
    )
    assert not (folder / CONTRIBUTIONS_PNG).exists()
