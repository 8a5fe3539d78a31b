"""FastEngine into Redis: same bytes as Feast's own engine, newer-wins, idempotent, resumable."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from feast.value_type import ValueType

from core.feast_adapter.store import redis_client as adapter_redis_client
from core.feast_store import feast_cli_environment, open_feature_store, run_feast_cli
from tests.utils.feast_layout import SwappedFieldLayout, WrongKeyLayout
from tests.utils.feast_repo import TestRepo
from tests.utils.materialize import (
    END,
    FEATURES,
    ISO,
    START,
    VIEW,
    AppliedRepo,
    applied_repo_fixture,
    decode_redis,
    expected_online,
    feast_fields,
    kill_at_stderr_line,
    make_user_features,
    materialize_range,
    online_values,
    redis_hashes,
    redis_ttls,
    set_key_ttl,
    use_engine,
    write_user_features,
)
from tests.utils.services import delete_project_keys, unique_name

applied = applied_repo_fixture()


@pytest.fixture
def repo(applied: AppliedRepo) -> TestRepo:
    """The applied repo, fresh: no online data, no materialization recorded."""
    return applied.fresh()


@pytest.fixture
def offline(applied: AppliedRepo) -> pd.DataFrame:
    """The offline user-features table the repo reads."""
    return applied.write_table(users=300)


@pytest.fixture
def second_project() -> Iterator[str]:
    """Another Feast project name; its Redis keys are deleted afterwards."""
    project = unique_name("churn_test")
    yield project
    delete_project_keys(project)


def test_feast_cli_runs_the_engine_and_writes_what_feast_writes(
    tmp_path: Path, repo: TestRepo, offline: pd.DataFrame
) -> None:
    stock_repo = AppliedRepo(tmp_path)
    try:
        stock = stock_repo.fresh()
        use_engine(stock, "stock")
        write_user_features(stock.data.user_features_path, offline)
        open_feature_store(stock.feast).materialize(START, END)  # Feast's local engine
        use_engine(repo, "fast", chunk_rows=64)
        completed = run_feast_cli(repo.feast, "materialize", START.strftime(ISO), END.strftime(ISO))

        assert "chunk 5/5" in completed.stderr  # our engine ran, in several chunks
        expected = expected_online(offline, start=START, end=END)
        ours = redis_hashes(repo.project)
        # Byte for byte, field order aside; ours also keeps the row's created time.
        assert feast_fields(ours) == redis_hashes(stock.project)
        assert all(f"_created:{VIEW}".encode() in fields for fields in ours.values())
        _assert_read_back_equal(repo, stock, offline, expected)
        assert decode_redis(ours) == expected
    finally:
        stock_repo.close()


def _assert_read_back_equal(
    fast: TestRepo, stock: TestRepo, offline: pd.DataFrame, expected: dict
) -> None:
    # Read back through Feast: every value and event time equal, users never online absent.
    users = sorted(offline["user_id"].unique().tolist())
    assert online_values(fast, users) == online_values(stock, users)
    view = online_values(fast, users)["view"]
    for index, user in enumerate(users):
        if user in expected:
            event_time, values = expected[user]
            assert view["feature_1__ts"][index] == int(event_time.timestamp())  # epoch seconds
            assert {name: view[name][index] for name in FEATURES} == values
        else:
            assert view["feature_1"][index] is None


def test_known_cases_of_the_table(offline: pd.DataFrame, repo: TestRepo) -> None:
    materialize_range(repo, START, END)
    online = decode_redis(redis_hashes(repo.project))

    assert online[1][0] < END  # its row after END is ignored
    assert online[2][1] == {"feature_1": 2.0, "feature_2": 20.0}  # tie: later `created` wins
    assert 301 not in online and 302 not in online  # only rows older than START


def test_rerun_changes_nothing_and_rows_without_key_are_counted(repo: TestRepo) -> None:
    frame = make_user_features(users=200)
    keyless = frame.iloc[[0]].assign(user_id=pd.NA, event_timestamp=END - timedelta(hours=1))
    table = pd.concat([frame, keyless], ignore_index=True).astype({"user_id": "Int64"})
    write_user_features(repo.data.user_features_path, table)

    (first,) = materialize_range(repo, START, END)
    before = redis_hashes(repo.project)
    (second,) = materialize_range(repo, START, END)

    assert redis_hashes(repo.project) == before
    assert first.written == first.entities == len(before)
    assert second.written == 0 and second.skipped == len(before)
    assert first.rejected_rows == second.rejected_rows == 1
    (empty,) = materialize_range(repo, START - timedelta(days=400), START - timedelta(days=300))
    assert (empty.entities, empty.written, empty.chunks) == (0, 0, 1)
    assert redis_hashes(repo.project) == before


def test_older_values_never_replace_newer_ones(offline: pd.DataFrame, repo: TestRepo) -> None:
    older_start, older_end = START - timedelta(days=30), END - timedelta(days=10)

    materialize_range(repo, START, END)
    newer = redis_hashes(repo.project)
    (older,) = materialize_range(repo, older_start, older_end)
    after = redis_hashes(repo.project)

    assert {key: after[key] for key in newer} == newer
    added = set(after) - set(newer)
    assert older.written == len(added) > 0  # users whose only rows are older
    expected = expected_online(offline, start=older_start, end=END)
    assert decode_redis(after) == expected


def test_newer_values_replace_older_ones(offline: pd.DataFrame, repo: TestRepo) -> None:
    middle = END - timedelta(days=10)

    materialize_range(repo, START, middle)
    (newer,) = materialize_range(repo, START, END)

    assert newer.written > 0
    assert decode_redis(redis_hashes(repo.project)) == expected_online(
        offline, start=START, end=END
    )


def test_killed_run_resumes_to_the_same_state(offline: pd.DataFrame, repo: TestRepo) -> None:
    use_engine(repo, "fast", chunk_rows=40, chunk_pause_seconds=0.5)
    command = [
        str(Path(sys.executable).with_name("feast")),
        "-f",
        str(repo.feast.yaml_path),
        "materialize",
        START.strftime(ISO),
        END.strftime(ISO),
    ]
    kill_at_stderr_line(
        command, "chunk 2/", env=feast_cli_environment(repo.feast), cwd=repo.feast.repo_path
    )

    expected = expected_online(offline, start=START, end=END)
    partial = decode_redis(redis_hashes(repo.project))
    assert 0 < len(partial) < len(expected)
    assert all(expected[user] == value for user, value in partial.items())
    store = open_feature_store(repo.feast)
    assert store.get_feature_view(VIEW).most_recent_end_time is None  # no watermark yet

    use_engine(repo, "fast", chunk_rows=40)
    (resumed,) = materialize_range(repo, START, END)

    assert decode_redis(redis_hashes(repo.project)) == expected
    assert resumed.written == len(expected) - len(partial)
    store = open_feature_store(repo.feast)
    assert store.get_feature_view(VIEW).most_recent_end_time == END


def test_key_ttl_is_set_on_every_written_key(offline: pd.DataFrame, repo: TestRepo) -> None:
    set_key_ttl(repo, 3600)
    materialize_range(repo, START, END)

    ttls = redis_ttls(repo.project)
    assert len(ttls) == len(expected_online(offline, start=START, end=END))
    assert all(3500 < ttl <= 3600 for ttl in ttls.values())


def test_the_shipped_profile_expires_keys_after_the_view_ttl(
    offline: pd.DataFrame, repo: TestRepo
) -> None:
    materialize_range(repo, START, END)

    ttls = redis_ttls(repo.project)
    view_ttl = int(timedelta(days=21).total_seconds())
    assert len(ttls) == len(expected_online(offline, start=START, end=END))
    assert all(view_ttl - 100 < ttl <= view_ttl for ttl in ttls.values())


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_redis_down_is_a_clear_error(offline: pd.DataFrame, repo: TestRepo) -> None:
    port = _closed_port()
    environment = {
        **os.environ,
        "CHURN_FEAST_REPO_PATH": str(repo.feast.repo_path),
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
    offline: pd.DataFrame, repo: TestRepo, second_project: str
) -> None:
    from feast.infra.online_stores.redis import RedisOnlineStore

    from core.compute.local.sampling import ParquetLatestReader
    from core.compute.sampling import EVENT_COLUMN, SourceColumns
    from materialize.engine.encoding import encode_chunk
    from materialize.engine.writers import FeastWriter, RedisWriter

    store = open_feature_store(repo.feast)
    view = store.get_feature_view(VIEW)
    columns = SourceColumns(
        join_keys={"user_id": "user_id"},
        features={name: name for name in FEATURES},
        timestamp="event_timestamp",
        created="created",
    )
    reader = ParquetLatestReader(
        str(repo.data.user_features_path), columns, start=START, end=END, chunk_rows=10**6
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
        adapter_redis_client(online_store, store.config.online_store),
        project=second_project,
        view_name=VIEW,
        feature_names=FEATURES,
        ttl_seconds=None,
        batch_rows=100,
        pipeline_batches=2,
        label="test",
    )

    assert feast_writer.write(chunk) == redis_writer.write(chunk) == chunk.rows
    assert redis_hashes(repo.project) == feast_fields(redis_hashes(second_project))
    assert decode_redis(redis_hashes(second_project)) == expected_online(
        offline, start=START, end=END
    )


def _engine(repo: TestRepo, **kwargs: Any) -> tuple[Any, Any]:
    """Our engine built by hand on the repo's store (as Feast would), and the store."""
    from feast.infra.offline_stores.offline_utils import get_offline_store_from_config

    from core.feast_adapter.store import online_store_of
    from materialize.engine import FastEngine

    store = open_feature_store(repo.feast)
    engine = FastEngine(
        repo_config=store.config,
        offline_store=get_offline_store_from_config(store.config.offline_store),
        online_store=online_store_of(store),
        **kwargs,
    )
    return engine, store


