"""A Redis restart under `churn serve` (a real process): 503 while down, recovers alone."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.utils.serving import (
    ThrowawayRedis,
    churn_serve_environment,
    free_port,
    materialized_on,
    register_model,
)
from tests.utils.waiting import wait_until


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis(tmp_path / "redis")
    server.start()
    yield server
    server.close()


def _status(url: str, user: int) -> int:
    try:
        return httpx.post(f"{url}/predict", json={"user_id": user}, timeout=5).status_code
    except httpx.TransportError:
        return -1


def test_redis_killed_and_restarted_under_churn_serve(
    tmp_path: Path, feast_project: str, own_redis: ThrowawayRedis, tracking_uri: str
) -> None:
    repo, users = materialized_on(own_redis, tmp_path / "own", project=feast_project)
    register_model(tracking_uri, project=repo.project)
    user = users.fresh[0]
    port = free_port()
    environment = churn_serve_environment(
        repo, tracking_uri, port=port, log_dir=tmp_path / "served", online_timeout_s="0.3"
    )
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("churn")), "serve", "--log-level", "warning"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: _status(url, user) == 200,
            timeout_s=120,
            what="churn serve did not answer",
            interval_s=0.2,
        )
        before = httpx.post(f"{url}/predict", json={"user_id": user}).json()

        own_redis.crash()  # SIGKILL, with its data saved
        down = [httpx.post(f"{url}/predict", json={"user_id": user}) for _ in range(3)]
        down_ready = httpx.get(f"{url}/ready")

        own_redis.start()  # same port, same data from its dump file
        wait_until(
            lambda: _status(url, user) == 200,
            timeout_s=30,
            what="did not recover by itself",
            interval_s=0.2,
        )
        after = httpx.post(f"{url}/predict", json={"user_id": user}).json()
        ready = httpx.get(f"{url}/ready")
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)

    for response in down:
        assert response.status_code == 503, response.text
        assert response.json()["kind"] == "store_unavailable"
    assert down_ready.status_code == 503
    assert after["churn_probability"] == before["churn_probability"]
    assert after["model_version"] == before["model_version"]
    assert ready.status_code == 200
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output, output
