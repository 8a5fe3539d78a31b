"""The contract of every route, through the app with its lifespan (real Redis and MLflow)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from core.feast_store import open_feature_store
from tests.utils.feast_repo import TestRepo
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.serving import OnlineUsers, fit_model, register_model


def test_predict_answers_with_the_champion_on_online_features(
    make_app: Callable[..., FastAPI], champion: str, repo: TestRepo, users: OnlineUsers
) -> None:
    user = users.fresh[0]
    with TestClient(make_app()) as client:
        response = client.post("/predict", json={"user_id": user})
    body = response.json()

    assert response.status_code == 200, body
    assert set(body) == {
        "request_id",
        "user_id",
        "churn_probability",
        "churn_predicted",
        "model_version",
        "latency_ms",
    }
    assert body["user_id"] == user
    assert body["model_version"] == champion
    assert body["latency_ms"] > 0
    # The same model on the features Feast itself returns gives the same probability.
    store = open_feature_store(repo.feast)
    from datetime import UTC, datetime

    features = store.get_online_features(
        features=store.get_feature_service("churn_v1"),
        entity_rows=[{"user_id": user, "event_timestamp": datetime.now(UTC)}],
    ).to_dict()
    import pandas as pd

    frame = pd.DataFrame({name: features[name] for name in CHURN_V1_FEATURES})
    expected = fit_model().predict_proba(frame)[0, 1]
    assert body["churn_probability"] == pytest.approx(round(expected, 4), abs=1e-4)
    assert body["churn_predicted"] is bool(expected >= 0.5)


@pytest.mark.parametrize(
    ("case", "kind", "phrase"),
    [
        ("unknown", "unknown_user", "has no features in the online store"),
        ("stale", "stale_features", "older than the view's TTL"),
        ("missing_feature", "missing_features", "has no value for feature_2"),
    ],
)
def test_users_without_usable_features_get_404_naming_them(
    make_app, champion, users: OnlineUsers, case, kind, phrase
) -> None:
    user = getattr(users, case)
    with TestClient(make_app()) as client:
        response = client.post("/predict", json={"user_id": user})
        metrics = client.get("/metrics").text

    assert response.status_code == 404
    assert response.json()["kind"] == kind
    assert f"user {user}" in response.json()["detail"]
    assert phrase in response.json()["detail"]
    assert f'churn_prediction_errors_total{{kind="{kind}"}} 1.0' in metrics


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": "7"},
        {"user_id": 7.5},
        {"user_id": True},
        {"user_id": None},
        {},
        {"user_id": 7, "extra": 1},
        {"user_id": 2**63},
        [7],
    ],
)
def test_malformed_bodies_get_422(make_app, champion, body) -> None:
    with TestClient(make_app()) as client:
        response = client.post("/predict", json=body)
    assert response.status_code == 422, response.text


def test_invalid_json_gets_422(make_app, champion) -> None:
    with TestClient(make_app()) as client:
        response = client.post(
            "/predict", content=b"{user_id: 1", headers={"content-type": "application/json"}
        )
        metrics = client.get("/metrics").text
    assert response.status_code == 422
    assert 'churn_prediction_errors_total{kind="invalid_request"} 1.0' in metrics


def test_batch_answers_each_user_and_lists_the_ones_without_features(
    make_app, champion, users: OnlineUsers
) -> None:
    ids = [users.fresh[0], users.unknown, users.fresh[1], users.stale, users.fresh[0]]
    with TestClient(make_app()) as client:
        batch = client.post("/predict/batch", json={"user_ids": ids})
        singles = [client.post("/predict", json={"user_id": u}).json() for u in users.fresh[:2]]

    body = batch.json()
    assert batch.status_code == 200, body
    assert [p["user_id"] for p in body["predictions"]] == [ids[0], ids[2], ids[4]]
    assert [(e["user_id"], e["kind"]) for e in body["errors"]] == [
        (users.unknown, "unknown_user"),
        (users.stale, "stale_features"),
    ]
    by_user = {p["user_id"]: p["churn_probability"] for p in body["predictions"]}
    assert by_user == {s["user_id"]: s["churn_probability"] for s in singles}
    assert len({p["request_id"] for p in body["predictions"]}) == 3


def test_batch_over_the_limit_gets_422_naming_the_limit(make_app, champion) -> None:
    with TestClient(make_app(batch_limit=3)) as client:
        response = client.post("/predict/batch", json={"user_ids": [1, 2, 3, 4]})
        empty = client.post("/predict/batch", json={"user_ids": []})
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "type": "too_long",
                "loc": ["body", "user_ids"],
                "msg": "List should have at most 3 items after validation, not 4",
            }
        ]
    }
    assert empty.status_code == 422


def test_health_ready_and_model_describe_the_served_version(
    make_app, champion, repo: TestRepo
) -> None:
    with TestClient(make_app()) as client:
        health = client.get("/health")
        ready = client.get("/ready")
        model = client.get("/model")

    assert health.json() == {"status": "ok", "model_loaded": True, "model_version": champion}
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "model_loaded": True,
        "model_version": champion,
        "online_store": "ok",
        "backlog_rows": 0,
        "detail": None,
    }
    info = model.json()
    assert info["name"] == "churn-predictor" and info["version"] == champion
    assert info["alias"] == "champion"
    assert info["feature_service"] == "churn_v1"
    assert info["feast_project"] == repo.project
    assert info["features"] == CHURN_V1_FEATURES
    assert info["lookup"] == "redis"
    # The test champion is a gradient-boosting model: the flat evaluator reproduces it.
    assert info["inference"]["engine"] == "flat_forest"
    assert info["inference"]["native_threads"] == 1


def test_without_a_model_predictions_get_503_and_ready_is_false(make_app) -> None:
    with TestClient(make_app()) as client:
        predict = client.post("/predict", json={"user_id": 1})
        ready = client.get("/ready")
        health = client.get("/health")
        model = client.get("/model")

    assert predict.status_code == 503
    assert predict.json()["kind"] == "no_model"
    assert "no version of 'churn-predictor' has alias 'champion'" in predict.json()["detail"]
    assert ready.status_code == 503 and ready.json()["ready"] is False
    assert ready.json()["model_loaded"] is False
    assert health.status_code == 200 and health.json()["model_loaded"] is False
    assert model.status_code == 503


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"feast.feature_service": "churn_v7"}, "'churn_v7' not found in Feast project"),
        ({"feast.features": ",".join([*CHURN_V1_FEATURES[:6], "tenure"])}, "tenure"),
        ({"feast.features": ""}, "lacks tag(s) feast.features"),
    ],
)
def test_a_champion_whose_features_are_not_in_the_registry_is_refused(
    make_app, tracking_uri, repo: TestRepo, tags, message
) -> None:
    register_model(tracking_uri, project=repo.project, tags=tags)
    with TestClient(make_app()) as client:
        ready = client.get("/ready").json()
        predict = client.post("/predict", json={"user_id": 1})

    assert ready["ready"] is False
    assert "version 1 refused" in ready["detail"] and message in ready["detail"]
    assert predict.status_code == 503 and message in predict.json()["detail"]


def test_a_model_whose_columns_differ_from_its_tag_is_refused(
    make_app, tracking_uri, repo: TestRepo
) -> None:
    # Fitted with feature_1 and feature_2 swapped: same names, another order.
    swapped = [CHURN_V1_FEATURES[1], CHURN_V1_FEATURES[0], *CHURN_V1_FEATURES[2:]]
    register_model(tracking_uri, project=repo.project, model=fit_model(features=swapped))
    with TestClient(make_app()) as client:
        ready = client.get("/ready").json()
    assert "differ from its feast.features tag" in ready["detail"]


def test_admin_reload_needs_the_token_and_is_absent_without_one(
    make_app, champion, tracking_uri, repo: TestRepo
) -> None:
    with TestClient(make_app()) as client:
        off = client.post("/admin/reload", headers={"Authorization": "Bearer x"})
        schema = client.get("/openapi.json").json()
    assert off.status_code == 404
    assert "/admin/reload" not in schema["paths"]
    assert not any("uri" in name.lower() for name in _request_fields(schema))

    with TestClient(make_app(admin_token="s3cret-admin-token-0123")) as client:
        missing = client.post("/admin/reload")
        wrong = client.post("/admin/reload", headers={"Authorization": "Bearer nope"})
        version = register_model(tracking_uri, project=repo.project, model=fit_model(invert=True))
        reloaded = client.post(
            "/admin/reload", headers={"Authorization": "Bearer s3cret-admin-token-0123"}
        )
        served = client.post("/predict", json={"user_id": 1}).json()

    assert missing.status_code == 401 and wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert reloaded.status_code == 200
    assert reloaded.json()["outcome"] == "loaded"
    assert reloaded.json()["previous_version"] == champion
    assert reloaded.json()["model_version"] == version == served["model_version"]


def _request_fields(schema: dict) -> list[str]:
    return [
        name
        for component in schema["components"]["schemas"].values()
        for name in component.get("properties", {})
    ]


def test_metrics_expose_requests_latency_scores_and_model_version(
    make_app, champion, users: OnlineUsers
) -> None:
    with TestClient(make_app()) as client:
        for user in users.fresh[:5]:
            client.post("/predict", json={"user_id": user})
        client.post("/predict", json={"user_id": users.unknown})
        response = client.get("/metrics")
    text = response.text

    assert response.headers["content-type"].startswith("text/plain")
    assert 'churn_http_requests_total{method="POST",route="/predict",status="200"} 5.0' in text
    assert 'churn_http_requests_total{method="POST",route="/predict",status="404"} 1.0' in text
    assert (
        'churn_http_request_duration_seconds_count{method="POST",route="/predict",status="200"} 5.0'
        in text
    )
    assert "churn_prediction_score_count 5.0" in text
    assert (
        f'churn_serving_model_info{{model_name="churn-predictor",model_version="{champion}"}} 1.0'
        in text
    )
    assert 'churn_model_reloads_total{outcome="loaded"} 1.0' in text


def test_each_app_has_its_own_metrics(make_app, champion, users: OnlineUsers) -> None:
    with TestClient(make_app()) as first:
        first.post("/predict", json={"user_id": users.fresh[0]})
    with TestClient(make_app()) as second:
        text = second.get("/metrics").text
    assert 'route="/predict"' not in text
    assert "churn_prediction_score_count 0.0" in text


def test_a_body_that_is_not_utf8_gets_422(make_app, champion) -> None:
    with TestClient(make_app()) as client:
        response = client.post(
            "/predict", content=b'{"user_id": "\xff"}', headers={"content-type": "application/json"}
        )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]
