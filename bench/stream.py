"""Benchmark: ``churn stream`` at a sustained event rate, against Feast's ``store.push``.

One run:

1. copies ``feature_repo/`` with its own project and data folder and applies it;
2. **sustained**: starts ``churn stream`` (default settings, as users type it), publishes
   ``--rate`` events/s for ``--seconds`` seconds of live events (event time = now) for
   ``--users`` users, and reports whether the worker kept up and its arrival-to-online
   latency (the oldest entry of each batch, so an upper bound per event);
3. **capacity**: the same aggregates, written by the worker from a pre-loaded stream
   (``churn stream --until-idle``) and by Feast's ``store.push`` in micro-batches of
   ``--push-batch`` state rows (the way a Feast user writes a stream's aggregates), into
   the same push source of a second project; rows/s of each;
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


def _publish_live(client: Any, key: str, *, rate: int, seconds: float, users: int) -> int:
    """XADD live events (event time = now) at ``rate``/s; return how many were sent."""
    import random

    chunk = max(rate // 100, 1)  # one pipeline every 10 ms
    sent = 0
    started = time.monotonic()
    rng = random.Random(7)
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate) + chunk
        pipe = client.pipeline(transaction=False)
        now = f"{time.time():.6f}"
        for _ in range(due - sent):
            pipe.xadd(
                key,
                {
                    "event_id": f"e{sent}",
                    "user_id": rng.randint(1, users),
                    "event_type": "page_view",
                    "event_time": now,
                },
            )
            sent += 1
        pipe.execute()
        pause = started + sent / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    return sent


def _figures(stdout: str) -> dict[str, float]:
    numbers = re.search(r"^(\d+) entries: (\d+) applied", stdout, flags=re.M)
    rows = re.search(r"(\d+) offline rows", stdout)
    lag = re.search(r"p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms", stdout)
    assert numbers and rows and lag, stdout
    return {
        "entries": float(numbers.group(1)),
        "rows": float(rows.group(1)),
        "p50": float(lag.group(1)),
        "p99": float(lag.group(2)),
        "max": float(lag.group(3)),
    }


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


def _feast_push(feast: Any, root: Path, *, batch: int) -> tuple[int, float]:
    """Push our offline state rows through store.push in micro-batches; rows, seconds."""
    import pyarrow.parquet as pq
    from feast.data_source import PushMode

    from core.feast_store import feature_store_session

    frame = pq.read_table(root / "data" / "offline" / "user_activity").to_pandas()
    frame = frame.sort_values("event_timestamp", kind="stable", ignore_index=True)
    with feature_store_session(feast) as store:
        started = time.perf_counter()
        for begin in range(0, len(frame), batch):
            store.push("user_activity_push", frame.iloc[begin : begin + batch], to=PushMode.ONLINE)
        return len(frame), time.perf_counter() - started


def run_round(args: argparse.Namespace, client: Any) -> dict[str, float]:
    """One round: sustained, capacity (ours and Feast's), parity."""
    from materialize.apply import apply_feature_repo
    from materialize.stream.activity import publish_events

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
        sent = _publish_live(client, key, rate=args.rate, seconds=args.seconds, users=args.users)
        published_at = time.monotonic()
        backlog = sent - int(client.xinfo_groups(key)[0]["entries-read"] or 0)
        while int(client.xinfo_groups(key)[0]["entries-read"] or 0) < sent:
            time.sleep(0.01)
        drain = time.monotonic() - published_at
        worker.terminate()
        sustained = _figures(worker.communicate(timeout=120)[0])
        users, offline_bad, replay_bad = _parity(feast, work / "ours", key, client)

        # Capacity: a pre-loaded stream drained by one worker.
        import pandas as pd

        key2 = f"{key}:preloaded"
        frame = pd.DataFrame(
            {
                "event_id": [f"p{i}" for i in range(args.capacity_events)],
                "user_id": [(i * 7919) % args.users + 1 for i in range(args.capacity_events)],
                "event_type": "page_view",
                "event_time": pd.Timestamp.now(tz="UTC")
                + pd.to_timedelta(range(args.capacity_events), unit="ms"),
            }
        )
        publish_events(client, frame, key=key2, chunk=2000)
        feast2 = _repo(work / "ours2", f"{ours}c")
        os.environ["CHURN_DATA_DIR"] = str(work / "ours2" / "data")
        apply_feature_repo(feast2)
        started = time.perf_counter()
        drained = subprocess.run(
            [CHURN, "stream", "--until-idle"],
            env=_env(feast2, work / "ours2", key2),
            capture_output=True,
            text=True,
            check=True,
        )
        ours_seconds = time.perf_counter() - started
        capacity = _figures(drained.stdout)

        feast3 = _repo(work / "theirs", theirs)
        os.environ["CHURN_DATA_DIR"] = str(work / "theirs" / "data")
        apply_feature_repo(feast3)
        shutil.rmtree(work / "theirs" / "data" / "offline" / "user_activity")
        shutil.copytree(
            work / "ours2" / "data" / "offline" / "user_activity",
            work / "theirs" / "data" / "offline" / "user_activity",
        )
        pushed_rows, push_seconds = _feast_push(feast3, work / "theirs", batch=args.push_batch)
        return {
            "sent": sent,
            "rate": sent / args.seconds,
            "backlog_at_end": backlog,
            "drain_s": drain,
            "p50_ms": sustained["p50"],
            "p99_ms": sustained["p99"],
            "max_ms": sustained["max"],
            "users": users,
            "offline_mismatch": offline_bad,
            "replay_mismatch": replay_bad,
            "ours_events_s": capacity["entries"] / ours_seconds,
            "ours_rows_s": capacity["rows"] / ours_seconds,
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
