"""Soak benchmark: ``churn serve`` under steady load while the platform does its normal work.

In a temporary folder, on a redis-server of its own (a free port: the shared one is never
restarted), it prepares what ``bench.serve`` prepares (``churn generate``, ``ingest``,
``apply``, ``materialize``, ``churn train``), trains a second version (``churn train
--seed 7``), starts ``churn serve`` with default settings, measures its saturation (wrk, 32
connections) and then drives ``POST /predict`` for ``--minutes`` (10) at half of it with an
open-loop, constant-rate generator (``bench/open_loop.py``: latency from each request's due
time, so no coordinated omission). Meanwhile, in turn, as a user types them:

1. ``churn materialize --start <90 days ago>`` (12% in);
2. ``churn promote --version <the other>`` (25%), the first champion swap;
3. ``churn rollback`` (35%), the second;
4. the Redis server is shut down (``SHUTDOWN SAVE``) and started again (45%);
5. ``churn train --trials 6 --seed 11`` registers a challenger (55%; it takes minutes here).

Then it stops the service (SIGTERM: every buffered prediction is written) and reports:
prediction-log rows missing for a 200 answer; answers other than 200/404 outside the
Redis restart window (the restart until 5 s after Redis answers again); p99 outside the
restart against the quiet p99 (no event under way) and per phase; answers other than
200/404 during the materialization; the service's memory (RSS of its processes) in the
second minute against the last.

    .venv/bin/python -m bench.soak                 # 10 minutes of load
    .venv/bin/python -m bench.soak --minutes 3     # a shorter rehearsal (same timeline)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.open_loop import (
    OpenLoopRun,
    announce_saturation_run,
    percentile,
    run_open_loop,
    run_with_uvloop,
)

BIN = Path(sys.executable).parent
RESTART_GRACE_S = 5.0
MEMORY_SAMPLE_S = 2.0


@dataclass
class Timeline:
    """When each event ran, in seconds from the start of the load."""

    windows: dict[str, tuple[float, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def phase_of(self, second: float) -> str:
        """The event under way at ``second``, or "quiet"."""
        for name, (start, end) in self.windows.items():
            if start <= second <= end:
                return name
        return "quiet"


async def _churn(environment: dict[str, str], *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "churn"),
        *args,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(
            f"churn {' '.join(args)} exited {process.returncode}: {output[-2000:]!r}"
        )
    return output.decode(errors="replace")


async def run_events(
    *,
    duration_s: float,
    environment: dict[str, str],
    versions: tuple[str, str],
    redis: object,
    timeline: Timeline,
) -> None:
    """The platform's normal work, in turn, at fixed shares of the run."""
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def at(share: float) -> float:
        await asyncio.sleep(max(0.0, start + share * duration_s - loop.time()))
        return loop.time() - start

    async def timed(name: str, share: float, *args: str) -> None:
        began = await at(share)
        output = await _churn(environment, *args)
        timeline.windows[name] = (began, loop.time() - start)
        timeline.notes.append(f"{name}: churn {' '.join(args)} ({output.strip().splitlines()[-1]})")

    # The whole history again (not only what is new since the last run): every user's
    # hash goes through the newer-wins write while the service reads them.
    since = (datetime.now(UTC) - timedelta(days=90)).strftime("%Y-%m-%dT%H:%M:%S")
    await timed("materialize", 0.12, "materialize", "--start", since)
    # A swap is in the service within its poll interval (10 s): the window covers it.
    for name, share, args in (
        ("swap 1", 0.25, ("promote", "--version", versions[1])),
        ("swap 2", 0.35, ("rollback",)),
    ):
        await timed(name, share, *args)
        began, ended = timeline.windows[name]
        timeline.windows[name] = (began, ended + 12.0)
    began = await at(0.45)
    await asyncio.to_thread(redis.stop)  # type: ignore[attr-defined]
    await asyncio.to_thread(redis.start)  # type: ignore[attr-defined]
    timeline.windows["redis restart"] = (began, loop.time() - start + RESTART_GRACE_S)
    await timed("retrain", 0.55, "train", "--trials", "6", "--seed", "11", "--no-progress")


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the workers), MB."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(child) for child in children.read_text().split()]
    for one in pids:
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total / 1024


