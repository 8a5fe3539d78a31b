"""Benchmark: ``/predict`` latency at half saturation, beside ``feast serve`` at its own.

A closed-loop client (wrk) measures throughput but hides a stall (a stalled server lowers the
rate it is offered: coordinated omission). This benchmark measures latency the way an SLO
sees it: each server's saturation first (wrk, 32 connections, ``--saturation-seconds``), then
``--seconds`` of a constant-rate, open-loop load at half of it (``bench/open_loop.py``: each
request's latency counted from the time it was due).

It prepares what ``bench.serve`` prepares (``churn generate``, ``ingest``, ``apply``,
``materialize`` into Redis under a private project, ``churn train --trials 6``: the default
family's champion, exactly as ``churn train`` registers it), then, ``--rounds`` times in
turn:

- ``churn serve`` with default settings (``--workers`` as the command's default: one per
  core) answering ``POST /predict``;
- ``feast serve`` (tuned: no access log, no worker recycling; the same number of workers)
  answering ``POST /get-online-features`` for ``churn_v1``.

It prints each round's saturation, rate, p50/p99/p99.9 and failures, the medians and ranges,
the generator's own share (p99 of the lag from a request's due time to its send, counted in
the latency: the generator's timer ticks in milliseconds), and the goal: ``churn serve``'s
p99 at half saturation at most 3 ms.

    .venv/bin/python -m bench.half_saturation                # 3 rounds of 60 s each
    .venv/bin/python -m bench.half_saturation --seconds 20 --rounds 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.open_loop import announce_saturation_run, percentile, run_open_loop, run_with_uvloop
from bench.serve import (
    Workspace,
    _delete_project_keys,
    _free_port,
    _stop,
    prepare,
    request_bodies,
    run_wrk,
    scorable_users,
    start_churn,
    start_feast,
    wait_until_ready,
)

GOAL_P99_MS = 3.0
FAMILY = "hist_gradient_boosting"


@dataclass(frozen=True)
class HalfLoad:
    """One server's round: its saturation and the open-loop run at half of it."""

    target: str
    saturation_rps: float
    rate: float
    requests: int
    failed: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    send_lag_p99_ms: float


def measure_target(
    work: Workspace,
    kind: str,
    *,
    workers: int,
    users: list[int],
    seconds: int,
    saturation_seconds: int,
) -> tuple[HalfLoad, list[int]]:
    """Start one server, find its saturation, drive it at half; the round and the users."""
    port = _free_port()
    champion = work.champions[FAMILY]
    if kind == "churn":
        process = start_churn(work, port, workers, champion)
        ready, target = "/ready", f"churn serve ({workers} workers)"
    else:
        process = start_feast(work, port, workers)
        ready, target = "/health", f"feast serve ({workers} workers)"
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url + ready, process)
        if kind == "churn" and not users:
            users = scorable_users(url)
        path, template = request_bodies(int(time.time()))[kind]
        options = {"users": users, "folder": work.folder}
        run_wrk(url, path, template, connections=32, seconds=2, **options)  # warm-up
        saturation = run_wrk(
            url, path, template, connections=32, seconds=saturation_seconds, **options
        )
        rate = saturation.rps / 2
        bodies = [(template % user).encode() for user in users]
        run = run_with_uvloop(
            run_open_loop(
                "127.0.0.1",
                port,
                path,
                lambda i: bodies[i % len(bodies)],
                rate=rate,
                duration_s=seconds,
            )
        )
    finally:
        _stop(process)
    latencies = [outcome.latency_s * 1000 for outcome in run.outcomes]
    failed = sum(1 for outcome in run.outcomes if outcome.status != 200)
    result = HalfLoad(
        target,
        saturation.rps,
        rate,
        len(run.outcomes),
        failed,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        percentile(latencies, 0.999),
        percentile([outcome.send_lag_s * 1000 for outcome in run.outcomes], 0.99),
    )
    return result, users


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.2f} ({min(values):,.2f}-{max(values):,.2f})"


def report(results: list[HalfLoad]) -> int:
    """Print every round, the medians, the goal; 0 when it is met."""
    print(
        f"\n  {'target':<26} {'saturation/s':>12} {'rate/s':>8} {'requests':>9} "
        f"{'failed':>6} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'send lag p99':>12}"
    )
    for r in results:
        print(
            f"  {r.target:<26} {r.saturation_rps:>12,.0f} {r.rate:>8,.0f} {r.requests:>9,} "
            f"{r.failed:>6} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.p999_ms:>9.2f} "
            f"{r.send_lag_p99_ms:>12.2f}"
        )
    print()
    medians: dict[str, float] = {}
    for target in dict.fromkeys(r.target for r in results):
        rounds = [r for r in results if r.target == target]
        medians[target] = statistics.median(r.p99_ms for r in rounds)
        print(
            f"  {target}: saturation {_spread([r.saturation_rps for r in rounds])} req/s, "
            f"p50 {_spread([r.p50_ms for r in rounds])} ms, "
            f"p99 {_spread([r.p99_ms for r in rounds])} ms, "
            f"failed {sum(r.failed for r in rounds)}"
        )
    ours = next(value for target, value in medians.items() if target.startswith("churn"))
    met = ours <= GOAL_P99_MS
    print(
        f"\n  {'meets' if met else 'MISSES'}: churn serve's median p99 at half saturation "
        f"{ours:.2f} ms <= {GOAL_P99_MS:.0f} ms"
    )
    return 0 if met else 1


def main(argv: list[str] | None = None) -> int:
    """Prepare, then alternate the two servers for each round; clean up."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=60, help="open-loop run per server")
    parser.add_argument("--saturation-seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="workers of both servers"
    )
    parser.add_argument("--trials", type=int, default=6, help="churn train --trials")
    parser.add_argument("--redis-url", default=os.environ.get("CHURN_REDIS_URL", "127.0.0.1:6379"))
    args = parser.parse_args(argv)
    if not announce_saturation_run("half-saturation"):
        return 2
    folder = Path(tempfile.mkdtemp(prefix="bench-half-"))
    work: Workspace | None = None
    try:
        work = prepare(folder, redis_url=args.redis_url, trials=args.trials, families=[FAMILY])
        users: list[int] = []
        results = []
        for round_number in range(1, args.rounds + 1):
            for kind in ("churn", "feast"):
                result, users = measure_target(
                    work,
                    kind,
                    workers=args.workers,
                    users=users,
                    seconds=args.seconds,
                    saturation_seconds=args.saturation_seconds,
                )
                results.append(result)
                print(
                    f"  round {round_number}, {result.target}: saturation "
                    f"{result.saturation_rps:,.0f}/s, at {result.rate:,.0f}/s p99 "
                    f"{result.p99_ms:.2f} ms, {result.failed} failed"
                )
        return report(results)
    finally:
        if work is not None:
            _delete_project_keys(args.redis_url, work.project)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
