"""`churn serve` as a user runs it: a real process, real HTTP, a graceful stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd

from tests.utils.feast_repo import TestRepo
from tests.utils.serving import OnlineUsers, free_port


def test_churn_serve_answers_and_writes_its_log_on_sigterm(
    champion, tracking_uri: str, repo: TestRepo, users: OnlineUsers, tmp_path: Path
) -> None:
    port = free_port()
    log_dir = tmp_path / "served"
    environment = {
        key: value
        for key, value in os.environ.items()
        # Model loading must work on MLflow's defaults, and Feast's metrics dir be ignored.
        if key not in ("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "PROMETHEUS_MULTIPROC_DIR")
    }
    environment.update(
        CHURN_DATA_DIR=str(repo.data.data_dir),
        CHURN_FEAST_REPO_PATH=str(repo.feast.repo_path),
        CHURN_REDIS_URL=repo.feast.redis_url,
        MLFLOW_TRACKING_URI=tracking_uri,
        CHURN_SERVING_PORT=str(port),
        CHURN_SERVING_PREDICTION_LOG_DIR=str(log_dir),
    )
    churn = Path(sys.executable).with_name("churn")
    process = subprocess.Popen(
        [str(churn), "serve", "--log-level", "warning"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.communicate()[0]
            try:
                if httpx.get(f"{url}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "churn serve did not become ready"
            time.sleep(0.2)
        known = httpx.post(f"{url}/predict", json={"user_id": users.fresh[0]})
        unknown = httpx.post(f"{url}/predict", json={"user_id": users.unknown})
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)

    assert known.status_code == 200 and known.json()["model_version"] == champion
    assert 0 <= known.json()["churn_probability"] <= 1
    assert unknown.status_code == 404
    # uvicorn shuts down gracefully, then re-raises the signal (the conventional status).
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output, output
    logged = pd.read_parquet(next(log_dir.glob("date=*/part-*.parquet")))
    assert logged["request_id"].tolist() == [known.json()["request_id"]]