def test_the_engine_encoding_passes_the_self_check(repo: TestRepo) -> None:
    engine, store = _engine(repo)
    check = engine.self_check(store.get_feature_view(VIEW))

    assert check.ok, check.describe()
    assert check.skipped == ()  # every feature type of the view was compared


@pytest.mark.parametrize("layout", [SwappedFieldLayout(), WrongKeyLayout()], ids=type)
def test_a_layout_that_differs_from_feasts_sends_the_engine_to_feasts_own(
    repo: TestRepo, offline: pd.DataFrame, layout: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from feast.infra.common.materialization_job import MaterializationTask

    engine, store = _engine(repo, layout=layout)
    task = MaterializationTask(
        project=store.project,
        feature_view=store.get_feature_view(VIEW),
        start_time=START,
        end_time=END,
    )
    engine.materialize(store.registry, [task])

    assert [stats.engine for stats in engine.results] == ["feast-local"]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors and "differs from Feast's" in errors[0] and VIEW in errors[0]
    # Feast's engine wrote Feast's layout (no created-time field of ours), all values right.
    hashes = redis_hashes(repo.project)
    assert not any(f"_created:{VIEW}".encode() in fields for fields in hashes.values())
    assert decode_redis(hashes) == expected_online(offline, start=START, end=END)
