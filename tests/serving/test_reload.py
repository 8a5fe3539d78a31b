"""Moving the champion alias under a steady stream of requests (real HTTP)."""

from __future__ import annotations

import threading
import time

import httpx

from tests.utils.feast_repo import TestRepo
from tests.utils.serving import OnlineUsers, fit_model, register_model, running_server

CLIENTS = 4


def test_champion_moved_under_load_is_served_without_a_failed_request(
    make_app, champion, tracking_uri: str, repo: TestRepo, users: OnlineUsers
) -> None:
    answers: list[list[tuple[int, str | None]]] = [[] for _ in range(CLIENTS)]
    stop = threading.Event()

    def stream(url: str, seen: list[tuple[int, str | None]]) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            index = 0
            while not stop.is_set():
                user = users.fresh[index % len(users.fresh)]
                response = client.post("/predict", json={"user_id": user})
                seen.append((response.status_code, response.json().get("model_version")))
                index += 1

    with running_server(make_app(poll_interval_s=0.2)) as url:
        threads = [
            threading.Thread(target=stream, args=(url, seen), daemon=True) for seen in answers
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        new_version = register_model(
            tracking_uri, project=repo.project, model=fit_model(invert=True)
        )
        deadline = time.monotonic() + 30
        while not all(seen and seen[-1][1] == new_version for seen in answers):
            assert time.monotonic() < deadline, "the new champion was not picked up"
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        model = httpx.get(f"{url}/model").json()

    statuses = {status for seen in answers for status, _ in seen}
    assert statuses == {200}
    assert model["version"] == new_version
    for seen in answers:
        versions = [version for _, version in seen]
        switch = versions.index(new_version)
        # Each client saw the old version, then only the new one: one clean swap.
        assert switch > 0
        assert set(versions[:switch]) == {champion}
        assert set(versions[switch:]) == {new_version}
    assert sum(len(seen) for seen in answers) > 100
