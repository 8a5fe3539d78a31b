"""`churn stream`: streamed activity windows, exact online and offline, delivered once.

Real Redis streams, real Feast (SDK online reads, point-in-time retrieval offline), the
worker as users run it (`churn stream` subprocesses).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from core.feast_store import feature_store_session
from materialize.stream.activity import publish_events
from materialize.stream.tiles import window_counts
from tests.utils.feast_repo import TestRepo
from tests.utils.materialize import AppliedRepo
from tests.utils.services import redis_client
from tests.utils.stream import (
    CHURN,
    NAMES,
    WINDOWS,
    activity,
    latest_offline,
    new_stream_key,
    online_tiles,
    replay,
    run_stream,
    stream_environment,
    stream_events,
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, redis_available: None) -> Iterator[TestRepo]:
    applied = AppliedRepo(tmp_path_factory.mktemp("stream"))
    yield applied.repo
    applied.close()


def _micros(when: datetime) -> int:
    return int(pd.Timestamp(when).value // 1000)


def _expected(frame: pd.DataFrame, user: int, when: datetime) -> dict[str, int]:
    times = frame.loc[frame["user_id"] == user, "event_time"]
    return window_counts([_micros(t) for t in times if t <= when], _micros(when))


def test_windows_are_exact_online_and_offline_at_every_request_time(repo: TestRepo) -> None:
    users = [101, 102, 103]
    frame = activity(users, per_user=40)
    quiet_user_end = frame.loc[frame["user_id"] == 103, "event_time"].iloc[10]
    frame = frame[(frame["user_id"] != 103) | (frame["event_time"] <= quiet_user_end)]
    key = new_stream_key()
    publish_events(redis_client(), frame, key=key)

    result = run_stream(stream_environment(repo, key), "--until-idle")

    assert result.returncode == 0, result.stderr
    assert f"{len(frame)} entries: {len(frame)} applied" in result.stdout
    last = frame["event_time"].max()
    online_times = [
        last + timedelta(seconds=30),
        last + timedelta(minutes=75),
        last + timedelta(hours=30),
        last + timedelta(days=8),
    ]
    with feature_store_session(repo.feast) as store:
        for when in online_times:
            got = store.get_online_features(
                features=WINDOWS,
                entity_rows=[{"user_id": user, "event_timestamp": when} for user in users],
            ).to_dict()
            for index, user in enumerate(users):
                # user 103 went quiet hours before the others: its counts fall without events
                assert {name: got[name][index] for name in NAMES} == _expected(frame, user, when)
        # Offline: point in time, between events and after the user went quiet.
        label_times = (
            [
                frame["event_time"].iloc[i] + timedelta(seconds=s)
                for i in range(0, len(frame), 7)
                for s in (0, 45, 61)
            ]
            + online_times
            + [quiet_user_end + timedelta(hours=2)]
        )
        entity = pd.DataFrame(
            [(user, when) for user in users for when in label_times],
            columns=["user_id", "event_timestamp"],
        )
        offline = store.get_historical_features(entity_df=entity, features=WINDOWS).to_df()
    assert len(offline) == len(entity)
    for row in offline.itertuples():
        assert {name: int(getattr(row, name)) for name in NAMES} == _expected(
            frame, row.user_id, row.event_timestamp
        ), (row.user_id, row.event_timestamp)
    assert online_tiles(repo, users) == {
        user: (state.minutes, state.counts) for user, state in replay(stream_events(key)).items()
    }


def test_malformed_and_late_events_are_reported_not_applied(repo: TestRepo) -> None:
    key = new_stream_key()
    client = redis_client()
    frame = activity([201], per_user=3)
    publish_events(client, frame, key=key)
    late = frame["event_time"].iloc[0] - timedelta(hours=1)
    client.xadd(
        key,
        {
            "event_id": "late-1",
            "user_id": "201",
            "event_type": "login",
            "event_time": late.isoformat(),
        },
    )
    client.xadd(
        key,
        {
            "event_id": "bad-1",
            "user_id": "x",
            "event_type": "login",
            "event_time": "2026-11-02T10:00:00Z",
        },
    )
    client.xadd(
        key,
        {"event_id": "bad-2", "user_id": "201", "event_type": "login", "event_time": "yesterday"},
    )
    client.xadd(key, {"user_id": "201", "event_type": "login", "event_time": "1700000000"})
    client.xadd(
        key,
        {
            "event_id": frame["event_id"].iloc[1],
            "user_id": "201",
            "event_type": "login",
            "event_time": frame["event_time"].iloc[1].isoformat(),
        },
    )

    result = run_stream(stream_environment(repo, key), "--until-idle")

    assert result.returncode == 0, result.stderr
    assert "8 entries: 3 applied, 1 duplicates, 1 late (dropped), 3 dead-lettered" in result.stdout
    assert "late event late-1 of user 201 dropped" in result.stderr
    letters = [fields for _, fields in client.xrange(f"{key}:dead")]
    assert [letter[b"reason"].decode() for letter in letters] == [
        "user_id 'x' is not an integer",
        "event_time 'yesterday' is not ISO 8601 or epoch seconds",
        "missing field event_id",
    ]
    assert online_tiles(repo, [201])[201][1] == [1, 1, 1]


def _entries_read(key: str) -> int:
    groups = redis_client().xinfo_groups(key)
    return int(groups[0]["entries-read"] or 0) if groups else 0


def test_kill_9_mid_batch_then_restart_equals_a_replay(repo: TestRepo) -> None:
    users = list(range(300, 340))
    frame = activity(users, per_user=60)
    key = new_stream_key()
    publish_events(redis_client(), frame, key=key)
    env = stream_environment(
        repo,
        key,
        CHURN_STREAM_BATCH_SIZE="40",
        CHURN_STREAM_FLUSH_INTERVAL_S="0.2",
        CHURN_STREAM_CONSUMER="w1",
    )
    worker = subprocess.Popen(
        [CHURN, "stream"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while _entries_read(key) < len(frame) // 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed_at = _entries_read(key)
    assert 0 < killed_at < len(frame)

    result = run_stream(env, "--until-idle")

    assert result.returncode == 0, result.stderr
    expected = {u: (s.minutes, s.counts) for u, s in replay(stream_events(key)).items()}
    assert online_tiles(repo, users) == expected
    assert latest_offline(repo, users) == expected
    assert redis_client().xpending(key, "workers")["pending"] == 0


def test_two_workers_in_one_group_share_the_stream_and_stop_on_sigterm(repo: TestRepo) -> None:
    users = list(range(400, 430))
    frame = activity(users, per_user=50)
    key = new_stream_key()
    client = redis_client()
    workers = [
        subprocess.Popen(
            [CHURN, "stream"],
            # The stream packs 13 hours of event time into one second: the lateness must
            # cover how far one worker's batch runs ahead of the other's in event time.
            env=stream_environment(
                repo,
                key,
                CHURN_STREAM_CONSUMER=name,
                CHURN_STREAM_BATCH_SIZE="25",
                CHURN_STREAM_ALLOWED_LATENESS_S="86400",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        groups = client.xinfo_groups(key) if client.exists(key) else []
        if groups and len(client.xinfo_consumers(key, "workers")) == 2:
            break
        time.sleep(0.1)
    publish_events(client, frame, key=key, rate=1500)
    while _entries_read(key) < len(frame) and time.monotonic() < deadline:
        time.sleep(0.1)
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    outputs = [worker.communicate(timeout=120) for worker in workers]

    assert [worker.returncode for worker in workers] == [0, 0], outputs
    read = [int(out.split(" entries")[0].splitlines()[-1]) for out, _ in outputs]
    assert sum(read) == len(frame) and min(read) > 0, read
    assert client.xpending(key, "workers")["pending"] == 0
    assert not any("late event" in err for _, err in outputs)
    events = stream_events(key)
    expected = {u: (s.minutes, s.counts) for u, s in replay(events, lateness_s=86400).items()}
    assert online_tiles(repo, users) == expected
    assert latest_offline(repo, users) == expected


def test_feast_push_into_the_same_push_source_agrees_with_the_worker(repo: TestRepo) -> None:
    from feast.data_source import PushMode

    frame = activity([501], per_user=12)
    key = new_stream_key()
    publish_events(redis_client(), frame, key=key)
    assert run_stream(stream_environment(repo, key), "--until-idle").returncode == 0
    [state] = replay(stream_events(key)).values()
    when = frame["event_time"].max() + timedelta(minutes=20)
    with feature_store_session(repo.feast) as store:
        pushed = pd.DataFrame(
            {
                "user_id": [502],
                "event_timestamp": [pd.Timestamp(state.stamp, unit="us", tz="UTC")],
                "tile_minutes": [state.minutes],
                "tile_counts": [state.counts],
            }
        )
        store.push("user_activity_push", pushed, to=PushMode.ONLINE)
        got = store.get_online_features(
            features=WINDOWS,
            entity_rows=[{"user_id": u, "event_timestamp": when} for u in (501, 502)],
        ).to_dict()
    assert [got[name][0] for name in NAMES] == [got[name][1] for name in NAMES]
    assert got["events_1h"][0] == _expected(frame, 501, when)["events_1h"]


def test_serving_reads_churn_v2_like_the_sdk(repo: TestRepo) -> None:
    import asyncio

    from serving.features.reader import OnlineFeatures

    frame = activity([601, 602], per_user=30)
    key = new_stream_key()
    publish_events(redis_client(), frame, key=key)
    assert run_stream(stream_environment(repo, key), "--until-idle").returncode == 0
    when = (frame["event_time"].max() + timedelta(minutes=42)).to_pydatetime()
    features = [*NAMES]
    with feature_store_session(repo.feast) as store:
        # churn_v2 reads user_features too: give the two users a snapshot online.
        store.write_to_online_store(
            "user_features",
            pd.DataFrame(
                {
                    "user_id": [601, 602],
                    "feature_1": [1.0, 2.0],
                    "feature_2": [3.0, 4.0],
                    "event_timestamp": [pd.Timestamp(when)] * 2,
                    "created": [pd.Timestamp(when)] * 2,
                }
            ),
        )
        reader = OnlineFeatures(store, timeout_s=5.0)
        plan = reader.resolve(service_name="churn_v2", features=features, project=None)
        assert plan.fast_path, plan.fast_path_gap
        rows = asyncio.run(_read_and_close(reader, plan, [601, 602], when))
        sdk = reader._read_sdk(plan, [601, 602], [when, when])
    for index, user in enumerate((601, 602)):
        expected = _expected(frame, user, when)
        assert list(rows.matrix[index]) == [float(expected[name]) for name in NAMES]
        assert list(sdk.matrix[index]) == list(rows.matrix[index])


def test_a_user_the_stream_never_saw_has_no_activity_online_as_offline(repo: TestRepo) -> None:
    """No activity is a fact, not a gap: zero counts and the 7-day cap, on every path.

    The user has a snapshot online but no user_activity row: the direct reader, the SDK
    and the point-in-time join all give 0, 0, 0 and 10080 minutes, as computed from no event.
    """
    import asyncio

    from serving.features.reader import OnlineFeatures

    user = 701
    when = datetime(2026, 11, 20, 12, 30, tzinfo=UTC)
    with feature_store_session(repo.feast) as store:
        store.write_to_online_store(
            "user_features",
            pd.DataFrame(
                {
                    "user_id": [user],
                    "feature_1": [1.0],
                    "feature_2": [2.0],
                    "event_timestamp": [pd.Timestamp(when) - timedelta(hours=1)],
                    "created": [pd.Timestamp(when) - timedelta(hours=1)],
                }
            ),
        )
        reader = OnlineFeatures(store, timeout_s=5.0)
        plan = reader.resolve(service_name="churn_v2", features=NAMES, project=None)
        assert plan.fast_path, plan.fast_path_gap
        rows = asyncio.run(_read_and_close(reader, plan, [user], when))
        sdk = reader._read_sdk(plan, [user], [when])
        offline = store.get_historical_features(
            entity_df=pd.DataFrame({"user_id": [user], "event_timestamp": [pd.Timestamp(when)]}),
            features=WINDOWS,
        ).to_df()
    expected = window_counts([], _micros(when))
    assert expected == {
        "events_1h": 0,
        "events_24h": 0,
        "events_7d": 0,
        "minutes_since_last_event": 7 * 24 * 60,
    }
    assert rows.problems == [None]
    assert list(rows.matrix[0]) == [float(expected[name]) for name in NAMES]
    assert sdk.problems == [None]
    assert list(sdk.matrix[0]) == list(rows.matrix[0])
    assert {name: int(offline[name].iloc[0]) for name in NAMES} == expected


async def _read_and_close(reader: Any, plan: Any, users: list[int], when: datetime) -> Any:
    try:
        return await reader.read(plan, users, [when] * len(users))
    finally:
        await reader.close()
