"""Every answer the service gives is one its OpenAPI document declares, model and headers.

Each error is produced for real (real Redis, MLflow, a trained champion) and checked by
schemathesis against the app's own document: the status is declared for the route, the
body matches the declared model, and declared headers (Retry-After) are there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis.checks import not_a_server_error

from tests.utils.feast_repo import TestRepo
from tests.utils.serving import OnlineUsers, free_port


def assert_declared(app: FastAPI, response: Any, path: str, body: object = None) -> None:
    """``response`` is a declared answer of ``path``: status, content type, body, headers."""
    method = response.request.method
    operation = schemathesis.openapi.from_dict(app.openapi())[path][method]
    case = operation.Case() if body is None else operation.Case(body=body)
    # 503 is a declared answer here; that it is a 5xx is what is being exercised.
    case.validate_response(response, excluded_checks=[not_a_server_error])


def post_raw(client: TestClient, path: str, text: str) -> Any:
    """POST a JSON text exactly as written (``json=`` would re-serialize its numbers)."""
    return client.post(path, content=text, headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("case", "kind"),
    [
        ("unknown", "unknown_user"),
        ("missing_feature", "missing_features"),
        ("stale", "stale_features"),
    ],
)
def test_404_bodies_are_the_declared_model(
    make_app: Callable[..., FastAPI], champion: str, users: OnlineUsers, case: str, kind: str
) -> None:
    app = make_app()
    body = {"user_id": getattr(users, case)}
    with TestClient(app) as client:
        response = client.post("/predict", json=body)

    assert response.status_code == 404 and response.json()["kind"] == kind
    assert_declared(app, response, "/predict", body)


def test_413_and_422_bodies_are_the_declared_models(make_app, champion) -> None:
    app = make_app(batch_limit=3, max_body_bytes=256)
    oversized = {"user_ids": [1], "explain": False, "padding": "x" * 300}
    with TestClient(app) as client:
        answers = {
            "413 single": (client.post("/predict", json=oversized), "/predict", oversized),
            "413 batch": (client.post("/predict/batch", json=oversized), "/predict/batch", None),
            "422 type": (client.post("/predict", json={"user_id": "7"}), "/predict", None),
            "422 count": (
                client.post("/predict/batch", json={"user_ids": [1, 2, 3, 4]}),
                "/predict/batch",
                None,
            ),
            "422 json": (post_raw(client, "/predict", "{user_id: 1"), "/predict", None),
        }

    for name, (response, path, body) in answers.items():
        assert response.status_code == int(name[:3]), (name, response.text)
        assert_declared(app, response, path, body)
    assert answers["413 batch"][0].json()["kind"] == "payload_too_large"
    assert answers["422 count"][0].json()["detail"][0]["type"] == "too_long"


def test_without_a_model_503_bodies_carry_retry_after(make_app) -> None:
    app = make_app()  # an empty registry: no champion
    with TestClient(app) as client:
        answers = {
            "/predict": client.post("/predict", json={"user_id": 1}),
            "/predict/batch": client.post("/predict/batch", json={"user_ids": [1]}),
            "/model": client.get("/model"),
            "/ready": client.get("/ready"),
        }

    for path, response in answers.items():
        assert response.status_code == 503, (path, response.text)
        assert_declared(app, response, path)
    for path in ("/predict", "/predict/batch", "/model"):
        assert answers[path].json()["kind"] == "no_model"
        assert answers[path].headers["retry-after"] == "5"


def test_an_unreachable_store_answers_the_declared_503(make_app, champion, repo: TestRepo) -> None:
    nowhere = repo.feast.model_copy(update={"redis_url": f"127.0.0.1:{free_port()}"})
    app = make_app(feast=nowhere, online_timeout_s=0.3)
    with TestClient(app) as client:
        single = client.post("/predict", json={"user_id": 1})
        batch = client.post("/predict/batch", json={"user_ids": [1, 2]})

    for response, path in ((single, "/predict"), (batch, "/predict/batch")):
        assert response.status_code == 503, response.text
        assert response.json()["kind"] == "store_unavailable"
        assert response.headers["retry-after"] == "1"
        assert_declared(app, response, path)


def test_ids_are_read_exactly_as_the_schema_admits_them(make_app, champion, users) -> None:
    fresh, other = users.fresh[4], users.fresh[5]
    with TestClient(make_app()) as client:
        plain = client.post("/predict", json={"user_id": fresh}).json()
        spelled = {
            text: post_raw(client, "/predict", f'{{"user_id": {text}}}')
            for text in (f"{fresh}.0", f"{fresh}e0", f"{fresh}0e-1", f"{fresh}.000")
        }
        batch = post_raw(client, "/predict/batch", f'{{"user_ids": [{fresh}.0, {other}]}}')
        # As a float this id would be read as 9007199254740992: another user.
        beyond_float = post_raw(client, "/predict", '{"user_id": 9007199254740993.0}')
        bounds = {
            value: post_raw(client, "/predict", f'{{"user_id": {value}}}')
            for value in (2**63 - 1, -(2**63), f"{2**63 - 1}.0", 2**63, -(2**63) - 1, "1e19")
        }
        fractions = [post_raw(client, "/predict", f'{{"user_id": {t}}}') for t in ("7.5", "1e-1")]
        # A 7 with a fraction past a float's precision: still not an integer.
        almost = post_raw(client, "/predict", '{"user_id": 7.0000000000000000001}')

    for text, response in spelled.items():
        assert response.status_code == 200, (text, response.text)
        assert response.json()["user_id"] == fresh
        assert response.json()["churn_probability"] == plain["churn_probability"]
    assert batch.status_code == 200, batch.text
    assert [p["user_id"] for p in batch.json()["predictions"]] == [fresh, other]
    assert beyond_float.status_code == 404
    assert "user 9007199254740993 " in beyond_float.json()["detail"]
    for value in (2**63 - 1, -(2**63), f"{2**63 - 1}.0"):
        assert bounds[value].status_code == 404, bounds[value].text  # admitted, unknown
    assert [bounds[v].json()["detail"][0]["type"] for v in (2**63, -(2**63) - 1, "1e19")] == [
        "less_than_equal",
        "greater_than_equal",
        "less_than_equal",
    ]
    for response in [*fractions, almost]:
        assert response.status_code == 422
        assert response.json()["detail"][0]["type"] == "int_from_float"


def test_the_served_document_states_the_bounds_and_the_app_batch_limit(make_app, champion) -> None:
    with TestClient(make_app(batch_limit=7)) as client:
        text = client.get("/openapi.json").text
    document = json.loads(text)
    schemas = document["components"]["schemas"]

    assert '"maximum":9223372036854775807' in text.replace(" ", "")
    assert schemas["PredictRequest"]["properties"]["user_id"]["minimum"] == -(2**63)
    assert schemas["BatchPredictRequest"]["properties"]["user_ids"]["maxItems"] == 7
