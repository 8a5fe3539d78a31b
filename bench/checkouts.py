"""Before and after: the user's commands on this checkout and on another, in one run.

    .venv/bin/python -m bench.checkouts --baseline ../churn-before        # 3 rounds
    .venv/bin/python -m bench.checkouts --baseline ../churn-before --users 50000 --rounds 5

A restructure must leave what users run unchanged or faster. For each checkout (this one,
``ours``, and ``--baseline``, any other checkout with its own ``.venv``), the set-up runs
once as a user types it, with that checkout's own ``churn``, in a private folder, Feast
project and Redis database: ``churn generate`` (same seed, so both get the same data),
``churn ingest --backfill``, ``churn apply``, ``churn train --trials 2``. Then each round
times, the checkouts in turn (the order rotated every round, so a drifting machine
favours neither):

- ``materialize``: ``churn materialize`` (every snapshot into Redis, our batch engine);
- ``drift``: ``churn drift --out DIR`` (the champion's windows, no retraining);
- ``score``: ``churn score --out FILE`` (every user, with reasons);
- ``serve``: ``churn serve`` (default settings) under ``hey -z 10s -c 8`` on ``POST
  /predict`` for random known users: requests/s, p50, p99.

It prints each figure's median and range per checkout and the ratio of the medians
(ours / baseline: below 1 is faster for times, above 1 is more for requests/s). ``hey``
comes from Debian's package of that name. Everything it made is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
TIMED = ("materialize", "drift", "score")


@dataclass
class Checkout:
    """One checkout under test, its private state and its figures."""

    name: str
    root: Path
    environment: dict[str, str] = field(default_factory=dict)
    figures: dict[str, list[float]] = field(default_factory=dict)

    @property
    def churn(self) -> str:
        return str(self.root / ".venv" / "bin" / "churn")

    def run(self, *args: str, timeout: float = 1800) -> str:
        """One ``churn`` command as a user types it; its output, or an error with it."""
        completed = subprocess.run(
            [self.churn, *args],
            cwd=self.root,
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if completed.returncode not in (0, 4):  # 4: drift found something, as expected
            raise RuntimeError(
                f"{self.name}: churn {' '.join(args)} exited {completed.returncode}:\n"
                f"{completed.stdout[-2000:]}{completed.stderr[-2000:]}"
            )
        return completed.stdout

    def add(self, figure: str, value: float) -> None:
        self.figures.setdefault(figure, []).append(value)


def prepare(checkout: Checkout, folder: Path, *, users: int, redis_db: int) -> None:
    """Private repo copy, data folder and registry; the set-up commands (not timed)."""
    project = f"bench_checkouts_{uuid.uuid4().hex[:8]}"
    repo = folder / "feature_repo"
    shutil.copytree(
        checkout.root / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__")
    )
    for yaml_file in repo.glob("feature_store*.yaml"):
        text = re.sub(r"^project: .*$", f"project: {project}", yaml_file.read_text(), flags=re.M)
        yaml_file.write_text(text)
    data_dir = folder / "data"
    checkout.environment = {
        **os.environ,
        "CHURN_DATA_DIR": str(data_dir),
        "CHURN_FEAST_REPO_PATH": str(repo),
        "CHURN_FEAST_PROFILE": "production",
        "CHURN_REDIS_URL": f"127.0.0.1:6379,db={redis_db}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    raw = data_dir / "raw" / "events.parquet"
    started = time.perf_counter()
    checkout.run(
        "generate", "--users", str(users), "--days", "60", "--seed", "7", "--out", str(raw)
    )
    checkout.run("ingest", "--backfill", str(raw))
    checkout.run("apply")
    checkout.run("materialize")
    checkout.run("train", "--trials", "2", "--no-progress")
    print(f"{checkout.name}: set-up {time.perf_counter() - started:.0f} s ({checkout.root})")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the service at {url} did not become ready in {seconds:.0f} s")


def measure_serving(checkout: Checkout, *, users: int, seconds: int, connections: int) -> None:
    """``churn serve`` with its defaults under ``hey``: requests/s, p50 and p99 (ms)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [checkout.churn, "serve", "--port", str(port), "--log-level", "warning"],
        cwd=checkout.root,
        env=checkout.environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_ready(url, 120)
        body = json.dumps({"user_id": max(1, users // 2)})
        completed = subprocess.run(
            ["hey", "-z", f"{seconds}s", "-c", str(connections), "-m", "POST",
             "-T", "application/json", "-d", body, f"{url}/predict"],
            capture_output=True, text=True, timeout=seconds + 60, check=True,
        )  # fmt: skip
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    out = completed.stdout
    codes = re.findall(r"\[(\d{3})\]\s+\d+ responses", out)
    if codes != ["200"]:  # every answer a prediction, or the figures mean nothing
        raise RuntimeError(f"{checkout.name}: answers other than 200 under load:\n{out}")
    checkout.add("serve rps", _figure(r"Requests/sec:\s+([\d.]+)", out))
    checkout.add("serve p50 ms", _figure(r"50% in ([\d.]+) secs", out) * 1000)
    checkout.add("serve p99 ms", _figure(r"99% in ([\d.]+) secs", out) * 1000)


def _figure(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    if found is None:
        raise RuntimeError(f"no {pattern!r} in hey's output:\n{text}")
    return float(found.group(1))


def run_round(checkout: Checkout, folder: Path, *, users: int, seconds: int) -> None:
    """One round of every timed command on one checkout."""
    commands = {
        "materialize": ["materialize"],
        "drift": ["drift", "--out", str(folder / "drift"), "--no-retrain"],
        "score": ["score", "--out", str(folder / "scores.parquet")],
    }
    for figure in TIMED:
        started = time.perf_counter()
        checkout.run(*commands[figure])
        checkout.add(f"{figure} s", time.perf_counter() - started)
    measure_serving(checkout, users=users, seconds=seconds, connections=8)


def report(checkouts: list[Checkout]) -> None:
    """Median and range of each figure per checkout, and ours / baseline of the medians."""
    ours, baseline = checkouts
    print(
        f"\n{'figure':<14} {'ours median (range)':>28} {'baseline median (range)':>28} {'ratio':>7}"
    )
    for figure in ours.figures:
        cells = []
        for checkout in (ours, baseline):
            values = checkout.figures[figure]
            cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
        ratio = statistics.median(ours.figures[figure]) / statistics.median(
            baseline.figures[figure]
        )
        print(f"{figure:<14} {cells[0]:>28} {cells[1]:>28} {ratio:>7.3f}")


def main() -> None:
    """Set both checkouts up, run the rounds, print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", type=Path, required=True, help="the other checkout")
    parser.add_argument("--users", type=int, default=20_000, help="churn generate --users")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="length of each load run")
    parser.add_argument("--redis-dbs", type=int, nargs=2, default=[11, 12])
    args = parser.parse_args()
    if shutil.which("hey") is None:
        parser.error("hey is needed for the serving figures (apt-get install hey)")
    baseline = args.baseline.resolve()
    if not (baseline / ".venv" / "bin" / "churn").is_file():
        parser.error(f"{baseline} has no .venv/bin/churn: run `make install` there first")
    checkouts = [Checkout("ours", ROOT), Checkout("baseline", baseline)]
    with tempfile.TemporaryDirectory(prefix="bench-checkouts-") as temporary:
        folders = [Path(temporary) / checkout.name for checkout in checkouts]
        for checkout, folder, db in zip(checkouts, folders, args.redis_dbs, strict=True):
            prepare(checkout, folder, users=args.users, redis_db=db)
        for index in range(args.rounds):
            order = list(zip(checkouts, folders, strict=True))
            for checkout, folder in order[index % 2 :] + order[: index % 2]:
                run_round(checkout, folder, users=args.users, seconds=args.seconds)
            print(f"round {index + 1} of {args.rounds} done")
        report(checkouts)
        for db in args.redis_dbs:  # the private projects' online rows
            redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()


if __name__ == "__main__":
    main()
