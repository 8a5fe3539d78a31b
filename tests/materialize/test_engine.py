"""FastEngine into Redis: same bytes as Feast's own engine, newer-wins, idempotent, resumable."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from feast.value_type import ValueType

from materialize.apply import apply_feature_repo
from materialize.settings import DataSettings
from materialize.store import feast_cli_environment, open_feature_store, run_feast_cli
from tests.utils.feast_repo import TestRepo, make_feature_repo
from tests.utils.materialize import (
    END,
    FEATURES,
    ISO,
    START,
    VIEW,
    decode_redis,
    expected_online,
    make_user_features,
    redis_hashes,
    redis_ttls,
    set_key_ttl,
    use_engine,
    write_offline_table,
    write_user_features,
)
from tests.utils.services import delete_project_keys, unique_name


@pytest.fixture
def offline() -> pd.DataFrame:
    """The offline user-features table every test repo of the test reads."""
    return write_offline_table(users=300)


@pytest.fixture
def second_project() -> Iterator[str]:
    """Another Feast project name; its Redis keys are deleted afterwards."""
    project = unique_name("churn_test")
    yield project
    delete_project_keys(project)


def _repo(root: Path, project: str, engine: str, **options: object) -> TestRepo:
    repo = make_feature_repo(root, project=project)
    use_engine(repo, engine, **options)
    return repo


def _materialize(repo: TestRepo, start: object, end: object) -> list:
    store = open_feature_store(repo.feast)
    store.materialize(start, end)
    return list(store._get_provider().batch_engine.results)


def _online(repo: TestRepo, users: list[int]) -> dict:
    store = open_feature_store(repo.feast)
    rows = [{"user_id": user, "event_timestamp": END} for user in users]
    service = store.get_feature_service("churn_v1")
    return {
        "service": store.get_online_features(features=service, entity_rows=rows).to_dict(),
        "view": store.get_online_features(
            features=[f"{VIEW}:{name}" for name in FEATURES], entity_rows=rows
        ).to_dict(include_event_timestamps=True),
    }


def test_feast_cli_runs_the_engine_and_writes_what_feast_writes(
    tmp_path: Path, offline: pd.DataFrame, feast_project: str, second_project: str
) -> None:
    stock = _repo(tmp_path / "stock", feast_project, "stock")
    fast = _repo(tmp_path / "fast", second_project, "fast", chunk_rows=64)
    for repo in (stock, fast):
        apply_feature_repo(repo.feast)
    run_feast_cli(stock.feast, "materialize", START.strftime(ISO), END.strftime(ISO))
    completed = run_feast_cli(fast.feast, "materialize", START.strftime(ISO), END.strftime(ISO))

    assert "chunk 5/5" in completed.stderr  # our engine ran, in several chunks
    expected = expected_online(offline, start=START, end=END)
    ours = redis_hashes(second_project)
    assert ours == redis_hashes(feast_project)  # byte for byte, field order aside
    assert decode_redis(ours) == expected
    # Read back through Feast: every value and event time equal, users never online absent.
    users = sorted(offline["user_id"].unique().tolist())
    assert _online(fast, users) == _online(stock, users)
    view = _online(fast, users)["view"]
    for index, user in enumerate(users):
        if user in expected:
            event_time, values = expected[user]
            assert view["feature_1__ts"][index] == int(event_time.timestamp())  # epoch seconds
            assert {name: view[name][index] for name in FEATURES} == values
        else:
            assert view["feature_1"][index] is None


def test_known_cases_of_the_table(offline: pd.DataFrame, feature_repo: TestRepo) -> None:
    apply_feature_repo(feature_repo.feast)
    _materialize(feature_repo, START, END)
    online = decode_redis(redis_hashes(feature_repo.project))

    assert online[1][0] < END  # its row after END is ignored
    assert online[2][1] == {"feature_1": 2.0, "feature_2": 20.0}  # tie: later `created` wins
    assert 301 not in online and 302 not in online  # only rows older than START


def test_rerun_changes_nothing_and_rows_without_key_are_counted(
    tmp_path: Path, feature_repo: TestRepo
) -> None:
    frame = make_user_features(users=200)
    keyless = frame.iloc[[0]].assign(user_id=pd.NA, event_timestamp=END - timedelta(hours=1))
    table = pd.concat([frame, keyless], ignore_index=True).astype({"user_id": "Int64"})
    write_user_features(DataSettings().user_features_path, table)
    apply_feature_repo(feature_repo.feast)

    (first,) = _materialize(feature_repo, START, END)
    before = redis_hashes(feature_repo.project)
    (second,) = _materialize(feature_repo, START, END)

    assert redis_hashes(feature_repo.project) == before
    assert first.written == first.entities == len(before)
    assert second.written == 0 and second.skipped == len(before)
    assert first.rejected_rows == second.rejected_rows == 1


def test_older_values_never_replace_newer_ones(
    offline: pd.DataFrame, feature_repo: TestRepo
) -> None:
    apply_feature_repo(feature_repo.feast)
    older_start, older_end = START - timedelta(days=30), END - timedelta(days=10)

    _materialize(feature_repo, START, END)
    newer = redis_hashes(feature_repo.project)
    (older,) = _materialize(feature_repo, older_start, older_end)
    after = redis_hashes(feature_repo.project)

    assert {key: after[key] for key in newer} == newer
    added = set(after) - set(newer)
    assert older.written == len(added) > 0  # users whose only rows are older
    expected = expected_online(offline, start=older_start, end=END)
    assert decode_redis(after) == expected


def test_newer_values_replace_older_ones(offline: pd.DataFrame, feature_repo: TestRepo) -> None:
    apply_feature_repo(feature_repo.feast)
    middle = END - timedelta(days=10)

    _materialize(feature_repo, START, middle)
    (newer,) = _materialize(feature_repo, START, END)

    assert newer.written > 0
    assert decode_redis(redis_hashes(feature_repo.project)) == expected_online(
        offline, start=START, end=END
    )


def test_killed_run_resumes_to_the_same_state(
    offline: pd.DataFrame, feature_repo: TestRepo
) -> None:
    use_engine(feature_repo, "fast", chunk_rows=40, chunk_pause_seconds=0.5)
    apply_feature_repo(feature_repo.feast)
    command = [
        str(Path(sys.executable).with_name("feast")),
        "-f",
        str(feature_repo.feast.yaml_path),
        "materialize",
        START.strftime(ISO),
        END.strftime(ISO),
    ]
    process = subprocess.Popen(
        command,
        cwd=feature_repo.feast.repo_path,
        env=feast_cli_environment(feature_repo.feast),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 120
    for line in process.stderr:
        if "chunk 2/" in line or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()

    expected = expected_online(offline, start=START, end=END)
    partial = decode_redis(redis_hashes(feature_repo.project))
    assert 0 < len(partial) < len(expected)
    assert all(expected[user] == value for user, value in partial.items())
    store = open_feature_store(feature_repo.feast)
    assert store.get_feature_view(VIEW).most_recent_end_time is None  # no watermark yet

    use_engine(feature_repo, "fast", chunk_rows=40)
    (resumed,) = _materialize(feature_repo, START, END)

    assert decode_redis(redis_hashes(feature_repo.project)) == expected
    assert resumed.written == len(expected) - len(partial)
    store = open_feature_store(feature_repo.feast)
    assert store.get_feature_view(VIEW).most_recent_end_time == END


def test_key_ttl_is_set_on_every_written_key(offline: pd.DataFrame, feature_repo: TestRepo) -> None:
    set_key_ttl(feature_repo, 3600)
    apply_feature_repo(feature_repo.feast)
    _materialize(feature_repo, START, END)

    ttls = redis_ttls(feature_repo.project)
    assert len(ttls) == len(expected_online(offline, start=START, end=END))
    assert all(3500 < ttl <= 3600 for ttl in ttls.values())


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_redis_down_is_a_clear_error(offline: pd.DataFrame, feature_repo: TestRepo) -> None:
    apply_feature_repo(feature_repo.feast)
    port = _closed_port()
    environment = {
        **os.environ,
        "CHURN_FEAST_REPO_PATH": str(feature_repo.feast.repo_path),
        "CHURN_REDIS_URL": f"127.0.0.1:{port}",
    }
    completed = subprocess.run(
        [
            str(Path(sys.executable).with_name("churn")),
            "materialize",
            "--start",
            START.strftime(ISO),
            "--end",
            END.strftime(ISO),
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 1
    assert f"127.0.0.1:{port}" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_feast_writer_fallback_writes_the_same(
    offline: pd.DataFrame, feature_repo: TestRepo, second_project: str
) -> None:
    from feast.infra.online_stores.redis import RedisOnlineStore

    from materialize.engine.encoding import encode_chunk
    from materialize.engine.reader import EVENT_COLUMN, ParquetLatestReader, SourceColumns
    from materialize.engine.writers import FeastWriter, RedisWriter

    apply_feature_repo(feature_repo.feast)
    store = open_feature_store(feature_repo.feast)
    view = store.get_feature_view(VIEW)
    columns = SourceColumns(
        join_keys={"user_id": "user_id"},
        features={name: name for name in FEATURES},
        timestamp="event_timestamp",
        created="created",
    )
    reader = ParquetLatestReader(
        str(DataSettings().user_features_path), columns, start=START, end=END, chunk_rows=10**6
    )
    table = reader.read_chunk(0, 1)
    reader.close()
    chunk = encode_chunk(
        table,
        join_keys={"user_id": ValueType.INT64},
        features=dict.fromkeys(FEATURES, ValueType.DOUBLE),
        event_column=EVENT_COLUMN,
    )
    online_store = RedisOnlineStore()
    feast_writer = FeastWriter(
        online_store,
        store.config,
        view,
        source_timestamp="event_timestamp",
        source_created="created",
    )
    redis_writer = RedisWriter(
        online_store._get_client(store.config.online_store),
        project=second_project,
        view_name=VIEW,
        feature_names=FEATURES,
        ttl_seconds=None,
        batch_rows=100,
        pipeline_batches=2,
        label="test",
    )

    assert feast_writer.write(chunk) == redis_writer.write(chunk) == chunk.rows
    assert redis_hashes(feature_repo.project) == redis_hashes(second_project)
    assert decode_redis(redis_hashes(second_project)) == expected_online(
        offline, start=START, end=END
    )
