"""`run_training` records its outcome for Prometheus, also when it fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import InputError
from core.settings import MlflowSettings
from tests.utils.feast_repo import make_feature_repo
from tests.utils.mlflow_store import copy_empty_store
from tests.utils.training import training_config
from tests.utils.workflow import read_textfile
from training.pipeline import run_training

pytestmark = [
    pytest.mark.unit,  # in-process only: `make test-unit`
    pytest.mark.filterwarnings(
        # MLflow 3.17's SQLite tracking store uses a loader option that SQLAlchemy 2.1 deprecates.
        "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
    ),
]


def test_bad_input_is_recorded_as_the_last_training_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_METRICS_TEXTFILE_DIR", str(tmp_path / "metrics"))
    repo = make_feature_repo(tmp_path, project="unused", profile="embedded")
    config = training_config(repo.feast, tmp_path / "missing.parquet", min_auc=0.7)
    with pytest.raises(InputError, match="feature service 'churn_v1' not found"):
        run_training(
            config,
            mlflow_settings=MlflowSettings(
                tracking_uri=f"sqlite:///{copy_empty_store(tmp_path / 'm.db')}"
            ),
        )
    metrics = read_textfile(tmp_path / "metrics" / "training.prom")
    assert metrics['churn_training_last_outcome{outcome="bad_input"}'] == 1
    assert metrics['churn_training_last_outcome{outcome="registered"}'] == 0
    assert metrics["churn_training_min_auc"] == 0.7
    assert "churn_training_test_roc_auc" not in metrics