async def sample_memory(pid: int, duration_s: float, samples: list[tuple[float, float]]) -> None:
    """RSS of the service every couple of seconds until the end of the load."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < duration_s:
        samples.append((loop.time() - start, _tree_rss_mb(pid)))
        await asyncio.sleep(MEMORY_SAMPLE_S)


def logged_request_ids(folder: Path) -> set[str]:
    """Every request_id in the prediction log under ``folder``."""
    import pandas as pd

    ids: set[str] = set()
    for part in folder.rglob("*.parquet"):
        ids.update(pd.read_parquet(part, columns=["request_id"])["request_id"].astype(str))
    return ids


def report(
    run: OpenLoopRun,
    timeline: Timeline,
    memory: list[tuple[float, float]],
    logged: set[str],
    duration_s: float,
) -> int:
    """Print the figures and the goals; 0 when every goal is met."""
    by_phase: dict[str, list[float]] = {}
    bad_outside_restart = 0
    bad_in_materialize = 0
    statuses: dict[int, int] = {}
    for outcome in run.outcomes:
        phase = timeline.phase_of(outcome.due_s)
        by_phase.setdefault(phase, []).append(outcome.latency_s)
        statuses[outcome.status] = statuses.get(outcome.status, 0) + 1
        bad = outcome.status not in (200, 404)
        bad_outside_restart += bad and phase != "redis restart"
        bad_in_materialize += bad and phase == "materialize"
    answered = [o.request_id for o in run.outcomes if o.status == 200]
    lost = sum(1 for request_id in answered if request_id not in logged)
    outside = [o.latency_s for o in run.outcomes if timeline.phase_of(o.due_s) != "redis restart"]
    quiet_p99 = percentile(by_phase.get("quiet", []), 0.99) * 1000
    outside_p99 = percentile(outside, 0.99) * 1000
    counts = dict(sorted(statuses.items()))
    print(f"\n  {len(run.outcomes):,} requests at {run.rate:,.0f}/s; statuses {counts}")
    print(
        f"  generator lag at most {run.behind_s * 1000:.1f} ms; {run.shed} requests not sent "
        "(too many unanswered: counted as failed)"
    )
    for note in timeline.notes:
        print(f"  {note}")
    print(f"\n  {'phase':<14} {'window s':>14} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for phase, latencies in by_phase.items():
        window = timeline.windows.get(phase)
        shown = f"{window[0]:.0f}-{window[1]:.0f}" if window else ""
        p50, p99 = (percentile(latencies, share) * 1000 for share in (0.5, 0.99))
        print(f"  {phase:<14} {shown:>14} {len(latencies):>9,} {p50:>8.2f} {p99:>8.2f}")
    minute = 60.0 if duration_s >= 180 else duration_s / 5
    early = [mb for second, mb in memory if minute <= second < 2 * minute]
    late = [mb for second, mb in memory if second >= duration_s - minute]
    early_mb, late_mb = statistics.median(early), statistics.median(late)
    print(f"\n  memory: {early_mb:.0f} MB in minute 2, {late_mb:.0f} MB in the last minute")
    goals = [
        (f"{lost} of {len(answered):,} answered predictions missing from the log", lost == 0),
        (
            f"{bad_outside_restart} answers other than 200/404 outside the Redis restart",
            bad_outside_restart == 0,
        ),
        (f"{bad_in_materialize} read failures during the materialization", bad_in_materialize == 0),
        (
            f"p99 outside the restart {outside_p99:.2f} ms <= 2x the quiet p99 {quiet_p99:.2f} ms",
            outside_p99 <= 2 * quiet_p99,
        ),
        (
            f"memory {late_mb:.0f} MB in the last minute within 5% of {early_mb:.0f} MB "
            "in minute 2",
            abs(late_mb - early_mb) <= 0.05 * early_mb,
        ),
    ]
    print()
    for text, met in goals:
        print(f"  {'meets' if met else 'MISSES'}: {text}")
    return 0 if all(met for _, met in goals) else 1


async def soak(args: argparse.Namespace, folder: Path) -> int:
    """Prepare, start the service, measure saturation, drive it while the events run."""
    from bench.serve import _churn as churn_sync
    from bench.serve import (
        _free_port,
        _stop,
        prepare,
        request_bodies,
        run_wrk,
        scorable_users,
        start_churn,
        wait_until_ready,
    )
    from tests.utils.serving import ThrowawayRedis

    redis = ThrowawayRedis(folder / "redis")
    redis.start()
    process = None
    try:
        work = prepare(folder, redis_url=redis.url, trials=6, families=["hist_gradient_boosting"])
        champion = work.champions["hist_gradient_boosting"]
        environment = {**work.environment, "MLFLOW_TRACKING_URI": champion.tracking_uri}
        churn_sync(environment, "train", "--trials", "6", "--seed", "7", "--no-progress")
        versions = _champion_and_other(champion.tracking_uri)
        port = _free_port()
        log_dir = folder / "predictions" / "soak"
        process = start_churn(
            work, port, args.workers, champion, settings={"CHURN_PREDICTION_LOG_DIR": str(log_dir)}
        )
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url + "/ready", process, timeout=600)  # slow to start on a busy machine
        users = scorable_users(url)
        path, template = request_bodies(int(time.time()))["churn"]
        saturation = run_wrk(
            url,
            path,
            template,
            connections=32,
            seconds=args.saturation_seconds,
            users=users,
            folder=folder,
        )
        rate = args.rate or saturation.rps / 2
        print(
            f"  saturation {saturation.rps:,.0f} req/s (wrk, 32 connections): load at {rate:,.0f}/s"
        )
        duration_s = args.minutes * 60
        timeline = Timeline()
        memory: list[tuple[float, float]] = []
        bodies = [(template % user).encode() for user in users]
        load = asyncio.create_task(
            run_open_loop(
                "127.0.0.1",
                port,
                path,
                lambda i: bodies[i % len(bodies)],
                rate=rate,
                duration_s=duration_s,
            )
        )
        events = asyncio.create_task(
            run_events(
                duration_s=duration_s,
                environment=environment,
                versions=versions,
                redis=redis,
                timeline=timeline,
            )
        )
        sampler = asyncio.create_task(sample_memory(process.pid, duration_s, memory))
        run = await load
        await events
        await sampler
        _stop(process)
        process = None
        return report(run, timeline, memory, logged_request_ids(log_dir), duration_s)
    finally:
        if process is not None:
            _stop(process)
        redis.close()


def _champion_and_other(tracking_uri: str) -> tuple[str, str]:
    """The champion's version and the other of the two registered (the first swap's target)."""
    from core.models import ModelRegistry
    from core.settings import DEFAULT_MODEL_NAME

    current = ModelRegistry(tracking_uri).resolve(DEFAULT_MODEL_NAME, alias="champion").version
    return current, "1" if current == "2" else "2"


def main(argv: list[str] | None = None) -> int:
    """Run the soak in a temporary folder and remove it."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="duration of the load")
    parser.add_argument("--rate", type=float, help="requests/s (default: half the saturation)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="churn serve --workers"
    )
    parser.add_argument("--saturation-seconds", type=int, default=15)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if not announce_saturation_run("soak"):
        return 2
    folder = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    try:
        return run_with_uvloop(soak(args, folder))
    finally:
        if args.keep:
            print(f"  kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
