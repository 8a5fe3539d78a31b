"""A registered model whose files were changed after training is refused by every command.

`churn train` records the SHA-256 of the model's files on the registered version; the model
checkpoint (core.models) checks it on every load. Here the files of registered versions are
changed on disk, as someone with write access to the artifact store could, and `churn score`,
`churn serve`, `churn drift`, `churn promote` and `churn rollback` are run as a user types them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from core.models import ModelRegistry
from materialize.apply import apply_feature_repo
from tests.utils.feast_repo import make_feature_repo
from tests.utils.services import unique_name
from tests.utils.serving import free_port
from tests.utils.training import make_churn_tables

CHURN = str(Path(sys.executable).with_name("churn"))
REFUSED = "model files changed since training"


@dataclass(frozen=True)
class TamperedRegistry:
    """An applied repo, two trained versions, and the environment of the commands."""

    environment: dict[str, str]
    champion: str
    other: str
    folder: Path
    history_end: str


def _churn(
    environment: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHURN, *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _tamper(registry: ModelRegistry, name: str, version: str) -> None:
    """Change one byte's worth of the version's skops file, where the artifact store keeps it."""
    uri = registry.client.get_model_version_download_uri(name, version)
    folder = Path(unquote(urlparse(uri).path))
    model_files = list(folder.glob("*.skops"))
    assert model_files, f"no skops file under {folder}"
    with model_files[0].open("ab") as stream:
        stream.write(b"\0")


@pytest.fixture(scope="module")
def tampered(tmp_path_factory: pytest.TempPathFactory) -> TamperedRegistry:
    folder = tmp_path_factory.mktemp("tampered")
    repo = make_feature_repo(folder, project=unique_name("tamper"), profile="embedded")
    tables = make_churn_tables(repo.data)
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    environment = {
        **os.environ,
        "CHURN_DATA_DIR": str(repo.data.data_dir),
        "CHURN_FEAST_REPO_PATH": str(repo.feast.repo_path),
        "CHURN_FEAST_PROFILE": "embedded",
        "MLFLOW_TRACKING_URI": tracking_uri,
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHURN_DATA_DIR", str(repo.data.data_dir))
        apply_feature_repo(repo.feast)
    for args in (
        ["materialize"],
        ["train", "--trials", "1", "--min-auc", "0", "--no-progress"],
        ["train", "--trials", "1", "--min-auc", "0", "--no-progress", "--seed", "5"],
    ):
        completed = _churn(environment, *args)
        assert completed.returncode == 0, completed.stdout + completed.stderr
    registry = ModelRegistry(tracking_uri)
    first = registry.resolve("churn-predictor", alias="champion").version
    other = "2" if first == "1" else "1"
    # Both versions have been champion (untampered then): a rollback has a version to go to.
    promoted = _churn(environment, "promote", "--version", other)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    champion, other = other, first
    for version in ("1", "2"):
        _tamper(registry, "churn-predictor", version)
    history_end = tables.features["event_timestamp"].max().isoformat()
    return TamperedRegistry(
        environment, champion=champion, other=other, folder=folder, history_end=history_end
    )


def test_churn_score_refuses_a_tampered_champion(tampered: TamperedRegistry) -> None:
    out = tampered.folder / "scores.parquet"
    completed = _churn(tampered.environment, "score", "--out", str(out))
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert REFUSED in completed.stderr
    assert not out.exists()


def test_churn_promote_refuses_a_tampered_version(tampered: TamperedRegistry) -> None:
    completed = _churn(tampered.environment, "promote", "--version", tampered.other)
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert REFUSED in completed.stderr
    registry = ModelRegistry(tampered.environment["MLFLOW_TRACKING_URI"])
    assert registry.resolve("churn-predictor", alias="champion").version == tampered.champion


def test_churn_rollback_refuses_a_tampered_previous_champion(tampered: TamperedRegistry) -> None:
    completed = _churn(tampered.environment, "rollback")
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert REFUSED in completed.stderr
    registry = ModelRegistry(tampered.environment["MLFLOW_TRACKING_URI"])
    assert registry.resolve("churn-predictor", alias="champion").version == tampered.champion


def test_churn_drift_refuses_to_score_with_a_tampered_champion(tampered: TamperedRegistry) -> None:
    out = tampered.folder / "drift"
    completed = _churn(
        tampered.environment,
        "drift", "--out", str(out), "--no-retrain", "--until", tampered.history_end,
    )  # fmt: skip
    assert REFUSED in completed.stdout + completed.stderr
    report = json.loads((out / "drift.json").read_text())
    assert REFUSED in json.dumps(report)


def test_churn_serve_refuses_a_tampered_champion(tampered: TamperedRegistry) -> None:
    port = free_port()
    server = subprocess.Popen(
        [CHURN, "serve", "--port", str(port), "--log-level", "warning"],
        env=tampered.environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        ready = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as answer:
                    ready = json.loads(answer.read())
            except urllib.error.HTTPError as error:  # 503 while not ready: its body says why
                ready = json.loads(error.read())
            except OSError:
                time.sleep(0.5)
                continue
            if ready.get("detail"):
                break
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert ready is not None and ready["ready"] is False
    assert REFUSED in ready["detail"]
