"""Feast's own writers into the `user_activity_push` push source, beside `churn stream`.

A real `feast serve` (on a free loopback port, the repo's production profile) takes a
state row on `/push`, the SDK takes one through `store.push`; both must read back, through
the SDK and through `feast serve`'s `/get-online-features`, exactly what the worker wrote
for a user with the same events. The offline push is pinned as far as it works with the
DuckDB offline store (docs/known-limits.md).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest

from core.feast_store import feast_cli_environment, feature_store_session
from materialize.stream.activity import publish_events
from materialize.stream.tiles import UserState, window_counts
from tests.utils.feast_repo import TestRepo
from tests.utils.materialize import AppliedRepo
from tests.utils.services import redis_client
from tests.utils.serving import free_port
from tests.utils.stream import (
    NAMES,
    WINDOWS,
    activity,
    new_stream_key,
    online_tiles,
    replay,
    run_stream,
    stream_environment,
    stream_events,
)

WORKER, VIA_HTTP, VIA_SDK = 801, 802, 803


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, redis_available: None) -> Iterator[TestRepo]:
    applied = AppliedRepo(tmp_path_factory.mktemp("stream-push"))
    yield applied.repo
    applied.close()


@pytest.fixture(scope="module")
def feast_server(repo: TestRepo) -> Iterator[str]:
    """`feast serve` on the repo (its registry, its Redis), as a Feast user starts it."""
    port = free_port()
    feast = str(Path(sys.executable).with_name("feast"))
    process = subprocess.Popen(
        [feast, "-f", str(repo.feast.yaml_path), "serve", "-h", "127.0.0.1", "-p", str(port)],
        cwd=repo.feast.repo_path,
        env=feast_cli_environment(repo.feast),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"feast serve exited: {process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError("feast serve did not answer /health")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def _streamed_state(repo: TestRepo, frame: pd.DataFrame) -> UserState:
    key = new_stream_key()
    publish_events(redis_client(), frame, key=key)
    result = run_stream(stream_environment(repo, key), "--until-idle")
    assert result.returncode == 0, result.stderr
    [state] = replay(stream_events(key)).values()
    redis_client().delete(key, f"{key}:dead")
    return state


def _state_row(user: int, state: UserState) -> pd.DataFrame:
    """The worker's row of a state, in the batch source's column order."""
    return pd.DataFrame(
        {
            "user_id": [user],
            "event_timestamp": [pd.Timestamp(state.stamp, unit="us", tz="UTC")],
            "tile_minutes": [state.minutes],
            "tile_counts": [state.counts],
        }
    )


def test_push_through_feast_serve_and_the_sdk_reads_what_the_worker_wrote(
    repo: TestRepo, feast_server: str
) -> None:
    from feast.data_source import PushMode

    frame = activity([WORKER], per_user=25)
    state = _streamed_state(repo, frame)
    stamp = pd.Timestamp(state.stamp, unit="us", tz="UTC")

    pushed = httpx.post(
        f"{feast_server}/push",
        json={
            "push_source_name": "user_activity_push",
            "df": {
                "user_id": [VIA_HTTP],
                "event_timestamp": [stamp.isoformat()],
                "tile_minutes": [state.minutes],
                "tile_counts": [state.counts],
            },
            "to": "online",
        },
        timeout=60,
    )
    assert pushed.status_code == 200, pushed.text
    with feature_store_session(repo.feast) as store:
        store.push("user_activity_push", _state_row(VIA_SDK, state), to=PushMode.ONLINE)

    users = [WORKER, VIA_HTTP, VIA_SDK]
    tiles = online_tiles(repo, users)
    assert tiles[VIA_HTTP] == tiles[VIA_SDK] == tiles[WORKER] == (state.minutes, state.counts)

    # The windows at several request times, through the SDK and through feast serve.
    last = frame["event_time"].max()
    for when in (
        last + timedelta(seconds=30),
        last + timedelta(minutes=90),
        last + timedelta(days=2),
    ):
        micros = [int(t.value // 1000) for t in frame["event_time"]]
        expected = window_counts(micros, int(when.value // 1000))
        with feature_store_session(repo.feast) as store:
            sdk = store.get_online_features(
                features=WINDOWS,
                entity_rows=[{"user_id": user, "event_timestamp": when} for user in users],
            ).to_dict()
        served = httpx.post(
            f"{feast_server}/get-online-features",
            json={
                "features": WINDOWS,
                "entities": {"user_id": users, "event_timestamp": [int(when.timestamp())] * 3},
            },
            timeout=60,
        )
        assert served.status_code == 200, served.text
        answer = served.json()
        names = answer["metadata"]["feature_names"]
        http_values = {
            name: result["values"] for name, result in zip(names, answer["results"], strict=True)
        }
        for name in NAMES:
            assert sdk[name] == [expected[name]] * 3, (name, when)
            assert http_values[name] == [expected[name]] * 3, (name, when)


def test_an_offline_push_into_the_part_directory_fails_and_leaves_it_intact(
    repo: TestRepo,
) -> None:
    """Pinned (docs/known-limits.md): Feast's DuckDB offline store appends by reading the
    source's path, concatenating and writing the whole table back to that same path, as one
    file; the path is the worker's part directory, so DuckDB refuses the write. Nothing is
    written offline; with online_and_offline the online write has already happened."""
    import duckdb
    from feast.data_source import PushMode

    directory = repo.data.data_dir / "offline" / "user_activity"
    before = {path.name: path.read_bytes() for path in directory.glob("*.parquet")}
    state = UserState(minutes=[29_000_000], counts=[3], stamp=29_000_000 * 60_000_000 + 1)
    refused = rf'Cannot open file "{directory}": File exists'
    with feature_store_session(repo.feast) as store:
        with pytest.raises(duckdb.IOException, match=refused):
            store.push("user_activity_push", _state_row(804, state), to=PushMode.OFFLINE)
        with pytest.raises(duckdb.IOException, match=refused):
            store.push("user_activity_push", _state_row(805, state), to=PushMode.ONLINE_AND_OFFLINE)
    assert {path.name: path.read_bytes() for path in directory.glob("*.parquet")} == before
    assert not {804, 805} & set(pq.read_table(directory).column("user_id").to_pylist())
    assert online_tiles(repo, [804, 805]) == {804: ([], []), 805: (state.minutes, state.counts)}
