"""Synthetic user activity for ``churn generate --events``, and publishing it to the stream.

Each user has an activity rate (log-normal, tied to the same usage level that drives the
raw snapshots) with a day/night cycle. Before every snapshot labelled churned, the user's
activity fades over two days to a tenth, so the streamed windows carry churn signal of
their own. Draws are seeded per user and hour, so one seed always gives the same events.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from redis import Redis

from materialize.generate import generate_raw_events, to_utc

EVENT_TYPES = np.array(["login", "page_view", "payment", "payment_failed", "support_contact"])
_NORMAL_MIX = np.array([0.35, 0.5, 0.1, 0.02, 0.03])
_FADING_MIX = np.array([0.3, 0.3, 0.05, 0.15, 0.2])
_FADE_HOURS = 48
_FADE_FLOOR = 0.1


def generate_activity(
    *, users: int, days: int, end: pd.Timestamp | str, seed: int, rate_per_hour: float = 0.3
) -> pd.DataFrame:
    """Activity events of users 1..users in ``[end - days, end)``, sorted by event time.

    Args:
        users: Number of users (the ids of ``churn generate``).
        days: Days of activity before ``end``.
        end: Exclusive end (a date means its 00:00 UTC).
        seed: Seed of every draw (the snapshot labels come from the same seed).
        rate_per_hour: Mean events per user and hour before the day/night cycle.

    Returns:
        Columns ``event_id``, ``user_id``, ``event_type``, ``event_time`` (UTC).
    """
    end_ts = to_utc(end)
    start_ts = end_ts - pd.Timedelta(days=days)
    snapshots = generate_raw_events(users=users, days=days, end=end_ts, seed=seed)
    hours = days * 24
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,)))
    level = rng.lognormal(0.0, 0.7, size=users) * rate_per_hour
    hour_of_day = (np.arange(hours) + start_ts.hour) % 24
    cycle = 0.35 + 0.65 * np.exp(-(((hour_of_day - 14) / 5.0) ** 2)) * 1.8
    rate = level[:, None] * cycle[None, :]
    fade = np.ones((users, hours))
    churned = snapshots[snapshots["label"] == 1]
    label_hour = ((churned["event_date"] - start_ts) / pd.Timedelta(hours=1)).astype(int).to_numpy()
    for user, at in zip(churned["user_id"].to_numpy() - 1, label_hour, strict=True):
        begin = max(at - _FADE_HOURS, 0)
        span = np.arange(begin, at)
        factor = np.maximum(_FADE_FLOOR, 1 - (span - (at - _FADE_HOURS) + 1) / _FADE_HOURS)
        fade[user, span] = np.minimum(fade[user, span], factor)
    rate = rate * fade
    counts = rng.poisson(rate)
    user_index, hour_index = np.nonzero(counts)
    repeats = counts[user_index, hour_index]
    user_ids = np.repeat(user_index + 1, repeats)
    hour_of_event = np.repeat(hour_index, repeats)
    offsets = rng.integers(0, 3_600_000_000, size=len(user_ids))  # microseconds in the hour
    fading = np.repeat(fade[user_index, hour_index] < 0.99, repeats)
    draws = rng.random(len(user_ids))
    normal_type = np.searchsorted(np.cumsum(_NORMAL_MIX), draws)
    fading_type = np.searchsorted(np.cumsum(_FADING_MIX), draws)
    types = EVENT_TYPES[np.minimum(np.where(fading, fading_type, normal_type), 4)]
    micros = start_ts.value // 1000 + hour_of_event * 3_600_000_000 + offsets
    frame = pd.DataFrame(
        {
            "user_id": user_ids.astype(np.int64),
            "event_type": types,
            "event_time": pd.to_datetime(micros, unit="us", utc=True),
        }
    )
    frame = frame.sort_values(["event_time", "user_id"], kind="stable", ignore_index=True)
    frame.insert(0, "event_id", [f"s{seed}-{i}" for i in range(len(frame))])
    return frame


@dataclass(frozen=True)
class Published:
    """What :func:`publish_events` sent."""

    events: int
    seconds: float


def publish_events(
    client: Redis,
    frame: pd.DataFrame,
    *,
    key: str,
    rate: float = 0.0,
    chunk: int = 200,
    clock: Callable[[], float] = time.monotonic,
) -> Published:
    """XADD the events to the stream in order, at ``rate`` events/s (0: as fast as possible).

    ``event_time`` is sent as ISO 8601.
    """
    ids = frame["event_id"].astype(str).tolist()
    users = frame["user_id"].astype(str).tolist()
    types = frame["event_type"].astype(str).tolist()
    times = [stamp.isoformat() for stamp in pd.to_datetime(frame["event_time"], utc=True)]
    started = clock()
    for begin in range(0, len(ids), chunk):
        if rate > 0:
            due = started + begin / rate
            delay = due - clock()
            if delay > 0:
                time.sleep(delay)
        pipe = client.pipeline(transaction=False)
        for index in range(begin, min(begin + chunk, len(ids))):
            pipe.xadd(
                key,
                {
                    "event_id": ids[index],
                    "user_id": users[index],
                    "event_type": types[index],
                    "event_time": times[index],
                },
            )
        pipe.execute()
    return Published(events=len(ids), seconds=clock() - started)


def write_activity(frame: pd.DataFrame, path: Path) -> Path:
    """Write the events as Parquet (microsecond times)."""
    from materialize.offline_tables import write_parquet_atomically

    write_parquet_atomically(frame, path)
    return path


@dataclass(frozen=True)
class EventsRequest:
    """What ``churn generate --events`` is asked to write and publish.

    Attributes:
        users: Number of users.
        days: Days of activity before ``end``.
        end: Exclusive end of the window.
        seed: Seed (the same as the raw snapshots').
        rate_per_hour: Mean events per user and hour.
        out: Parquet file of the events.
        publish: XADD the events to the stream.
        publish_rate: Events per second when publishing (0: as fast as possible).
        redis_url: Feast form connection string of the stream's Redis.
        stream_key: The stream.
    """

    users: int
    days: int
    end: pd.Timestamp
    seed: int
    out: Path
    rate_per_hour: float = 0.3
    publish: bool = False
    publish_rate: float = 0.0
    redis_url: str = "127.0.0.1:6379"
    stream_key: str = "churn:events"


@dataclass(frozen=True)
class EventsOutcome:
    """What was written and published."""

    path: Path
    events: int
    published: Published | None


def run_generate_events(request: EventsRequest) -> EventsOutcome:
    """``churn generate --events``: write the activity events, publish them if asked."""
    from core.feast_adapter.store import parse_redis_connection

    frame = generate_activity(
        users=request.users,
        days=request.days,
        end=request.end,
        seed=request.seed,
        rate_per_hour=request.rate_per_hour,
    )
    write_activity(frame, request.out)
    published = None
    if request.publish:
        nodes, params = parse_redis_connection(request.redis_url)
        params.update(host=nodes[0]["host"], port=int(nodes[0]["port"]))
        with Redis(**params) as client:
            published = publish_events(
                client, frame, key=request.stream_key, rate=request.publish_rate
            )
    return EventsOutcome(path=request.out, events=len(frame), published=published)
