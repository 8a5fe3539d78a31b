"""Process-level faults: `kill -9` during `churn ingest` and `churn materialize`, Redis OOM.

Each test runs the real command in a subprocess, kills it (SIGKILL, no clean-up) at a point
where it is writing, then re-runs it and compares with what an uninterrupted run leaves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from core.exits import ExitCode
from core.settings import DataSettings
from materialize.apply import apply_feature_repo
from materialize.generate import generate_raw_events
from tests.utils.data import write_raw_events
from tests.utils.feast_repo import make_feature_repo
from tests.utils.materialize import (
    END,
    ISO,
    START,
    VIEW,
    AppliedRepo,
    applied_repo_fixture,
    decode_redis,
    expected_online,
    kill_at_stderr_line,
    make_user_features,
    redis_hashes,
    use_engine,
    write_user_features,
)
from tests.utils.serving import ThrowawayRedis

CHURN = str(Path(sys.executable).with_name("churn"))

applied = applied_repo_fixture()


def _environment(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}


def _ingest(raw: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHURN, "ingest", "--backfill", str(raw)],
        env=_environment(CHURN_DATA_DIR=str(data_dir)),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _tables(data: DataSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    # ingested_at is when each run happened: the only column that may differ.
    features = pd.read_parquet(data.user_features_path).drop(columns=["ingested_at"])
    return features, pd.read_parquet(data.labels_path)


def test_kill_9_during_ingest_then_a_rerun_converges(tmp_path: Path) -> None:
    raw = write_raw_events(
        tmp_path / "raw.parquet", generate_raw_events(users=8000, days=60, end="2026-06-01", seed=3)
    )
    reference = DataSettings(data_dir=tmp_path / "reference")
    assert _ingest(raw, reference.data_dir).returncode == 0
    data = DataSettings(data_dir=tmp_path / "killed")

    # Kill as soon as a temporary table file appears: in the middle of writing it.
    process = subprocess.Popen(
        [CHURN, "ingest", "--backfill", str(raw)],
        env=_environment(CHURN_DATA_DIR=str(data.data_dir)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if data.offline_dir.is_dir() and any(data.offline_dir.glob(".*.tmp")):
            break
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL  # killed, not finished
    # Nothing half-written under the real names: absent, or whole and readable.
    for path in (data.user_features_path, data.labels_path):
        assert not path.exists() or len(pd.read_parquet(path)) > 0

    rerun = _ingest(raw, data.data_dir)

    assert rerun.returncode == 0, rerun.stderr
    for killed, uninterrupted in zip(_tables(data), _tables(reference), strict=True):
        pd.testing.assert_frame_equal(killed, uninterrupted)
    assert not list(data.offline_dir.glob(".*.tmp"))  # the leftovers were removed
    again = _ingest(raw, data.data_dir)
    assert "0 new, 0 corrected" in again.stdout


def _churn_materialize() -> list[str]:
    return [CHURN, "materialize", "--start", START.strftime(ISO), "--end", END.strftime(ISO)]


def test_kill_9_during_materialize_then_a_rerun_converges(applied: AppliedRepo) -> None:
    repo = applied.fresh()
    offline = applied.write_table(users=300)
    environment = _environment(
        CHURN_FEAST_REPO_PATH=str(repo.feast.repo_path), CHURN_REDIS_URL=repo.feast.redis_url
    )
    use_engine(repo, "fast", chunk_rows=40, chunk_pause_seconds=0.5)
    status = kill_at_stderr_line(_churn_materialize(), "chunk 2/", env=environment)
    assert status == -signal.SIGKILL  # killed, not finished
    expected = expected_online(offline, start=START, end=END)
    partial = decode_redis(redis_hashes(repo.project))
    assert 0 < len(partial) < len(expected)

    use_engine(repo, "fast", chunk_rows=40)
    rerun = subprocess.run(
        _churn_materialize(), env=environment, capture_output=True, text=True, timeout=300
    )

    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(expected) - len(partial):,} entities written" in rerun.stdout
    killed_then_rerun = redis_hashes(repo.project)
    assert decode_redis(killed_then_rerun) == expected
    # The same bytes as one uninterrupted run, created-time field included.
    applied.fresh()
    uninterrupted = subprocess.run(
        _churn_materialize(), env=environment, capture_output=True, text=True, timeout=300
    )
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    assert redis_hashes(repo.project) == killed_then_rerun


@pytest.fixture
def small_redis(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    """A private Redis whose maxmemory the test may lower (never the shared one)."""
    server = ThrowawayRedis(tmp_path / "redis")
    server.start()
    yield server
    server.close()


def test_redis_out_of_memory_is_a_clear_error_and_a_rerun_resumes(
    tmp_path: Path, feast_project: str, small_redis: ThrowawayRedis
) -> None:
    import redis

    repo = make_feature_repo(tmp_path, project=feast_project)
    settings = repo.feast.model_copy(update={"redis_url": small_redis.url})
    offline = make_user_features(users=20_000, snapshots=1)
    write_user_features(repo.data.user_features_path, offline)
    apply_feature_repo(settings)
    client = redis.Redis(host="127.0.0.1", port=small_redis.port)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used + 1_000_000)  # room for a few thousand users
    client.config_set("maxmemory-policy", "noeviction")
    environment = _environment(
        CHURN_FEAST_REPO_PATH=str(repo.feast.repo_path), CHURN_REDIS_URL=small_redis.url
    )

    full = subprocess.run(
        _churn_materialize(), env=environment, capture_output=True, text=True, timeout=300
    )

    assert full.returncode == ExitCode.BLOCKED == 3, full.stderr
    assert f"the Redis online store at {small_redis.url} is out of memory" in full.stderr
    assert "maxmemory" in full.stderr and "Traceback" not in full.stderr
    written = client.dbsize()
    assert written > 0

    client.config_set("maxmemory", 0)
    resumed = subprocess.run(
        _churn_materialize(), env=environment, capture_output=True, text=True, timeout=300
    )

    assert resumed.returncode == 0, resumed.stderr
    expected = expected_online(offline, start=START, end=END)
    assert client.dbsize() == len(expected)
    assert f"{len(expected) - written:,} entities written" in resumed.stdout
    hashes = {
        key[: -len(feast_project)]: fields
        for key in client.scan_iter(count=1000)
        for fields in [client.hgetall(key)]
    }
    assert decode_redis(hashes) == expected
    assert all(f"_created:{VIEW}".encode() in fields for fields in hashes.values())
