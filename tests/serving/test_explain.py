"""``"explain": true`` on /predict and /predict/batch: reasons only when asked, exact."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.utils.feast_repo import TestRepo
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.serving import OnlineUsers, register_model, training_frame


def _check_reasons(body: dict) -> None:
    reasons = body["reasons"]
    assert sorted(r["feature"] for r in reasons) == sorted(CHURN_V1_FEATURES)
    effects = [abs(r["contribution"]) for r in reasons]
    assert effects == sorted(effects, reverse=True)
    log_odds = body["base_value"] + sum(r["contribution"] for r in reasons)
    assert 1 / (1 + math.exp(-log_odds)) == pytest.approx(body["churn_probability"], abs=6e-5)


def test_predict_returns_reasons_only_when_asked(
    make_app: Callable[..., FastAPI], champion: str, users: OnlineUsers
) -> None:
    user = users.fresh[0]
    with TestClient(make_app()) as client:
        plain = client.post("/predict", json={"user_id": user}).json()
        explained = client.post("/predict", json={"user_id": user, "explain": True}).json()
        batch = client.post(
            "/predict/batch",
            json={"user_ids": [*users.fresh[:3], users.unknown], "explain": True},
        ).json()
        plain_batch = client.post("/predict/batch", json={"user_ids": users.fresh[:2]}).json()

    assert "reasons" not in plain and "base_value" not in plain
    assert explained["churn_probability"] == plain["churn_probability"]
    _check_reasons(explained)
    feature_1 = next(r for r in explained["reasons"] if r["feature"] == "feature_1")
    assert feature_1["value"] > 0  # the user's own usage value, not a placeholder
    assert [p["user_id"] for p in batch["predictions"]] == users.fresh[:3]
    for prediction in batch["predictions"]:
        _check_reasons(prediction)
    assert batch["errors"][0]["kind"] == "unknown_user"
    assert all("reasons" not in p for p in plain_batch["predictions"])


@pytest.mark.parametrize("value", ["yes please", 0, 1, "true"])
def test_explain_is_a_strict_boolean(
    make_app: Callable[..., FastAPI], champion: str, value: object
) -> None:
    with TestClient(make_app()) as client:
        single = client.post("/predict", json={"user_id": 1, "explain": value})
        batch = client.post("/predict/batch", json={"user_ids": [1], "explain": value})
    assert single.status_code == 422
    assert batch.status_code == 422


def test_a_family_without_explanations_is_served_without_reasons(
    make_app: Callable[..., FastAPI],
    tracking_uri: str,
    repo: TestRepo,
    users: OnlineUsers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from sklearn.ensemble import RandomForestClassifier

    frame, labels = training_frame(300, seed=2)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(frame, labels)
    register_model(tracking_uri, project=repo.project, model=forest)
    with caplog.at_level("WARNING"), TestClient(make_app()) as client:
        body = client.post("/predict", json={"user_id": users.fresh[0], "explain": True}).json()

    assert 0 <= body["churn_probability"] <= 1
    assert body["reasons"] == []
    assert "served without reasons (no exact explanation for RandomForestClassifier" in caplog.text
