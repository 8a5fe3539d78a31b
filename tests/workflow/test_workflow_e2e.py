"""The schedule end to end with Dagster's in-process runner, against the real services.

A private Feast repo copy (own project) on the production profile (real Redis), real
offline tables, a real MLflow store in the test's folder, and the real `churn` commands.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from dagster import ExecuteInProcessResult
from sklearn.metrics import roc_auc_score

from core.feast_store import open_feature_store
from tests.utils.feast_repo import TestRepo, make_feature_repo
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.history import write_history
from tests.utils.materialize import redis_hashes
from tests.utils.monitoring import write_prediction_log
from tests.utils.ops import exported_names, queried_names
from tests.utils.services import delete_project_keys, unique_name
from tests.utils.serving import free_port
from tests.utils.workflow import (
    Platform,
    days_ago,
    make_platform,
    read_textfile,
    workflow_settings,
)
from workflow.jobs import build_evaluate_job, build_materialize_job, build_nightly_job
from workflow.settings import WorkflowSettings

pytestmark = pytest.mark.filterwarnings(
    # MLflow 3.17's SQLite tracking store uses a loader option that SQLAlchemy 2.1 deprecates.
    "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
)

STEP = "materialize_user_features"


def _online_feature_1(repo: TestRepo, user_id: int) -> float:
    store = open_feature_store(repo.feast)
    values = store.get_online_features(
        features=["user_features:feature_1"], entity_rows=[{"user_id": user_id}]
    ).to_dict()
    return float(values["feature_1"][0])


def test_first_run_then_an_hourly_run_picks_up_new_data(feature_repo: TestRepo) -> None:
    platform = make_platform(feature_repo)
    write_history(feature_repo.data, users=30, days=10, start=days_ago(10), seed=3)
    platform.churn("apply")
    job = build_materialize_job(workflow_settings())

    first = platform.run(job)
    assert first.success
    assert first.output_for_node(STEP) == "ok"
    assert platform.tags(first)[f"churn/{STEP}"] == "ok"
    assert len(redis_hashes(feature_repo.project)) == 30
    textfile = platform.metrics_dir / "materialize_user_features.prom"
    metrics = read_textfile(textfile)
    assert metrics['churn_materialize_rows_written{view="user_features"}'] == 30
    assert metrics['churn_feature_view_ttl_seconds{view="user_features"}'] == 21 * 86400
    first_success = metrics[
        'churn_materialize_last_success_timestamp_seconds{view="user_features"}'
    ]
    assert abs(first_success - time.time()) < 120

    # New snapshots land after the first run's end: the next hourly run writes only them.
    time.sleep(1.1)
    landed = datetime.now(UTC)
    new_rows = pd.DataFrame(
        {
            "user_id": np.arange(1, 6, dtype=np.int64),
            "event_timestamp": [landed] * 5,
            "created": [landed] * 5,
            "feature_1": [999.0 + user for user in range(1, 6)],
            "feature_2": [1.0] * 5,
        }
    )
    table = feature_repo.data.user_features_path
    pd.concat([pd.read_parquet(table), new_rows], ignore_index=True).to_parquet(table)

    hourly = platform.run(job)
    assert hourly.success
    metrics = read_textfile(textfile)
    assert metrics['churn_materialize_rows_written{view="user_features"}'] == 5
    assert metrics['churn_materialize_last_success_timestamp_seconds{view="user_features"}'] > (
        first_success
    )
    assert _online_feature_1(feature_repo, 3) == 1002.0


def test_unreachable_online_store_retries_with_backoff_then_fails_clearly(
    feature_repo: TestRepo,
) -> None:
    platform = make_platform(feature_repo)
    write_history(feature_repo.data, users=10, days=3, start=days_ago(3), seed=4)
    platform.churn("apply")
    closed = free_port()  # nothing listens here
    job = build_materialize_job(workflow_settings(retry_attempts=2, retry_delay_s=0.2))

    started = time.monotonic()
    result = platform.run(job, CHURN_REDIS_URL=f"127.0.0.1:{closed}")
    elapsed = time.monotonic() - started

    assert not result.success
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 2
    assert elapsed >= 0.2 + 0.4  # the delays double: 0.2 s, then 0.4 s
    failure = result.failure_data_for_node(STEP)
    assert failure is not None
    message = failure.user_failure_data.description
    assert message.startswith("churn materialize: failure after 3 attempts: ")
    assert f"cannot reach the Redis online store at 127.0.0.1:{closed}" in message
    assert platform.tags(result)[f"churn/{STEP}"] == "failure"
    # No success is recorded for the view.
    assert not (platform.metrics_dir / "materialize_user_features.prom").exists()


@dataclass
class Scheduled:
    """A platform after a first training, a shifted week, an hourly, a nightly and a daily run."""

    platform: Platform
    shifted: pd.DataFrame
    nightly: ExecuteInProcessResult
    settings: WorkflowSettings
    daily: ExecuteInProcessResult
    expected_auc: float
    matched_predictions: int


@pytest.fixture(scope="module")
def scheduled(
    tmp_path_factory: pytest.TempPathFactory, redis_available: None
) -> Iterator[Scheduled]:
    """Train a champion, land a shifted week, then run the hourly and the nightly job."""
    project = unique_name("workflow")
    repo = make_feature_repo(tmp_path_factory.mktemp("scheduled"), project=project)
    platform = make_platform(repo)
    write_history(repo.data, users=60, days=70, start=days_ago(77), seed=1)
    platform.churn("apply")
    platform.churn("train", "--trials", "2", "--no-progress")
    shifted = write_history(
        repo.data, users=60, days=7, start=days_ago(7), seed=2, feature_2_shift=3.0
    )
    settings = workflow_settings()
    assert platform.run(build_materialize_job(settings)).success
    # Sixty users give a small window: the minimum for an estimate is lowered to 50 rows,
    # and this operator also retrains on major drift (the default only alerts on it).
    platform.env["CHURN_MONITORING_MIN_WINDOW_ROWS"] = "50"
    nightly = platform.run(build_nightly_job(settings), CHURN_MONITORING_RETRAIN_ON_DRIFT="true")
    # Labels of the shifted week have landed; the last day's predictions are evaluated. Run
    # here, not in a test, so every test sees all four jobs' outputs whatever the test order.
    recent = shifted.loc[shifted["event_timestamp"] >= days_ago(2)]
    noise = np.random.default_rng(0).random(len(recent))
    scores = 0.7 * recent["label"].to_numpy() + 0.3 * noise
    log = write_prediction_log(platform.data_dir, recent, scores=scores, features=CHURN_V1_FEATURES)
    in_window = (
        log["event_timestamp"] > log["event_timestamp"].max() - timedelta(days=1)
    ).to_numpy()
    # The day's window is below the default minimum for a figure: lowered to its size.
    platform.env["CHURN_MONITORING_MIN_WINDOW_ROWS"] = str(max(2, int(in_window.sum())))
    daily = platform.run(build_evaluate_job(settings))
    yield Scheduled(
        platform=platform,
        shifted=shifted,
        nightly=nightly,
        settings=settings,
        daily=daily,
        expected_auc=roc_auc_score(recent["label"].to_numpy()[in_window], scores[in_window]),
        matched_predictions=int(in_window.sum()),
    )
    delete_project_keys(project)


def test_nightly_run_on_shifted_data_retrains(scheduled: Scheduled) -> None:
    platform, nightly = scheduled.platform, scheduled.nightly
    # Major drift is a finding, not a failure: the run is green and says what it found.
    assert nightly.success
    assert nightly.output_for_node("skew_check") == "ok"
    assert nightly.output_for_node("drift") == "major_drift"
    tags = platform.tags(nightly)
    assert (tags["churn/skew_check"], tags["churn/drift"]) == ("ok", "major_drift")
    client = mlflow.MlflowClient(tracking_uri=platform.tracking_uri)
    versions = sorted(
        int(v.version) for v in client.search_model_versions("name='churn-predictor'")
    )
    assert versions == [1, 2]
    decisions = platform.data_dir / "monitoring" / "decisions.jsonl"
    # The retraining is recorded as started (under the champion lock), then as finished.
    started, decision = [json.loads(line) for line in decisions.read_text().splitlines()]
    assert (started["action"], started["outcome"]) == ("retrain", "started")
    assert (decision["action"], decision["outcome"]) == ("retrain", "registered")

    drift = read_textfile(platform.metrics_dir / "drift.prom")
    assert drift['churn_drift_last_outcome{outcome="major_drift"}'] == 1
    assert drift['churn_drift_severity{feature="feature_2",role="feature"}'] == 2
    skew = read_textfile(platform.metrics_dir / "skew_churn_v1.prom")
    assert skew['churn_skew_mismatches{feature_service="churn_v1"}'] == 0
    training = read_textfile(platform.metrics_dir / "training.prom")
    outcome = "promoted" if decision["training"]["promoted"] else "registered"
    assert training[f'churn_training_last_outcome{{outcome="{outcome}"}}'] == 1
    assert training["churn_training_test_roc_auc"] == pytest.approx(
        decision["training"]["test_roc_auc"]
    )
    champion = client.get_model_version_by_alias("churn-predictor", "champion")
    champion_metrics = read_textfile(platform.metrics_dir / "champion_churn-predictor.prom")
    assert champion_metrics['churn_champion_version{model_name="churn-predictor"}'] == float(
        champion.version
    )
    assert champion_metrics[
        'churn_champion_created_timestamp_seconds{model_name="churn-predictor"}'
    ] == pytest.approx(champion.creation_timestamp / 1000)


def test_daily_evaluate_scores_landed_labels(scheduled: Scheduled) -> None:
    platform, daily = scheduled.platform, scheduled.daily
    assert daily.success and daily.output_for_node("evaluate") == "ok"
    evaluation = read_textfile(platform.metrics_dir / "evaluate.prom")
    assert evaluation["churn_evaluate_roc_auc"] == pytest.approx(scheduled.expected_auc)
    assert evaluation["churn_evaluate_min_auc"] == 0.78
    assert evaluation["churn_evaluate_matched_predictions"] == scheduled.matched_predictions

    recent = scheduled.shifted.loc[scheduled.shifted["event_timestamp"] >= days_ago(2)]
    evaluate = build_evaluate_job(scheduled.settings)

    # Random scores fall below the gate: shown as its own outcome, the run stays green.
    write_prediction_log(
        platform.data_dir, recent, scores=np.random.default_rng(1).random(len(recent)),
        features=CHURN_V1_FEATURES,
    )  # fmt: skip
    below = platform.run(evaluate)
    assert below.success and below.output_for_node("evaluate") == "auc_below_gate"
    assert platform.tags(below)["churn/evaluate"] == "auc_below_gate"
    assert read_textfile(platform.metrics_dir / "evaluate.prom")["churn_evaluate_roc_auc"] < 0.78


def _serving_metrics_text(scheduled: Scheduled, tmp_path: Path) -> str:
    """/metrics of the real service on the scheduled platform, after a few requests."""
    from fastapi.testclient import TestClient

    from core.settings import MlflowSettings
    from serving.app import create_app
    from serving.settings import ServingSettings

    repo = scheduled.platform.repo
    app = create_app(
        ServingSettings(poll_interval_s=0),
        feast=repo.feast,
        mlflow=MlflowSettings(tracking_uri=scheduled.platform.tracking_uri),
        data=repo.data.model_copy(update={"prediction_log_dir": tmp_path / "predictions"}),
    )
    with TestClient(app) as client:
        assert client.post("/predict", json={"user_id": 1}).status_code == 200
        assert client.post("/predict", json={"user_id": 10**9}).status_code == 404
        return client.get("/metrics").text


def _stream_metrics_text() -> str:
    """What a `churn stream` worker's /metrics exports once it has committed a batch."""
    import numpy as np
    from prometheus_client import REGISTRY, generate_latest

    from materialize.stream.metrics import freshness

    freshness().observe(np.array([0.05]))
    return generate_latest(REGISTRY).decode()


def test_every_metric_the_rules_and_dashboard_query_is_exported(
    scheduled: Scheduled, tmp_path: Path
) -> None:
    """Names queried by ops/ are read from real /metrics output and the stages' textfiles."""
    textfiles = sorted(scheduled.platform.metrics_dir.glob("*.prom"))
    assert [path.name for path in textfiles] == [
        "champion_churn-predictor.prom",
        "drift.prom",
        "estimate.prom",
        "evaluate.prom",
        "evaluate_estimate.prom",
        "materialize_user_features.prom",
        "skew_churn_v1.prom",
        "training.prom",
    ]
    exported = exported_names(_serving_metrics_text(scheduled, tmp_path))
    exported |= exported_names(_stream_metrics_text())
    for path in textfiles:
        exported |= exported_names(path.read_text())
    queried = queried_names()
    assert queried, "no churn_ metric found in ops/"
    assert sorted(queried - exported) == []
