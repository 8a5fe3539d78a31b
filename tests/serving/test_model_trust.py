"""Serving loads only trusted artifacts; a refused version leaves the current one serving."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from core.feast_trust import OnDemandSourceMismatch
from core.model_trust import HASH_TAG
from materialize.apply import apply_feature_repo
from tests.utils.feast_repo import TestRepo, make_feature_repo, tamper_registry
from tests.utils.services import unique_name
from tests.utils.serving import OnlineUsers, fit_model, register_model


def test_an_artifact_that_fails_its_hash_is_refused_and_the_champion_keeps_serving(
    make_app, champion, tracking_uri, repo: TestRepo, users: OnlineUsers
) -> None:
    with TestClient(make_app(admin_token="s3cret-admin-token-0123")) as client:
        before = client.post("/predict", json={"user_id": users.fresh[0]}).json()
        tampered = register_model(
            tracking_uri,
            project=repo.project,
            model=fit_model(invert=True),
            tags={HASH_TAG: "0" * 64},  # not the hash of its files
        )
        reloaded = client.post(
            "/admin/reload", headers={"Authorization": "Bearer s3cret-admin-token-0123"}
        )
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


def test_a_registry_with_foreign_on_demand_code_is_refused_at_start(
    make_app, champion, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tampered = make_feature_repo(tmp_path / "t", project=unique_name("odfv"), profile="embedded")
    monkeypatch.setenv("CHURN_DATA_DIR", str(tampered.data.data_dir))
    apply_feature_repo(tampered.feast)
    tamper_registry(tampered, "request_time_features", "\nimport os\n")
    with (
        pytest.raises(OnDemandSourceMismatch, match="request_time_features: the registry's"),
        TestClient(make_app(feast=tampered.feast)),
    ):
        pass
