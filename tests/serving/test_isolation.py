"""No request can hurt another: poison rows, oversized bodies, slow Redis, the admin token."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from core.feast_store import open_feature_store
from serving.features import OnlineFeatures
from tests.utils.feast_repo import TestRepo
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.serving import (
    OnlineUsers,
    PoisonUsers,
    SlowProxy,
    plant_poison_users,
    running_server,
)


@pytest.fixture(scope="module")
def poison(online_repo: tuple[TestRepo, OnlineUsers]) -> PoisonUsers:
    repo, users = online_repo
    return plant_poison_users(repo, like=users.fresh[0])


def test_poison_rows_fail_only_their_own_users_in_a_shared_batch(
    make_app, champion, users: OnlineUsers, poison: PoisonUsers
) -> None:
    good = users.fresh[:3]
    asked = [good[0], *poison.kinds(), good[1], good[2]]
    with TestClient(make_app()) as client:
        batch = client.post("/predict/batch", json={"user_ids": asked})
        singles = {user: client.post("/predict", json={"user_id": user}) for user in asked}

    assert batch.status_code == 200, batch.text
    assert [p["user_id"] for p in batch.json()["predictions"]] == good
    assert {e["user_id"]: e["kind"] for e in batch.json()["errors"]} == poison.kinds()
    for user, kind in poison.kinds().items():
        assert singles[user].status_code == 404, singles[user].text
        assert singles[user].json()["kind"] == kind
    for user in good:
        assert singles[user].status_code == 200


def test_concurrent_requests_beside_poison_users_all_get_their_own_answer(
    make_app, champion, users: OnlineUsers, poison: PoisonUsers
) -> None:
    asked = [*users.fresh[:12], *poison.kinds()] * 3
    with running_server(make_app()) as url, httpx.Client(base_url=url, timeout=30) as client:
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(
                pool.map(lambda user: client.post("/predict", json={"user_id": user}), asked)
            )
        metrics = client.get("/metrics").text

    for user, answer in zip(asked, answers, strict=True):
        if user in poison.kinds():
            assert (answer.status_code, answer.json()["kind"]) == (404, poison.kinds()[user])
        else:
            assert answer.status_code == 200, answer.text
    assert 'status="500"' not in metrics
    assert "internal_error" not in metrics


def test_the_feast_sdk_path_isolates_a_poison_row_too(
    repo: TestRepo, users: OnlineUsers, poison: PoisonUsers
) -> None:
    store = open_feature_store(repo.feast)
    online = OnlineFeatures(store, timeout_s=5.0)
    plan = online.resolve(service_name="churn_v1", features=CHURN_V1_FEATURES, project=None)
    sdk_plan = dataclasses.replace(plan, fast_path=False, fast_path_gap="forced by the test")
    asked = [users.fresh[0], poison.zero_denominator, poison.infinite, users.fresh[1]]
    now = datetime.now(UTC)

    import asyncio

    async def read() -> tuple[object, object]:
        try:
            return (
                await online.read(sdk_plan, asked, [now] * len(asked)),
                await online.read(plan, asked, [now] * len(asked)),
            )
        finally:
            await online.close()

    sdk, fast = asyncio.run(read())

    kinds = [problem.kind if problem else None for problem in sdk.problems]  # type: ignore[attr-defined]
    assert kinds == [None, "feature_transform_failed", "non_finite_features", None]
    assert kinds == [p.kind if p else None for p in fast.problems]  # type: ignore[attr-defined]
    np.testing.assert_array_equal(sdk.matrix[[0, 3]], fast.matrix[[0, 3]])  # type: ignore[attr-defined]


def test_an_oversized_body_gets_413_unread_while_health_keeps_answering(make_app, champion) -> None:
    huge = json.dumps({"user_ids": list(range(200_000))}).encode()  # about 1.3 MB

    def chunks():
        for start in range(0, len(huge), 65536):
            yield huge[start : start + 65536]

    with running_server(make_app()) as url, httpx.Client(base_url=url, timeout=10) as client:
        stop = threading.Event()
        health: list[int] = []

        def poll_health() -> None:
            with httpx.Client(base_url=url, timeout=2) as poller:
                while not stop.is_set():
                    health.append(poller.get("/health").status_code)

        poller = threading.Thread(target=poll_health)
        poller.start()
        try:
            declared = [
                client.post(
                    "/predict/batch", content=huge, headers={"content-type": "application/json"}
                )
                for _ in range(5)
            ]
            chunked = client.post(
                "/predict/batch", content=chunks(), headers={"content-type": "application/json"}
            )
            give_up = time.monotonic() + 5
            while len(health) < 3 and time.monotonic() < give_up:
                time.sleep(0.01)
        finally:
            stop.set()
            poller.join()
        metrics = client.get("/metrics").text

    for answer in [*declared, chunked]:
        assert answer.status_code == 413, answer.text[:200]
        assert answer.json()["kind"] == "payload_too_large"
        assert len(answer.content) < 200
    assert declared[0].json()["detail"] == "the request body exceeds the limit of 67936 bytes"
    assert health and set(health) == {200}
    assert 'churn_prediction_errors_total{kind="payload_too_large"} 6.0' in metrics


def test_validation_errors_name_the_problem_without_echoing_the_input(make_app, champion) -> None:
    secret = "x" * 60
    with TestClient(make_app()) as client:
        answer = client.post("/predict/batch", json={"user_ids": [secret] * 50})
        schema = client.get("/openapi.json").json()

    assert answer.status_code == 422
    assert secret not in answer.text
    detail = answer.json()["detail"]
    assert len(detail) == 11 and detail[-1]["type"] == "too_many_errors"
    assert detail[0]["loc"] == ["body", "user_ids", 0] and detail[0]["type"] == "int_type"
    batch = schema["components"]["schemas"]["BatchPredictRequest"]["properties"]["user_ids"]
    assert batch["maxItems"] == 100  # the app's batch limit (the default)


def test_slow_redis_bounds_the_queue_sheds_load_and_skips_gone_clients(
    make_app, champion, repo: TestRepo, users: OnlineUsers, tmp_path: Path
) -> None:
    address, *options = repo.feast.redis_url.split(",")
    host, port = address.rsplit(":", 1)
    with SlowProxy(host, int(port), delay_s=0.4) as proxy:
        feast = repo.feast.model_copy(
            update={"redis_url": ",".join([f"127.0.0.1:{proxy.port}", *options])}
        )
        app = make_app(
            feast=feast,
            # Far above the proxy's delay: on a loaded machine a lookup must still come back
            # slow rather than time out, so what sheds load is the queue and the deadline.
            online_timeout_s=5.0,
            max_micro_batch=1,
            max_queue_rows=4,
            ready_backlog_rows=2,
            request_deadline_s=1.5,
        )
        with running_server(app) as url, httpx.Client(base_url=url, timeout=10) as client:
            user = users.fresh[0]
            with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
                pending = [
                    pool.submit(
                        lambda: httpx.post(f"{url}/predict", json={"user_id": user}, timeout=10)
                    )
                    for _ in range(10)
                ]
                busy_ready = _first_unready(client, within_s=1.5)
                answers = [future.result() for future in pending]
            # Let the first wave drain (its last lookup may still be under way).
            _wait_for_empty_backlog(client)
            time.sleep(0.5)
            # Clients that give up while queued behind a slow lookup: never scored.
            with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
                blocker = pool.submit(client.post, "/predict", json={"user_id": user})
                time.sleep(0.05)
                gone = list(
                    pool.map(lambda _: _post_and_give_up(url, user, after_s=0.15), range(3))
                )
                answers.append(blocker.result())
            settled_ready = client.get("/ready")
            metrics = client.get("/metrics").text
    logged = pd.concat(
        pd.read_parquet(path) for path in (tmp_path / "predictions").glob("date=*/*.parquet")
    )

    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses
    shed = [answer for answer in answers if answer.status_code == 503]
    kinds = {answer.json()["kind"] for answer in shed}
    assert "overloaded" in kinds and kinds <= {"overloaded", "deadline_exceeded"}, kinds
    assert all(answer.headers["retry-after"] == "1" for answer in shed)
    assert busy_ready.status_code == 503, busy_ready.text
    assert "backlog of" in busy_ready.json()["detail"]
    assert settled_ready.status_code == 200 and settled_ready.json()["backlog_rows"] == 0
    assert gone == ["gave up"] * 3
    assert _counter(metrics, "client_gone") >= 1
    # Only answered requests were scored and logged.
    assert len(logged) == statuses.count(200)


def _wait_for_empty_backlog(client: httpx.Client, within_s: float = 10) -> None:
    deadline = time.monotonic() + within_s
    while client.get("/ready").json()["backlog_rows"] and time.monotonic() < deadline:
        time.sleep(0.05)


def _first_unready(client: httpx.Client, *, within_s: float) -> httpx.Response:
    """Poll /ready until it answers 503 (or the time is up: the last answer)."""
    deadline = time.monotonic() + within_s
    while True:
        answer = client.get("/ready")
        if answer.status_code == 503 or time.monotonic() > deadline:
            return answer
        time.sleep(0.02)


def _post_and_give_up(url: str, user: int, *, after_s: float) -> str:
    try:
        httpx.post(f"{url}/predict", json={"user_id": user}, timeout=after_s)
    except httpx.TimeoutException:
        return "gave up"
    return "answered"


def _counter(metrics: str, kind: str) -> float:
    match = re.search(rf'churn_prediction_errors_total{{kind="{kind}"}} (\S+)', metrics)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize("token", ["", "short-token"], ids=["empty", "short"])
def test_an_empty_or_short_admin_token_turns_the_admin_routes_off(
    make_app, champion, token: str
) -> None:
    with TestClient(make_app(admin_token=token)) as client:
        bare = client.post("/admin/reload")
        empty_bearer = client.post("/admin/reload", headers={"Authorization": "Bearer "})
        same_token = client.post("/admin/reload", headers={"Authorization": f"Bearer {token}"})

    assert bare.status_code == 404
    assert empty_bearer.status_code == 404
    assert same_token.status_code == 404
