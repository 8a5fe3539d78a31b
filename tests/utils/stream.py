"""Factories of the stream tests: events, the stream, running `churn stream`, replays."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from core.settings import PROJECT_ROOT
from materialize.stream.tiles import Event, UserState, apply_events, parse_event
from tests.utils.feast_repo import TestRepo
from tests.utils.services import REDIS_HOST, REDIS_PORT, redis_client, unique_name

CHURN = str(Path(sys.executable).parent / "churn")
BASE = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
# The streamed features, as Feast references them and by name.
WINDOWS = [
    "activity_windows:events_1h",
    "activity_windows:events_24h",
    "activity_windows:events_7d",
    "activity_windows:minutes_since_last_event",
]
NAMES = [name.split(":")[1] for name in WINDOWS]


def activity(users: Sequence[int], *, per_user: int, start: datetime = BASE) -> pd.DataFrame:
    """``per_user`` events per user, 7 to 23 minutes apart, in event-time order."""
    rows = []
    for user in users:
        when = start + timedelta(seconds=user * 7)
        for index in range(per_user):
            when += timedelta(minutes=7 + (user * 5 + index * 3) % 17, seconds=index % 50)
            rows.append((f"u{user}-e{index}", user, "page_view", when))
    frame = pd.DataFrame(rows, columns=["event_id", "user_id", "event_type", "event_time"])
    return frame.sort_values("event_time", kind="stable", ignore_index=True)


def stream_environment(repo: TestRepo, key: str, **extra: str) -> dict[str, str]:
    """Environment pointing `churn stream` at the repo and at its own stream keys."""
    return {
        **os.environ,
        "CHURN_FEAST_REPO_PATH": str(repo.feast.repo_path),
        "CHURN_DATA_DIR": str(repo.data.data_dir),
        "CHURN_REDIS_URL": f"{REDIS_HOST}:{REDIS_PORT}",
        "CHURN_STREAM_KEY": key,
        "CHURN_STREAM_DEAD_LETTER_KEY": f"{key}:dead",
        "CHURN_STREAM_GROUP": "workers",
        **extra,
    }


def new_stream_key() -> str:
    """A stream key no other test uses."""
    return unique_name("churn:test-events")


def run_stream(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`churn stream ARGS` to completion."""
    return subprocess.run(
        [CHURN, "stream", *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def stream_events(key: str) -> list[Event]:
    """Every valid event of the stream, in stream order."""
    events = []
    for _, fields in redis_client().xrange(key):
        try:
            events.append(parse_event(fields))
        except ValueError:
            continue
    return events


def replay(events: Sequence[Event], *, lateness_s: float = 300.0) -> dict[int, UserState]:
    """The states a replay of the whole stream from scratch gives, per user."""
    states: dict[int, UserState] = {}
    for event in events:
        state = states.setdefault(event.user_id, UserState())
        apply_events(state, [event], lateness_micros=round(lateness_s * 1_000_000))
    return states


def offline_rows(repo: TestRepo, users: Sequence[int]) -> pd.DataFrame:
    """The users' rows in the activity batch directory, newest last per user."""
    directory = repo.data.data_dir / "offline" / "user_activity"
    frame = pq.read_table(directory).to_pandas()
    frame = frame[frame["user_id"].isin(list(users))]
    return frame.sort_values(["user_id", "event_timestamp"], ignore_index=True)


def latest_offline(repo: TestRepo, users: Sequence[int]) -> dict[int, tuple[list[int], list[int]]]:
    """Per user, the tiles of the newest offline row."""
    frame = offline_rows(repo, users).groupby("user_id").tail(1)
    return {
        int(row.user_id): ([int(v) for v in row.tile_minutes], [int(v) for v in row.tile_counts])
        for row in frame.itertuples()
    }


def online_tiles(repo: TestRepo, users: Sequence[int]) -> dict[int, tuple[list[int], list[int]]]:
    """Per user, the tiles stored online, read through Feast's SDK."""
    from core.feast_store import feature_store_session

    with feature_store_session(repo.feast) as store:
        values = store.get_online_features(
            features=["user_activity:tile_minutes", "user_activity:tile_counts"],
            entity_rows=[{"user_id": user} for user in users],
        ).to_dict()
    return {
        user: (list(minutes or []), list(counts or []))
        for user, minutes, counts in zip(
            users, values["tile_minutes"], values["tile_counts"], strict=True
        )
    }


__all__ = ["PROJECT_ROOT"]
