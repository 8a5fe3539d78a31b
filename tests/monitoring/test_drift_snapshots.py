"""`churn drift` without files: champion lineage from MLflow, windows through Feast.

A real Feast repo (embedded profile), real offline tables, a champion trained by
`churn train` (a subprocess, as a user runs it) and `churn drift` run the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import ExitStack, closing
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from core.compute import offline_compute
from core.errors import InputError
from core.feast_store import feature_store_session
from core.models import ModelRegistry
from core.settings import DataSettings
from materialize.apply import apply_feature_repo
from monitoring.retrain import read_decisions
from monitoring.snapshots import build_reference, load_champion_lineage
from tests.utils.feast_repo import TestRepo, make_feature_repo
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.history import START, write_history
from tests.utils.monitoring import write_prediction_log
from tests.utils.services import unique_name

pytestmark = pytest.mark.filterwarnings(
    # MLflow 3.17's SQLite tracking store uses a loader option that SQLAlchemy 2.1 deprecates.
    "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
)

CHURN = str(Path(sys.executable).with_name("churn"))
DAYS = 70  # whole weeks in the 70% training window: weekday features do not drift


@dataclass(frozen=True)
class Champion:
    """A trained and promoted model over a private repo and data folder."""

    repo: TestRepo
    env: dict[str, str]
    history: pd.DataFrame

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.repo.data.data_dir / 'mlflow' / 'mlflow.db'}"


def run_churn(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run a churn command in the champion's environment."""
    return subprocess.run(
        [CHURN, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def train_champion(root: Path, *, users: int = 60) -> Champion:
    """Private repo, 70 days of daily snapshots and labels, `churn apply` and `churn train`."""
    repo = make_feature_repo(root, project=unique_name("drift"), profile="embedded")
    env = _environment(repo)
    history = write_history(repo.data, users=users, days=DAYS, seed=1)
    _apply(repo)
    trained = run_churn(env, "train", "--trials", "2", "--no-progress")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    return Champion(repo=repo, env=env, history=history)


def _environment(repo: TestRepo) -> dict[str, str]:
    """The environment `churn` runs in for a champion's repo and data folder."""
    env = {
        **os.environ,
        "CHURN_DATA_DIR": str(repo.data.data_dir),
        "CHURN_FEAST_REPO_PATH": str(repo.feast.repo_path),
        "CHURN_FEAST_PROFILE": "embedded",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "CHURN_TRAIN_MIN_AUC": "0.6",
        # The history is fixed in the past; test_stale_data_* checks the default lag.
        "CHURN_MONITORING_MAX_DATA_LAG_HOURS": "0",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _apply(repo: TestRepo) -> None:
    """`churn apply` in-process; the FileSource path is taken from CHURN_DATA_DIR."""
    previous = os.environ.get("CHURN_DATA_DIR")
    os.environ["CHURN_DATA_DIR"] = str(repo.data.data_dir)
    try:
        apply_feature_repo(repo.feast)
    finally:
        if previous is None:
            os.environ.pop("CHURN_DATA_DIR")
        else:
            os.environ["CHURN_DATA_DIR"] = previous


def copy_champion(template: Champion, root: Path) -> Champion:
    """An independent copy of a trained champion: repo, offline tables, Feast, MLflow.

    The folder is copied; the Feast repo is applied again so its source reads the copy's
    tables, and every path of the old folder in the MLflow database (experiment, run and
    model artifact locations) is rewritten to the copy's, so nothing a test does (new
    snapshots, a retraining, decisions) reaches the template or another test.
    """
    old_root = template.repo.data.data_dir.parent
    shutil.copytree(old_root, root, dirs_exist_ok=True)
    repo = TestRepo(
        project=template.repo.project,
        feast=template.repo.feast.model_copy(update={"repo_path": root / "feature_repo"}),
        data=DataSettings(data_dir=root / "data"),
    )
    _rewrite_paths(repo.data.data_dir / "mlflow" / "mlflow.db", f"{old_root}/", f"{root}/")
    _apply(repo)
    return Champion(repo=repo, env=_environment(repo), history=template.history.copy())


def _rewrite_paths(database: Path, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` in every text column of a SQLite database."""
    with closing(sqlite3.connect(database)) as connection, connection:
        tables = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        for table in tables:
            for column in connection.execute(f'PRAGMA table_info("{table}")').fetchall():
                name, kind = column[1], str(column[2]).upper()
                if "CHAR" in kind or "TEXT" in kind:
                    connection.execute(
                        f'UPDATE "{table}" SET "{name}" = replace("{name}", ?, ?) '
                        f'WHERE instr("{name}", ?) > 0',
                        (old, new, old),
                    )


@pytest.fixture(scope="module")
def trained_champion(tmp_path_factory: pytest.TempPathFactory) -> Champion:
    """One trained champion for the module (training takes a while); never changed."""
    return train_champion(tmp_path_factory.mktemp("champion"))


@pytest.fixture
def champion(trained_champion: Champion, tmp_path: Path) -> Champion:
    """A private copy of the module's champion: each test may change its own."""
    return copy_champion(trained_champion, tmp_path / "champion")


def _train_run(champion: Champion) -> mlflow.entities.Run:
    client = mlflow.MlflowClient(tracking_uri=champion.tracking_uri)
    version = client.get_model_version_by_alias("churn-predictor", "champion")
    return client.get_run(version.run_id)


def test_reference_is_the_champions_training_window_through_the_feature_service(
    champion: Champion,
) -> None:
    registry = ModelRegistry(champion.tracking_uri)
    lineage = load_champion_lineage(registry, "churn-predictor", "champion")
    run = _train_run(champion)
    assert lineage.features == CHURN_V1_FEATURES
    assert lineage.train_end.isoformat() == run.data.params["data.train_end"]
    with feature_store_session(champion.repo.feast) as store, ExitStack() as stack:
        compute = offline_compute(store)
        reference = compute.to_pandas(build_reference(compute, store, lineage, stack=stack))
    assert len(reference) == int(run.data.params["data.rows_train"])
    history = champion.history
    expected = history.loc[
        (history["event_timestamp"] >= lineage.train_start)
        & (history["event_timestamp"] <= lineage.train_end)
    ]
    key = ["user_id", "event_timestamp"]
    got = reference.sort_values(key).reset_index(drop=True)
    want = expected.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        got[CHURN_V1_FEATURES].astype("float64"),
        want[CHURN_V1_FEATURES].astype("float64"),
        check_exact=False,
        rtol=1e-12,
    )


def test_unshifted_snapshots_show_no_drift(champion: Champion, tmp_path: Path) -> None:
    out = tmp_path / "out"
    completed = run_churn(champion.env, "drift", "--out", str(out))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    document = json.loads((out / "drift.json").read_text())
    assert [item["feature"] for item in document["features"]] == CHURN_V1_FEATURES
    summary = document["summary"]
    assert summary["major"] == [] and summary["severity"] in ("none", "minor")
    last = champion.history["event_timestamp"].max()
    assert summary["sources"]["current"]["window"] == [
        (last - timedelta(days=7)).isoformat(),
        last.isoformat(),
    ]
    assert summary["current_rows"] == int(
        (champion.history["event_timestamp"] > last - timedelta(days=7)).sum()
    )
    assert document["score"]["feature"] == "churn_probability"
    # Windows of one distribution: the domain classifier cannot tell them apart and every
    # value is where training had values.
    multivariate = summary["multivariate"]
    assert multivariate["status"] == "ok" and multivariate["severity"] == "none"
    assert multivariate["auroc"]["low"] <= 0.5 <= multivariate["auroc"]["high"]
    assert multivariate["rows"]["current"] == summary["current_rows"]
    assert multivariate["features"] == CHURN_V1_FEATURES
    assert summary["quality"]["severity"] == "none"
    assert all(item["null_rate"]["current"] == 0.0 for item in document["quality"])


def test_prediction_log_as_current_window(champion: Champion, tmp_path: Path) -> None:
    recent = champion.history.loc[
        champion.history["event_timestamp"] >= START + timedelta(days=DAYS - 7)
    ].copy()
    recent["feature_2"] += 3.0  # what serving saw drifted
    recent["feature_ratio"] = recent["feature_1"] / (recent["feature_2"] + 1e-8)
    scores = np.random.default_rng(0).random(len(recent))
    write_prediction_log(tmp_path, recent, scores=scores, features=CHURN_V1_FEATURES)
    env = {**champion.env, "CHURN_PREDICTION_LOG_DIR": str(tmp_path / "predictions")}
    out = tmp_path / "out"
    completed = run_churn(env, "drift", "--source", "predictions", "--out", str(out))
    assert completed.returncode == 4, completed.stdout + completed.stderr
    document = json.loads((out / "drift.json").read_text())
    assert document["summary"]["major"] == ["feature_2", "feature_ratio"]
    assert document["summary"]["current_rows"] == len(recent)
    assert document["summary"]["sources"]["current"]["model_versions"] == ["1"]
    # The logged scores are the current scores: uniform noise, far from the model's.
    assert document["score"]["current"]["mean"] == pytest.approx(scores.mean())
    # Engagement moved by two standard deviations: the classifier names it, and a share
    # of the logged values lies above anything the champion was trained on.
    multivariate = document["summary"]["multivariate"]
    assert multivariate["severity"] == "major"
    assert multivariate["top_features"][0] in ("feature_2", "feature_ratio")
    assert "feature_2" in multivariate["top_features"]
    quality = {item["feature"]: item for item in document["quality"]}
    lineage = load_champion_lineage(
        ModelRegistry(champion.tracking_uri), "churn-predictor", "champion"
    )
    stamps = champion.history["event_timestamp"]
    window = (stamps >= lineage.train_start) & (stamps <= lineage.train_end)
    trained = champion.history.loc[window, "feature_2"]
    above = int((recent["feature_2"] > trained.max()).sum())
    assert quality["feature_2"]["out_of_range"]["above"] == above > 0
    assert quality["feature_2"]["out_of_range"]["share"] == pytest.approx(above / len(recent))


def test_evaluate_reports_the_champions_training_auc_beside_live_auc(
    champion: Champion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", champion.tracking_uri)  # for load_model
    recent = champion.history.loc[
        champion.history["event_timestamp"] >= START + timedelta(days=DAYS - 7)
    ]
    model = mlflow.sklearn.load_model("models:/churn-predictor@champion")
    scores = model.predict_proba(recent[CHURN_V1_FEATURES].astype("float64"))[:, 1]
    write_prediction_log(tmp_path, recent, scores=scores, features=CHURN_V1_FEATURES)
    # A week of this small history is below the default minimum window: lower it to the
    # week's size so that a figure is claimed (the minimum itself is tested in test_evaluate).
    env = {
        **champion.env,
        "CHURN_PREDICTION_LOG_DIR": str(tmp_path / "predictions"),
        "CHURN_MONITORING_MIN_WINDOW_ROWS": str(len(recent)),
    }
    completed = run_churn(env, "evaluate", "--window", "7d", "--out", str(tmp_path / "out"))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    document = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    training_auc = _train_run(champion).data.metrics["test_roc_auc"]
    assert document["champion"] == {"version": "1", "training_test_roc_auc": training_auc}
    assert document["by_version"]["1"]["training_test_roc_auc"] == training_auc
    assert document["matched"] == len(recent)
    assert document["roc_auc"] == pytest.approx(roc_auc_score(recent["label"], scores))
    assert f"champion: version 1, training test AUC {training_auc:.4f}" in completed.stdout


def test_stale_data_exits_5_naming_the_lag(champion: Champion, tmp_path: Path) -> None:
    env = {**champion.env}
    env.pop("CHURN_MONITORING_MAX_DATA_LAG_HOURS")  # the default: 48 hours
    last = champion.history["event_timestamp"].max()

    stale = run_churn(env, "drift", "--retrain", "--out", str(tmp_path / "out"))

    assert stale.returncode == 5, stale.stdout + stale.stderr
    assert f"stale data: the newest offline snapshot is from {last.isoformat()}" in stale.stderr
    assert "CHURN_MONITORING_MAX_DATA_LAG_HOURS=48" in stale.stderr
    assert not (tmp_path / "out").exists()  # nothing compared, nothing retrained
    decisions = champion.repo.data.data_dir / "monitoring" / "decisions.jsonl"
    assert not decisions.exists()
    # An explicit --until judges that older window on purpose.
    judged = run_churn(env, "drift", "--until", last.isoformat(), "--out", str(tmp_path / "u"))
    assert judged.returncode == 0, judged.stdout + judged.stderr


def test_no_champion_is_a_clear_error(tmp_path: Path) -> None:
    registry = ModelRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(InputError, match="has no 'champion' version"):
        load_champion_lineage(registry, "churn-predictor", "champion")
    env = {**os.environ, "CHURN_DATA_DIR": str(tmp_path / "empty")}
    completed = run_churn(env, "drift")
    assert completed.returncode == 2
    assert "model 'churn-predictor' has no 'champion' version" in completed.stderr


def test_a_week_that_arrived_late_is_judged_on_its_own_values(tmp_path: Path) -> None:
    late = train_champion(tmp_path / "late")
    # The shifted week reaches the platform in one incremental batch after its last day,
    # so every row's created time is later than its event time.
    week_start = START + timedelta(days=DAYS)
    write_history(
        late.repo.data,
        users=60,
        days=7,
        start=week_start,
        seed=2,
        feature_2_shift=3.0,
        arrived=week_start + timedelta(days=7, hours=1),
    )
    completed = run_churn(late.env, "drift", "--out", str(tmp_path / "out"))

    assert completed.returncode == 4, completed.stdout + completed.stderr
    assert "drift: major (major: feature_2, feature_ratio" in completed.stdout


@pytest.mark.timeout(1200)  # an alert-only run, then three overlapping runs, one training
def test_major_drift_retrains_when_configured_through_the_gate_once_per_cooldown(
    champion: Champion, tmp_path: Path
) -> None:
    # Its own copy of the champion: it appends a shifted week and registers a second version.
    write_history(
        champion.repo.data,
        users=60,
        days=7,
        start=START + timedelta(days=DAYS),
        seed=2,
        feature_2_shift=3.0,
    )
    # Drift alone is an alert, not harm (too few predictions here for an estimate): no
    # retraining unless configured.
    alert = run_churn(champion.env, "drift", "--retrain", "--out", str(tmp_path / "alert"))
    assert alert.returncode == 4, alert.stdout + alert.stderr
    assert "retrain: skip, signal none (major drift in feature_2" in alert.stdout
    assert "drift alone is an alert, not harm" in alert.stdout
    assert "estimated performance: insufficient_data" in alert.stdout
    on_drift = {**champion.env, "CHURN_MONITORING_RETRAIN_ON_DRIFT": "true"}
    # Three scheduled runs overlap: exactly one trains, the others see its "started" line.
    runs = [
        subprocess.Popen(
            [CHURN, "drift", "--retrain", "--trials", "2", "--out", str(tmp_path / f"out{i}")],
            env=on_drift,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    outputs = [run.communicate(timeout=500) for run in runs]
    for run, (stdout, stderr) in zip(runs, outputs, strict=True):
        assert run.returncode == 4, stdout + stderr
        assert "drift: major (major: feature_2, feature_ratio" in stdout
    trained = [stdout for stdout, _ in outputs if "retrain: retrain, signal drift" in stdout]
    assert len(trained) == 1, [stdout for stdout, _ in outputs]
    assert "retrain: retrain, signal drift (major drift in feature_2, feature_ratio" in trained[0]
    skipped = [stdout for stdout, _ in outputs if "retrain: skip" in stdout]
    assert len(skipped) == 2 and all("cooldown: last retraining" in out for out in skipped)
    client = mlflow.MlflowClient(tracking_uri=champion.tracking_uri)
    versions = client.search_model_versions("name='churn-predictor'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    decisions_path = champion.repo.data.data_dir / "monitoring" / "decisions.jsonl"
    [decision] = [d for d in read_decisions(decisions_path) if d["action"] == "retrain"]
    assert decision["outcome"] == "registered" and decision["signal"] == "drift"
    assert decision["training"]["version"] == "2"
    # Promotion is the pipeline's champion/challenger decision, never the trigger's.
    new = client.get_model_version("churn-predictor", "2")
    aliases = set(client.get_registered_model("churn-predictor").aliases)
    if decision["training"]["promoted"]:
        assert str(client.get_model_version_by_alias("churn-predictor", "champion").version) == "2"
    else:
        assert aliases == {"champion", "challenger"}
        assert (
            str(client.get_model_version_by_alias("churn-predictor", "challenger").version) == "2"
        )
    assert new.run_id == decision["training"]["run_id"]
    tags = client.get_run(new.run_id).data.tags
    assert tags["trigger"] == "drift"
    assert tags["drift.major_features"].startswith("feature_2,feature_ratio")

    again = run_churn(on_drift, "drift", "--retrain", "--out", str(tmp_path / "again"))
    assert again.returncode == 4
    assert "cooldown: last retraining" in again.stdout
    assert len(client.search_model_versions("name='churn-predictor'")) == 2
