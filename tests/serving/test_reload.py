"""Moving the champion alias under a steady stream of requests (real HTTP)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx

from tests.utils.feast_repo import TestRepo
from tests.utils.serving import OnlineUsers, fit_model, register_model, running_server

CLIENTS = 4
BEFORE = 20  # answers per client from the old champion before the alias moves
AFTER = 10  # answers per client from the new one before the stream stops
TIMEOUT_S = 60.0


def test_champion_moved_under_load_is_served_without_a_failed_request(
    make_app, champion, tracking_uri: str, repo: TestRepo, users: OnlineUsers
) -> None:
    answers: list[list[tuple[int, str | None]]] = [[] for _ in range(CLIENTS)]
    answered = threading.Condition()  # notified on every answer: the test waits on states
    stop = threading.Event()

    def stream(url: str, seen: list[tuple[int, str | None]]) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            index = 0
            while not stop.is_set():
                user = users.fresh[index % len(users.fresh)]
                response = client.post("/predict", json={"user_id": user})
                with answered:
                    seen.append((response.status_code, response.json().get("model_version")))
                    answered.notify_all()
                index += 1

    def wait_until(state: Callable[[], bool], what: str) -> None:
        with answered:
            assert answered.wait_for(state, timeout=TIMEOUT_S), what

    def served(version: str | None, count: int) -> Callable[[], bool]:
        return lambda: all(
            sum(1 for _, seen_version in seen if seen_version == version) >= count
            for seen in answers
        )

    with running_server(make_app(poll_interval_s=0.2)) as url:
        threads = [
            threading.Thread(target=stream, args=(url, seen), daemon=True) for seen in answers
        ]
        for thread in threads:
            thread.start()
        wait_until(served(champion, BEFORE), "the clients did not get answers from the champion")
        new_version = register_model(
            tracking_uri, project=repo.project, model=fit_model(invert=True)
        )
        wait_until(served(new_version, AFTER), "the new champion was not picked up")
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
        assert switch >= BEFORE
        assert set(versions[:switch]) == {champion}
        assert set(versions[switch:]) == {new_version}
