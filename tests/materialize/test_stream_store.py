"""The stream worker's commits and offline parts, in process against real Redis and Feast.

Crashes are exceptions raised at the step named (the process-level ``kill -9`` is in
test_stream.py): what a restarted worker leaves must equal a replay, each offline row once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from core.feast_store import feature_store_session
from materialize.stream import worker as worker_module
from materialize.stream.activity import publish_events
from materialize.stream.settings import StreamSettings
from materialize.stream.store import StateStore
from materialize.stream.target import resolve_target
from materialize.stream.tiles import UserState, apply_events
from materialize.stream.worker import StreamWorker
from tests.utils.feast_repo import TestRepo
from tests.utils.materialize import AppliedRepo
from tests.utils.services import redis_client
from tests.utils.stream import (
    activity,
    latest_offline,
    new_stream_key,
    offline_rows,
    online_tiles,
    replay,
    stream_events,
)


class Crash(Exception):
    """The worker dies here."""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, redis_available: None) -> Iterator[TestRepo]:
    applied = AppliedRepo(tmp_path_factory.mktemp("stream-store"))
    yield applied.repo
    applied.close()


def _worker(repo: TestRepo, key: str) -> StreamWorker:
    settings = StreamSettings(
        key=key, dead_letter_key=f"{key}:dead", group="workers", consumer="w1", batch_size=50
    )
    return StreamWorker(
        resolve_target(repo.feast, settings.push_source), settings, client=redis_client()
    )


def _published(users: list[int]) -> tuple[str, pd.DataFrame]:
    frame = activity(users, per_user=20)  # events minutes apart: one offline row each
    key = new_stream_key()
    publish_events(redis_client(), frame, key=key)
    return key, frame


def _assert_replayed_once(repo: TestRepo, key: str, users: list[int], events: int) -> None:
    expected = {u: (s.minutes, s.counts) for u, s in replay(stream_events(key)).items()}
    rows = offline_rows(repo, users)
    assert len(rows) == events
    assert not rows.duplicated(["user_id", "event_timestamp"]).any()
    assert latest_offline(repo, users) == expected
    assert online_tiles(repo, users) == expected
    assert redis_client().xpending(key, "workers")["pending"] == 0
    store = _worker(repo, key).store
    assert store.open_claims() == {} and store.outbox_names() == []


def test_a_crash_after_the_part_is_written_leaves_each_row_once(
    repo: TestRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = list(range(700, 710))
    key, frame = _published(users)

    def crash(self: StateStore, part: str) -> None:
        raise Crash(part)

    with monkeypatch.context() as patch:
        patch.setattr(StateStore, "release", crash)
        with pytest.raises(Crash):
            _worker(repo, key).run(until_idle=True)
    [part] = _worker(repo, key).store.open_claims()
    assert (
        resolve_target(repo.feast, "user_activity_push").offline_dir / f"{part}.parquet"
    ).exists()

    _worker(repo, key).run(until_idle=True)

    _assert_replayed_once(repo, key, users, len(frame))


def test_a_crash_between_the_claim_and_the_part_writes_the_part_at_restart(
    repo: TestRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = list(range(720, 730))
    key, frame = _published(users)
    real = worker_module.write_part

    def crash(directory: Path, name: str, table: Any) -> None:
        if "schema" in name:
            real(directory, name, table)
        else:
            raise Crash(name)

    with monkeypatch.context() as patch:
        patch.setattr(worker_module, "write_part", crash)
        with pytest.raises(Crash):
            _worker(repo, key).run(until_idle=True)
    assert _worker(repo, key).store.open_claims()
    assert offline_rows(repo, users).empty

    _worker(repo, key).run(until_idle=True)

    _assert_replayed_once(repo, key, users, len(frame))


def test_a_user_written_by_feast_between_read_and_commit_is_recomputed(
    repo: TestRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feast.data_source import PushMode

    user = 740
    key, frame = _published([user])
    first = frame["event_time"].min() - pd.Timedelta(hours=2)
    pushed = UserState(minutes=[first.value // 60_000_000_000], counts=[3])
    real_read = StateStore.read
    calls = []

    def read_then_push(self: StateStore, keys: Any) -> Any:
        stored = real_read(self, keys)
        if not calls:  # another writer commits between this read and the batch's commit
            with feature_store_session(repo.feast) as store:
                row = {
                    "user_id": [user],
                    "event_timestamp": [first],
                    "tile_minutes": [pushed.minutes],
                    "tile_counts": [pushed.counts],
                }
                store.push("user_activity_push", pd.DataFrame(row), to=PushMode.ONLINE)
        calls.append(keys)
        return stored

    worker = _worker(repo, key)
    with monkeypatch.context() as patch:
        patch.setattr(StateStore, "read", read_then_push)
        outcome = worker.run(until_idle=True)

    assert outcome.retries == 1
    expected = UserState.restore(pushed.minutes, pushed.counts, first.value // 1000, None)
    apply_events(expected, stream_events(key), lateness_micros=300_000_000)
    assert online_tiles(repo, [user]) == {user: (expected.minutes, expected.counts)}
    assert latest_offline(repo, [user]) == {user: (expected.minutes, expected.counts)}


def test_a_cached_user_written_by_feast_since_is_read_again(repo: TestRepo) -> None:
    from feast.data_source import PushMode

    user = 760
    key, frame = _published([user])
    entries = redis_client().xrange(key)
    worker = _worker(repo, key)
    worker.process(entries[:10])  # the worker now holds the user's state
    newest = frame["event_time"].iloc[9]
    pushed = UserState(minutes=[newest.value // 60_000_000_000 - 5], counts=[4])
    with feature_store_session(repo.feast) as store:
        row = {
            "user_id": [user],
            "event_timestamp": [newest + pd.Timedelta(seconds=1)],
            "tile_minutes": [pushed.minutes],
            "tile_counts": [pushed.counts],
        }
        store.push("user_activity_push", pd.DataFrame(row), to=PushMode.ONLINE)

    worker.process(entries[10:])

    assert worker.outcome.retries == 1
    pushed_at = (newest + pd.Timedelta(seconds=1)).value // 1000
    expected = UserState.restore(pushed.minutes, pushed.counts, pushed_at, None)
    apply_events(expected, stream_events(key)[10:], lateness_micros=300_000_000)
    assert online_tiles(repo, [user]) == {user: (expected.minutes, expected.counts)}
