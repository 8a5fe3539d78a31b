"""`churn serve` as a user runs it: real processes, real HTTP, one or several workers."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import httpx
import pandas as pd

from tests.utils.feast_repo import TestRepo
from tests.utils.serving import (
    OnlineUsers,
    churn_serve_environment,
    churn_serve_process,
    free_port,
)


def test_churn_serve_answers_and_writes_its_log_on_sigterm(
    champion, tracking_uri: str, repo: TestRepo, users: OnlineUsers, tmp_path: Path
) -> None:
    log_dir = tmp_path / "served"
    environment = churn_serve_environment(
        repo, tracking_uri, port=free_port(), log_dir=log_dir, workers="1"
    )
    with churn_serve_process(environment) as (url, process):
        known = httpx.post(f"{url}/predict", json={"user_id": users.fresh[0]})
        unknown = httpx.post(f"{url}/predict", json={"user_id": users.unknown})
        model = httpx.get(f"{url}/model").json()

    output = process.output  # type: ignore[attr-defined]
    assert known.status_code == 200 and known.json()["model_version"] == champion
    assert 0 <= known.json()["churn_probability"] <= 1
    assert unknown.status_code == 404
    # The inference thread of the running service sees one native thread (the default).
    assert model["inference"]["native_threads"] == 1
    # uvicorn shuts down gracefully, then re-raises the signal (the conventional status).
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output, output
    logged = pd.read_parquet(next(log_dir.glob("date=*/part-*.parquet")))
    assert logged["request_id"].tolist() == [known.json()["request_id"]]


def test_the_inference_thread_limit_is_the_setting_inside_churn_serve(
    champion, tracking_uri: str, repo: TestRepo, tmp_path: Path
) -> None:
    environment = churn_serve_environment(
        repo,
        tracking_uri,
        port=free_port(),
        log_dir=tmp_path / "served",
        workers="1",
        inference_threads="2",
    )
    with churn_serve_process(environment) as (url, _):
        model = httpx.get(f"{url}/model").json()

    assert model["inference"]["native_threads"] == 2


def test_workers_share_one_port_their_metrics_add_up_and_every_log_is_flushed(
    champion, tracking_uri: str, repo: TestRepo, users: OnlineUsers, tmp_path: Path
) -> None:
    log_dir = tmp_path / "served"
    environment = churn_serve_environment(repo, tracking_uri, port=free_port(), log_dir=log_dir)
    requests = 60
    with churn_serve_process(environment, "--workers", "2") as (url, process):
        answers = []
        for index in range(requests):
            # A new connection each time, so the kernel spreads them over both workers.
            with httpx.Client(base_url=url) as client:
                user = users.fresh[index % len(users.fresh)]
                answers.append(client.post("/predict", json={"user_id": user}))
        scrapes = [httpx.get(f"{url}/metrics").text for _ in range(6)]
        workers = _worker_pids(process.pid)

    output = process.output  # type: ignore[attr-defined]
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output, output
    assert len(workers) == 2
    assert [answer.status_code for answer in answers] == [200] * requests
    # Whichever worker answers the scrape, the counters are the sum over both workers.
    counted = [_sample(text, 'route="/predict",status="200"') for text in scrapes]
    assert counted == [float(requests)] * len(scrapes)
    assert all(_sample(text, "churn_serving_model_loaded") == 1.0 for text in scrapes)
    assert all(f'model_version="{champion}"' in text for text in scrapes)
    # The graceful stop flushed both workers' logs: every answered prediction is there.
    logged = pd.concat(pd.read_parquet(path) for path in log_dir.glob("date=*/part-*.parquet"))
    assert sorted(logged["request_id"]) == sorted(a.json()["request_id"] for a in answers)


def _worker_pids(parent: int) -> list[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    workers = []
    for child in children:
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
            workers.append(int(child))
    return workers


def _sample(metrics: str, marker: str) -> float:
    """The value of the first sample line containing ``marker``."""
    if marker == "churn_serving_model_loaded":
        pattern = r"^churn_serving_model_loaded (\S+)$"
    else:
        pattern = rf"^churn_http_requests_total{{[^}}]*{re.escape(marker)}[^}}]*}} (\S+)$"
    match = re.search(pattern, metrics, flags=re.M)
    assert match, f"{marker} not in the metrics"
    return float(match.group(1))
