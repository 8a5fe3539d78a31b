"""Serving loads only trusted artifacts; a refused version leaves the current one serving."""

from __future__ import annotations

from fastapi.testclient import TestClient

from core.model_trust import HASH_TAG
from tests.utils.feast_repo import TestRepo
from tests.utils.serving import OnlineUsers, fit_model, register_model


def test_an_artifact_that_fails_its_hash_is_refused_and_the_champion_keeps_serving(
    make_app, champion, tracking_uri, repo: TestRepo, users: OnlineUsers
) -> None:
    with TestClient(make_app(admin_token="s3cret")) as client:
        before = client.post("/predict", json={"user_id": users.fresh[0]}).json()
        tampered = register_model(
            tracking_uri,
            project=repo.project,
            model=fit_model(invert=True),
            tags={HASH_TAG: "0" * 64},  # not the hash of its files
        )
        reloaded = client.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
        after = client.post("/predict", json={"user_id": users.fresh[0]}).json()

    outcome = reloaded.json()
    assert outcome["outcome"] == "refused"
    assert f"version {tampered} refused: model files changed since training" in outcome["detail"]
    assert before["model_version"] == after["model_version"] == champion
    assert after["churn_probability"] == before["churn_probability"]


def test_a_version_without_a_hash_is_refused_at_start(
    make_app, tracking_uri, repo: TestRepo
) -> None:
    register_model(tracking_uri, project=repo.project, tags={HASH_TAG: ""})
    with TestClient(make_app()) as client:
        ready = client.get("/ready").json()
    assert ready["ready"] is False
    assert f"version 1 refused: no {HASH_TAG} tag" in ready["detail"]
