"""`churn serve` and `churn score` as a user runs them: options, output, exit codes.

`churn serve` runs as real processes on real HTTP, with one or several workers; `churn
score` through the Typer app in this process (its scoring process is real).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import build_app
from materialize.apply import apply_feature_repo
from tests.utils.feast_repo import TestRepo, make_feature_repo, tamper_registry
from tests.utils.services import delete_project_keys, unique_name
from tests.utils.serving import (
    OnlineUsers,
    churn_serve_environment,
    churn_serve_process,
    free_port,
    register_model,
    tamper_model_files,
    tracking_uri_in,
)

# --- churn serve ---------------------------------------------------------------------------


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


def test_churn_serve_refuses_a_model_setting_under_its_old_name(
    champion, tracking_uri: str, repo: TestRepo, tmp_path: Path
) -> None:
    """The model's alias is CHURN_MODEL_ALIAS now; the old name would be silently ignored."""
    environment = churn_serve_environment(
        repo,
        tracking_uri,
        port=free_port(),
        log_dir=tmp_path / "served",
        workers="1",
        model_alias="served",
    )
    churn = Path(sys.executable).with_name("churn")
    outcome = subprocess.run(
        [str(churn), "serve"], env=environment, capture_output=True, text=True, timeout=120
    )

    assert outcome.returncode == 2, outcome.stdout + outcome.stderr
    assert "CHURN_SERVING_MODEL_ALIAS is no longer read: set CHURN_MODEL_ALIAS" in outcome.stderr


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


# --- churn score ---------------------------------------------------------------------------


def _environment(monkeypatch: pytest.MonkeyPatch, repo: TestRepo, registry: str) -> None:
    monkeypatch.setenv("CHURN_FEAST_REPO_PATH", str(repo.feast.repo_path))
    monkeypatch.setenv("CHURN_REDIS_URL", repo.feast.redis_url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)


def test_every_user_with_features_is_scored_by_default(
    online_repo: tuple[TestRepo, OnlineUsers],
    scoring_registry: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the command line, as a user types it (champion, --at now, progress)."""
    repo, users = online_repo
    _environment(monkeypatch, repo, scoring_registry)
    out = tmp_path / "all.parquet"
    outcome = CliRunner().invoke(
        build_app(), ["score", "--out", str(out), "--chunk-rows", "15", "--show", "3"]
    )

    assert outcome.exit_code == 0, outcome.output
    scores = pd.read_parquet(out)
    # stale: outside the TTL, not a user now; the one with a null feature_2 is scored by
    # the champion (HistGradientBoosting takes missing values: the default policy, model).
    assert sorted(scores["user_id"]) == [*users.fresh, users.missing_feature]
    assert (scores["model_version"] == "1").all()
    assert "scored 41 users" in outcome.stdout
    assert "missing values: model (default); scored with a missing feature: 1" in outcome.stdout
    assert "users/s, ETA" in outcome.stderr
    # Where the time before the first chunk went: the users listed while the model loads.
    startup = re.search(
        r"start-up ([\d.]+) s to the first retrieval \(users listed in ([\d.]+) s; model "
        r"loaded and prepared in the scoring process in ([\d.]+) s\)",
        outcome.stdout,
    )
    assert startup is not None, outcome.stdout
    assert float(startup[2]) <= float(startup[1])
    assert float(startup[3]) > 0
    riskiest = scores.nlargest(3, "churn_probability")
    assert "3 users most at risk:" in outcome.stdout
    listing = outcome.stdout.split("3 users most at risk:")[1]
    positions = [listing.index(f"user {user}:") for user in riskiest["user_id"]]
    assert positions == sorted(positions)
    assert f"{riskiest['reason_1_feature'].iloc[0]}=" in listing
    probabilities = scores["churn_probability"].to_numpy()
    assert ((probabilities > 0) & (probabilities < 1)).all()
    assert (scores["churn_predicted"] == (probabilities >= 0.5)).all()


@pytest.mark.parametrize(
    ("arguments", "variables", "message"),
    [
        (["--at", "yesterday"], {}, "is not an ISO date"),
        (["--model-version", "9"], {}, "has no version 9"),
        (["--users", "/nonexistent/users.csv"], {}, "does not exist"),
        # read before the model settings were shared: ignoring it would score the champion
        (
            [],
            {"CHURN_SCORING_MODEL_ALIAS": "served"},
            "CHURN_SCORING_MODEL_ALIAS is no longer read: set CHURN_MODEL_ALIAS",
        ),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    online_repo: tuple[TestRepo, OnlineUsers],
    scoring_registry: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    arguments: list[str],
    variables: dict[str, str],
    message: str,
) -> None:
    repo, _ = online_repo
    _environment(monkeypatch, repo, scoring_registry)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "scores.parquet"
    outcome = CliRunner().invoke(build_app(), ["score", "--out", str(out), *arguments])

    assert outcome.exit_code == 2, outcome.output
    assert message in outcome.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_failed_run_leaves_the_previous_file_whole(
    online_repo: tuple[TestRepo, OnlineUsers],
    scoring_registry: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The offline table disappears mid-run: exit 1, old output untouched, no temp file."""
    repo, _ = online_repo
    _environment(monkeypatch, repo, scoring_registry)
    out = tmp_path / "scores.parquet"
    out.write_bytes(b"previous run")
    source = repo.data.user_features_path
    moved = source.with_name("moved.parquet")
    source.rename(moved)
    try:
        outcome = CliRunner().invoke(build_app(), ["score", "--out", str(out)])
    finally:
        moved.rename(source)

    assert outcome.exit_code == 1, outcome.output
    assert "offline" in outcome.stderr
    assert out.read_bytes() == b"previous run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.parquet"]


def test_a_tampered_model_is_refused_by_churn_score(
    online_repo: tuple[TestRepo, OnlineUsers], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The champion's model file changed in the artifact store after training: exit 2."""
    repo, _ = online_repo
    registry = tracking_uri_in(tmp_path / "mlflow")
    version = register_model(registry, project=repo.project)
    tampered = tamper_model_files(registry, version)
    _environment(monkeypatch, repo, registry)
    out = tmp_path / "scores" / "scores.parquet"
    outcome = CliRunner().invoke(build_app(), ["score", "--out", str(out)])

    assert tampered.name == "model.skops"
    assert outcome.exit_code == 2, outcome.output
    assert "error: model files changed since training: sha256" in outcome.stderr
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_a_registry_with_foreign_on_demand_code_is_refused_by_churn_score(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_available: None
) -> None:
    """Feast would run the registry's on-demand code on every retrieval: exit 2 first."""
    project = unique_name("score_odfv")
    tampered = make_feature_repo(tmp_path / "repo", project=project)
    monkeypatch.setenv("CHURN_DATA_DIR", str(tampered.data.data_dir))
    try:
        apply_feature_repo(tampered.feast)
        tamper_registry(tampered, "request_time_features", "\nimport os\n")
        registry = tracking_uri_in(tmp_path / "mlflow")
        register_model(registry, project=project)
        _environment(monkeypatch, tampered, registry)
        out = tmp_path / "scores.parquet"
        outcome = CliRunner().invoke(build_app(), ["score", "--out", str(out)])
    finally:
        delete_project_keys(project)

    assert outcome.exit_code == 2, outcome.output
    assert "request_time_features: the registry's" in outcome.stderr
    assert not out.exists()
