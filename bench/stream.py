"""Benchmark: ``churn stream`` at a sustained event rate, against Feast's ``store.push``.

One run:

1. copies ``feature_repo/`` with its own project and data folder and applies it;
2. **sustained**: starts ``churn stream`` (default settings, as users type it), publishes
   ``--rate`` events/s for ``--seconds`` seconds of live events (event time = now) for
   ``--users`` users (raw pipelined ``XADD``, one pipeline every 10 ms), and reports the
   publisher's achieved rate, whether the worker kept up (its backlog when publishing
   stopped) and the event-to-online latency of every event (event time to the commit of
   its batch, as the worker measured it);
3. **capacity**, steady state: the same aggregates, written by the worker from a
   pre-loaded stream (``churn stream --until-idle``; its rate between 10% and 90% of the
   stream read, so start-up is left out) and by Feast's ``store.push`` in micro-batches of
   ``--push-batch`` state rows (the way a Feast user writes a stream's aggregates; its rate
   after the first micro-batch), into the same push source of a second project;
4. **parity**: online (Feast's SDK), offline (the newest Parquet row per user) and a replay
   of the whole stream from scratch, compared per user.

    .venv/bin/python -m bench.stream --rate 20000 --seconds 60 --rounds 3

Run it as a module from the checkout root. Redis keys of the runs are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHURN = str(Path(sys.executable).parent / "churn")


def _repo(root: Path, project: str) -> Any:
    from core.settings import FeastSettings

    repo = root / "feature_repo"
    shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    for yaml_file in repo.glob("feature_store*.yaml"):
        text = re.sub(r"^project: .*$", f"project: {project}", yaml_file.read_text(), flags=re.M)
        yaml_file.write_text(text)
    (root / "data").mkdir(exist_ok=True)
    return FeastSettings(repo_path=repo, profile="production")


def _env(feast: Any, root: Path, key: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "CHURN_FEAST_REPO_PATH": str(feast.repo_path),
        "CHURN_DATA_DIR": str(root / "data"),
        "CHURN_STREAM_KEY": key,
        "CHURN_STREAM_DEAD_LETTER_KEY": f"{key}:dead",
        **extra,
    }


def _xadd_template(key: str) -> bytes:
    """RESP of ``XADD key * event_id %s user_id %s event_type page_view event_time %s``."""
    head = [b"XADD", key.encode(), b"*", b"event_id"]
    packed = b"*11\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in head)
    value = b"$%d\r\n%s\r\n"
    middle = b"$7\r\nuser_id\r\n"
    tail = b"$10\r\nevent_type\r\n$9\r\npage_view\r\n$10\r\nevent_time\r\n"
    return packed + value + middle + value + tail + value


def _send(connection: Any, template: bytes, events: list[tuple[bytes, bytes, bytes]]) -> None:
    """One raw pipeline of XADDs: the commands packed once, then every reply read."""
    connection.send_packed_command(
        [b"".join([template % (len(i), i, len(u), u, len(t), t) for i, u, t in events])],
        check_health=False,
    )
    for _ in events:
        connection.read_response()


def _publish_live(client: Any, key: str, *, rate: int, seconds: float, users: int) -> int:
    """XADD live events (event time = now) at ``rate``/s; return how many were sent."""
    import random

    template = _xadd_template(key)
    connection = client.connection_pool.get_connection()
    sent = 0
    started = time.monotonic()
    rng = random.Random(7)
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            due = min(int((elapsed + 0.01) * rate), int(seconds * rate))  # 10 ms ahead
            now = b"%.6f" % time.time()
            events = [(b"e%d" % n, b"%d" % rng.randint(1, users), now) for n in range(sent, due)]
            if events:
                _send(connection, template, events)
                sent = due
            pause = started + sent / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    finally:
        client.connection_pool.release(connection)
    return sent


def _preload(client: Any, key: str, *, events: int, users: int) -> None:
    """XADD ``events`` events one millisecond of event time apart, as fast as possible."""
    template = _xadd_template(key)
    connection = client.connection_pool.get_connection()
    start = time.time()
    try:
        for begin in range(0, events, 5000):
            _send(
                connection,
                template,
                [
                    (b"p%d" % i, b"%d" % ((i * 7919) % users + 1), b"%.3f" % (start + i / 1000))
                    for i in range(begin, min(begin + 5000, events))
                ],
            )
    finally:
        client.connection_pool.release(connection)


def _figures(stdout: str) -> dict[str, float]:
    numbers = re.search(r"^(\d+) entries: (\d+) applied", stdout, flags=re.M)
    rows = re.search(r"(\d+) offline rows", stdout)
    busy = re.search(r"([\d,]+) entries/s from the first entry read", stdout)
    lags = {
        name: re.search(
            rf"{name} to online \(every event\): p50 ([\d.]+) ms, "
            r"p99 ([\d.]+) ms, max ([\d.]+) ms",
            stdout,
        )
        for name in ("arrival", "event time")
    }
    assert numbers and rows and busy and all(lags.values()), stdout
    event, arrival = lags["event time"], lags["arrival"]
    assert event and arrival
    return {
        "entries": float(numbers.group(1)),
        "rows": float(rows.group(1)),
        "busy_rate": float(busy.group(1).replace(",", "")),
        "p50": float(event.group(1)),
        "p99": float(event.group(2)),
        "max": float(event.group(3)),
        "arrival_p99": float(arrival.group(2)),
    }


def _entries_read(client: Any, key: str) -> int:
    groups = client.xinfo_groups(key) if client.exists(key) else []
    return int(groups[0]["entries-read"] or 0) if groups else 0


def _steady_rate(samples: list[tuple[float, int]], total: int) -> float:
    """Entries/s between 10% and 90% of ``total`` read, from (time, entries read) samples."""
    low = next(s for s in samples if s[1] >= 0.1 * total)
    high = next(s for s in samples if s[1] >= 0.9 * total)
    return (high[1] - low[1]) / max(high[0] - low[0], 1e-9)


def _parity(feast: Any, root: Path, key: str, client: Any) -> tuple[int, int, int]:
    """Users compared, online/offline mismatches, online/replay mismatches."""
    import pyarrow.parquet as pq

    from core.feast_store import feature_store_session
    from materialize.stream.tiles import UserState, apply_events, parse_event

    states: dict[int, UserState] = {}
    for _, fields in client.xrange(key):
        event = parse_event(fields)
        apply_events(
            states.setdefault(event.user_id, UserState()), [event], lateness_micros=300_000_000
        )
    offline = pq.read_table(root / "data" / "offline" / "user_activity").to_pandas()
    offline = offline.sort_values(["user_id", "event_timestamp"]).groupby("user_id").tail(1)
    latest = {
        int(r.user_id): (list(r.tile_minutes), list(r.tile_counts)) for r in offline.itertuples()
    }
    users = sorted(states)
    with feature_store_session(feast) as store:
        online: dict[int, tuple[list[int], list[int]]] = {}
        for begin in range(0, len(users), 5000):
            part = users[begin : begin + 5000]
            values = store.get_online_features(
                features=["user_activity:tile_minutes", "user_activity:tile_counts"],
                entity_rows=[{"user_id": u} for u in part],
            ).to_dict()
            for user, minutes, counts in zip(
                part, values["tile_minutes"], values["tile_counts"], strict=True
            ):
                online[user] = (list(minutes or []), list(counts or []))
    replayed = {u: (s.minutes, s.counts) for u, s in states.items()}
    offline_bad = sum(1 for u in users if online[u] != latest.get(u))
    replay_bad = sum(1 for u in users if online[u] != replayed[u])
    return len(users), offline_bad, replay_bad


def _feast_push(feast: Any, root: Path, *, batch: int, rows: int) -> tuple[int, float]:
    """Push the first ``rows`` of our offline state rows through store.push in micro-batches:
    rows and seconds after the first micro-batch (Feast's start-up left out, as for ours)."""
    import pyarrow.parquet as pq
    from feast.data_source import PushMode

    from core.feast_store import feature_store_session

    frame = pq.read_table(root / "data" / "offline" / "user_activity").to_pandas()
    frame = frame.sort_values("event_timestamp", kind="stable", ignore_index=True).head(rows)
    with feature_store_session(feast) as store:
        store.push("user_activity_push", frame.iloc[:batch], to=PushMode.ONLINE)
        started = time.perf_counter()
        for begin in range(batch, len(frame), batch):
            store.push("user_activity_push", frame.iloc[begin : begin + batch], to=PushMode.ONLINE)
        return len(frame) - batch, time.perf_counter() - started


def run_round(args: argparse.Namespace, client: Any) -> dict[str, float]:
    """One round: sustained, capacity (ours and Feast's), parity."""
    from materialize.apply import apply_feature_repo

    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    ours, theirs = f"bench_stream_{uuid.uuid4().hex[:8]}", f"bench_push_{uuid.uuid4().hex[:8]}"
    key = f"bench:events:{ours}"
    try:
        feast = _repo(work / "ours", ours)
        os.environ["CHURN_DATA_DIR"] = str(work / "ours" / "data")
        apply_feature_repo(feast)
        worker = subprocess.Popen(
            [CHURN, "stream"],
            env=_env(feast, work / "ours", key),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        while not client.exists(key) or not client.xinfo_consumers(key, "churn-stream"):
            time.sleep(0.1)
        started = time.monotonic()
        sent = _publish_live(client, key, rate=args.rate, seconds=args.seconds, users=args.users)
        publish_s = time.monotonic() - started
        published_at = time.monotonic()
        backlog = sent - _entries_read(client, key)
        while _entries_read(client, key) < sent:
            time.sleep(0.01)
        drain = time.monotonic() - published_at
        worker.terminate()
        sustained = _figures(worker.communicate(timeout=120)[0])
        users, offline_bad, replay_bad = _parity(feast, work / "ours", key, client)

        # Capacity: a pre-loaded stream drained by one worker, its steady rate.
        key2 = f"{key}:preloaded"
        _preload(client, key2, events=args.capacity_events, users=args.users)
        feast2 = _repo(work / "ours2", f"{ours}c")
        os.environ["CHURN_DATA_DIR"] = str(work / "ours2" / "data")
        apply_feature_repo(feast2)
        drained = subprocess.Popen(
            [CHURN, "stream", "--until-idle"],
            env=_env(feast2, work / "ours2", key2),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        samples = []
        while drained.poll() is None:
            samples.append((time.monotonic(), _entries_read(client, key2)))
            time.sleep(0.05)
        samples.append((time.monotonic(), _entries_read(client, key2)))
        assert drained.returncode == 0
        capacity = _figures(drained.communicate()[0])
        ours_events_s = _steady_rate(samples, args.capacity_events)

        feast3 = _repo(work / "theirs", theirs)
        os.environ["CHURN_DATA_DIR"] = str(work / "theirs" / "data")
        apply_feature_repo(feast3)
        shutil.rmtree(work / "theirs" / "data" / "offline" / "user_activity")
        shutil.copytree(
            work / "ours2" / "data" / "offline" / "user_activity",
            work / "theirs" / "data" / "offline" / "user_activity",
        )
        pushed_rows, push_seconds = _feast_push(
            feast3, work / "theirs", batch=args.push_batch, rows=args.push_rows
        )
        ours_rows_s = ours_events_s * capacity["rows"] / capacity["entries"]
        return {
            "sent": sent,
            "publisher_rate": sent / publish_s,
            "backlog_at_end": backlog,
            "kept_up": float(backlog <= args.rate * 0.1),  # at most 100 ms of events behind
            "drain_s": drain,
            "event_to_online_p50_ms": sustained["p50"],
            "event_to_online_p99_ms": sustained["p99"],
            "event_to_online_max_ms": sustained["max"],
            "arrival_to_online_p99_ms": sustained["arrival_p99"],
            "users": users,
            "offline_mismatch": offline_bad,
            "replay_mismatch": replay_bad,
            "ours_events_s": ours_events_s,
            "ours_busy_events_s": capacity["busy_rate"],
            "ours_rows_s": ours_rows_s,
            "feast_rows_s": pushed_rows / push_seconds,
        }
    finally:
        for name in (key, f"{key}:preloaded", f"{key}:dead", f"{key}:preloaded:dead"):
            client.delete(name)
        for project in (ours, f"{ours}c", theirs):
            for name in client.scan_iter(match=f"*{project}", count=10_000):
                client.delete(name)
        for name in client.scan_iter(match=f"{key}*"):
            client.delete(name)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    """Run the rounds and print each, then the median and spread."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--capacity-events", type=int, default=300_000)
    parser.add_argument("--push-batch", type=int, default=500)
    parser.add_argument("--push-rows", type=int, default=30_000, help="rows Feast pushes")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from redis import Redis

    client = Redis(host="127.0.0.1", port=6379)
    results = []
    for number in range(args.rounds):
        result = run_round(args, client)
        results.append(result)
        print(f"round {number + 1}: " + ", ".join(f"{k} {v:,.1f}" for k, v in result.items()))
        sys.stdout.flush()
    print("median (min-max) over rounds:")
    for name in results[0]:
        values = [r[name] for r in results]
        print(f"  {name}: {statistics.median(values):,.1f} ({min(values):,.1f}-{max(values):,.1f})")
    ratio = [r["ours_rows_s"] / r["feast_rows_s"] for r in results]
    print(f"  ours / Feast store.push rows/s: {statistics.median(ratio):.1f}x")


if __name__ == "__main__":
    main()
