"""The missing-value policy of a feature service, on /predict, /predict/batch and churn score.

One repo holds copies of churn_v1 that declare each policy in their Feast tags; a user has
a null feature_2 online and offline (so feature_ratio, computed from it, is missing too).
For each policy the three paths must decide the same way and, where they score, agree
with each other and with the model to 1e-9 (the prediction log keeps full precision).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from core.errors import InputError
from core.feast_store import open_feature_store
from core.missing_values import FILL_VALUES_TAG
from core.settings import MlflowSettings
from serving.app import create_app
from serving.batch.outcome import unscored_path_for
from serving.batch.run import ScoreRequest, run_score
from serving.settings import ServingSettings
from tests.utils.feast_repo import TestRepo, make_feature_repo
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.services import delete_project_keys, unique_name
from tests.utils.serving import (
    OnlineUsers,
    fit_model,
    load_online_features,
    register_model,
    tracking_uri_in,
    training_frame,
)

POLICIES = ("reject", "model", "fill")
MISSING = ["feature_2", "feature_ratio"]
_SERVICES = '''
"""Copies of churn_v1 declaring a missing-value policy (tests)."""

from feast import FeatureService
from on_demand_views import request_time_features, user_feature_transforms
from views import user_features


def _declaring(policy):
    return FeatureService(
        name=f"churn_v1_{policy}",
        features=[
            user_features[["feature_1", "feature_2"]],
            user_feature_transforms[["feature_ratio", "feature_log"]],
            request_time_features[["day_of_week_sin", "day_of_week_cos", "is_weekend"]],
        ],
        tags={"churn.missing_values": policy},
    )


churn_v1_reject = _declaring("reject")
churn_v1_model = _declaring("model")
churn_v1_fill = _declaring("fill")
churn_v1_bogus = _declaring("bogus")
'''


@pytest.fixture(scope="module")
def policy_repo(
    tmp_path_factory: pytest.TempPathFactory, redis_available: None
) -> Iterator[tuple[TestRepo, OnlineUsers]]:
    """The repo with the policy services, applied and materialized into Redis."""
    root = tmp_path_factory.mktemp("missing-values")
    project = unique_name("churn_missing")
    repo = make_feature_repo(root, project=project)
    (Path(repo.feast.repo_path) / "policy_services.py").write_text(_SERVICES)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHURN_DATA_DIR", str(repo.data.data_dir))
        users = load_online_features(repo, now=datetime.now(UTC), fresh_users=5)
    yield repo, users
    delete_project_keys(project)


def _hist_model() -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    frame, labels = training_frame(2000, seed=3)
    return HistGradientBoostingClassifier(max_iter=60, early_stopping=False, random_state=0).fit(
        frame, labels
    )


@pytest.fixture(scope="module")
def hist_model() -> Any:
    """A model that takes missing values."""
    return _hist_model()


@pytest.fixture(scope="module")
def medians() -> dict[str, float]:
    """The training medians recorded with the versions (what churn train records)."""
    frame, _ = training_frame(2000, seed=3)
    return {name: float(value) for name, value in frame.median().items()}


def _registry(
    folder: Path, repo: TestRepo, *, service: str, model: Any, tags: dict[str, str] | None = None
) -> str:
    uri = tracking_uri_in(folder)
    register_model(uri, project=repo.project, model=model, feature_service=service, tags=tags)
    return uri


def _app(repo: TestRepo, uri: str, log_dir: Path) -> Any:
    return create_app(
        # Generous bounds: the test checks values, and a busy machine must not turn a
        # lookup into a 503.
        ServingSettings(poll_interval_s=0, online_timeout_s=10, request_deadline_s=30),
        feast=repo.feast,
        mlflow=MlflowSettings(tracking_uri=uri),
        data=repo.data.model_copy(update={"prediction_log_dir": log_dir}),
    )


def _expected(
    repo: TestRepo, model: Any, user_ids: list[int], policy: str, medians: dict[str, float]
) -> np.ndarray:
    """The model on the features Feast itself returns, the policy applied by hand."""
    store = open_feature_store(repo.feast)
    values = store.get_online_features(
        features=store.get_feature_service("churn_v1"),
        entity_rows=[{"user_id": user, "event_timestamp": datetime.now(UTC)} for user in user_ids],
    ).to_dict()
    frame = pd.DataFrame({name: values[name] for name in CHURN_V1_FEATURES}, dtype="float64")
    if policy == "fill":
        frame = frame.fillna(medians)
    return np.asarray(model.predict_proba(frame)[:, 1])


@pytest.mark.parametrize("policy", POLICIES)
def test_each_policy_is_applied_alike_by_predict_batch_and_churn_score(
    policy: str,
    policy_repo: tuple[TestRepo, OnlineUsers],
    hist_model: Any,
    medians: dict[str, float],
    tmp_path: Path,
) -> None:
    repo, users = policy_repo
    fresh, missing = users.fresh[0], users.missing_feature
    uri = _registry(
        tmp_path / "mlflow",
        repo,
        service=f"churn_v1_{policy}",
        model=hist_model,
        tags={FILL_VALUES_TAG: json.dumps(medians)},
    )
    log_dir = tmp_path / "predictions"
    with TestClient(_app(repo, uri, log_dir)) as client:
        model_info = client.get("/model").json()
        single = client.post("/predict", json={"user_id": missing})
        complete = client.post("/predict", json={"user_id": fresh})
        batch = client.post("/predict/batch", json={"user_ids": [fresh, missing]}).json()
        metrics = client.get("/metrics").text
    log = pd.concat([pd.read_parquet(p) for p in sorted(log_dir.glob("date=*/*.parquet"))])
    first = pd.Timestamp(log["event_timestamp"].min())
    at = (first.tz_localize("UTC") if first.tzinfo is None else first).to_pydatetime()
    out = tmp_path / "scores.parquet"
    outcome = run_score(
        ScoreRequest(
            out=out,
            at=at,
            users=np.array([fresh, missing]),
            feast=repo.feast,
            mlflow=MlflowSettings(tracking_uri=uri),
            data=repo.data,
        )
    )
    scores = pd.read_parquet(out).set_index("user_id")
    unscored = pd.read_parquet(unscored_path_for(out)).set_index("user_id")
    probabilities = _expected(repo, hist_model, [fresh, missing], policy, medians)
    expected = {fresh: probabilities[0], missing: probabilities[1]}

    assert model_info["missing_values"] == policy
    assert outcome.missing_note == f"missing values: {policy} (declared by the feature service)"
    assert complete.status_code == 200 and "missing_features" not in complete.json()
    assert scores.at[fresh, "missing_features"] is None
    if policy == "reject":
        assert single.status_code == 404
        assert single.json()["kind"] == "missing_features"
        assert "feature_2, feature_ratio" in single.json()["detail"]
        assert [error["user_id"] for error in batch["errors"]] == [missing]
        assert batch["errors"][0]["kind"] == "missing_features"
        assert missing not in scores.index
        assert unscored.at[missing, "reason"] == "missing_features"
        assert unscored.at[missing, "detail"] == "null at --at: feature_2, feature_ratio"
        assert outcome.unscored == {"missing_features": 1} and outcome.scored_with_missing == 0
        assert 'churn_prediction_errors_total{kind="missing_features"} 2.0' in metrics
        scored_users = [fresh]
    else:
        assert single.status_code == 200, single.json()
        assert single.json()["missing_features"] == MISSING
        [answer] = [p for p in batch["predictions"] if p["user_id"] == missing]
        assert answer["missing_features"] == MISSING and batch["errors"] == []
        assert scores.at[missing, "missing_features"] == "feature_2, feature_ratio"
        assert outcome.unscored == {} and outcome.scored_with_missing == 1
        assert single.json()["churn_probability"] == round(expected[missing], 4)
        counted = f'churn_predictions_with_missing_values_total{{policy="{policy}"}} 2.0'
        assert counted in metrics
        scored_users = [fresh, missing]
    # Full precision: the prediction log (both routes) and the scores file, to 1e-9.
    for user in scored_users:
        logged = log.loc[log["user_id"] == user, "churn_probability"].to_numpy()
        assert len(logged) == 2  # /predict and /predict/batch
        assert np.abs(logged - expected[user]).max() <= 1e-9
        assert abs(scores.at[user, "churn_probability"] - expected[user]) <= 1e-9
    if policy != "reject":
        # The log keeps the values as read: the missing ones stay missing.
        row = log.loc[log["user_id"] == missing].iloc[0]
        assert all(np.isnan(row[name]) for name in MISSING)


def test_explain_names_a_missing_value_the_model_took_as_null(
    policy_repo: tuple[TestRepo, OnlineUsers], hist_model: Any, tmp_path: Path
) -> None:
    repo, users = policy_repo
    uri = _registry(tmp_path / "mlflow", repo, service="churn_v1_model", model=hist_model)
    with TestClient(_app(repo, uri, tmp_path / "predictions")) as client:
        body = client.post(
            "/predict", json={"user_id": users.missing_feature, "explain": True}
        ).json()

    values = {reason["feature"]: reason["value"] for reason in body["reasons"]}
    assert [name for name, value in values.items() if value is None] == sorted(
        MISSING, key=list(values).index
    )
    assert body["missing_features"] == MISSING


@pytest.mark.parametrize(
    ("service", "family", "tags", "message"),
    [
        ("churn_v1_model", "gradient", None, "does not handle missing values"),
        ("churn_v1_fill", "hist", None, "records no training median for feature_1"),
        ("churn_v1_bogus", "hist", None, "churn.missing_values='bogus' is not one of"),
    ],
)
def test_a_policy_the_version_cannot_follow_is_refused_at_load(
    service: str,
    family: str,
    tags: dict[str, str] | None,
    message: str,
    policy_repo: tuple[TestRepo, OnlineUsers],
    hist_model: Any,
    tmp_path: Path,
) -> None:
    repo, users = policy_repo
    model = hist_model if family == "hist" else fit_model()
    uri = _registry(tmp_path / "mlflow", repo, service=service, model=model, tags=tags)
    with TestClient(_app(repo, uri, tmp_path / "predictions")) as client:
        ready = client.get("/ready")
    with pytest.raises(InputError) as error:
        run_score(
            ScoreRequest(
                out=tmp_path / "scores.parquet",
                users=np.array([users.fresh[0]]),
                feast=repo.feast,
                mlflow=MlflowSettings(tracking_uri=uri),
                data=repo.data,
            )
        )

    assert ready.status_code == 503
    assert message in ready.json()["detail"]
    assert message in str(error.value)
    assert not (tmp_path / "scores.parquet").exists()
