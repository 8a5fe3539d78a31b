"""Benchmark: ``churn serve`` (features + model) against ``feast serve`` (features only).

Builds a private Feast project on the local Redis (``--users`` users materialized with
Feast), registers a production-sized GradientBoostingClassifier as champion in a private
MLflow registry, then starts both servers on loopback with one worker each:

- ``feast serve --no-access-log --max-requests 0 --workers 1`` answering
  ``POST /get-online-features`` for the ``churn_v1`` feature service;
- ``churn serve`` answering ``POST /predict`` (the same lookup, plus the model).

Both are driven with the same bounded load, one client connection and then eight, by
``wrk`` when it is installed (``apt-get install wrk``) or else by an async httpx client
(which costs far more CPU on the shared cores: its figures are pessimistic). Prints p50,
p99 and requests/s of each and the throughput ratio, against the goals: single client
p50 <= 2 ms; with 8 connections >= 2x feast serve's throughput and p99 <= 10 ms.

    .venv/bin/python bench/serve.py                 # 10 s per run, 10,000 users
    .venv/bin/python bench/serve.py --seconds 30 --client httpx

Everything it creates (temp folder, Redis keys of its project) is removed at the end.
The load generator shares the machine's cores with both servers and Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__":
    # Run as a script, this folder heads sys.path and bench/materialize.py would shadow the
    # `materialize` package; the checkout root gives access to the test factories.
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]
    sys.path.insert(0, str(ROOT))

BIN = Path(sys.executable).parent
GOAL_P50_MS = 2.0
GOAL_RATIO = 2.0
GOAL_P99_MS = 10.0


@dataclass(frozen=True)
class Workspace:
    """What both servers serve: one Feast project and one registry."""

    folder: Path
    project: str
    feast: Any  # FeastSettings
    tracking_uri: str
    users: int


@dataclass(frozen=True)
class Result:
    """One load run."""

    target: str
    connections: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float


def prepare(folder: Path, *, users: int, redis_url: str, trees: int, depth: int) -> Workspace:
    """Feature repo copy, user table, feast apply, Feast materialize, champion model."""
    import numpy as np
    import pandas as pd

    from materialize.apply import apply_feature_repo
    from materialize.settings import FeastSettings
    from materialize.store import open_feature_store
    from tests.utils.serving import fit_model, register_model, tracking_uri_in

    project = f"bench_serve_{uuid.uuid4().hex[:8]}"
    repo = folder / "feature_repo"
    shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    for yaml_file in repo.glob("feature_store*.yaml"):
        text = re.sub(r"^project: .*$", f"project: {project}", yaml_file.read_text(), flags=re.M)
        yaml_file.write_text(text)
    data_dir = folder / "data"
    os.environ["CHURN_DATA_DIR"] = str(data_dir)  # read by the repo's sources at apply
    now = datetime.now(UTC)
    rng = np.random.default_rng(0)
    stamps = pd.Timestamp(now) - pd.to_timedelta(rng.integers(60, 5 * 86_400, users), unit="s")
    table = pd.DataFrame(
        {
            "user_id": np.arange(1, users + 1, dtype="int64"),
            "event_timestamp": stamps,
            "created": stamps,
            "feature_1": rng.gamma(2.0, 3.0, users),
            "feature_2": rng.normal(0.0, 2.0, users),
        }
    )
    (data_dir / "offline").mkdir(parents=True)
    table.to_parquet(data_dir / "offline" / "user_features.parquet", index=False)
    feast = FeastSettings(repo_path=repo, profile="production", redis_url=redis_url)
    apply_feature_repo(feast)
    started = time.perf_counter()
    open_feature_store(feast).materialize(start_date=now - timedelta(days=7), end_date=now)
    print(f"  materialized {users:,} users in {time.perf_counter() - started:.1f} s")
    tracking_uri = tracking_uri_in(folder / "mlflow")
    started = time.perf_counter()
    model = fit_model(trees=trees, depth=depth, rows=5_000)
    register_model(tracking_uri, project=project, model=model)
    print(
        f"  champion: GradientBoostingClassifier({trees} trees, depth {depth}) "
        f"registered in {time.perf_counter() - started:.1f} s"
    )
    return Workspace(folder, project, feast, tracking_uri, users)


def _without_prometheus_folder(environment: dict[str, str]) -> dict[str, str]:
    # Feast's metrics module exports a prometheus multi-process folder into this process's
    # environment (materialize imported it); neither server should inherit it.
    return {
        key: value
        for key, value in environment.items()
        if key not in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")
    }


def start_feast(work: Workspace, port: int) -> subprocess.Popen[bytes]:
    """``feast serve``, tuned as the issue asks (no access log, no worker recycling)."""
    from materialize.store import feast_cli_environment

    command = [
        str(BIN / "feast"),
        "-f",
        str(work.feast.yaml_path),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--max-requests",
        "0",
        "--workers",
        "1",
    ]
    environment = _without_prometheus_folder(feast_cli_environment(work.feast))
    return subprocess.Popen(
        command,
        cwd=work.feast.repo_path,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_churn(work: Workspace, port: int) -> subprocess.Popen[bytes]:
    """``churn serve`` on the same project and Redis."""
    environment = _without_prometheus_folder(dict(os.environ))
    environment.update(
        CHURN_DATA_DIR=str(work.folder / "data"),
        CHURN_FEAST_REPO_PATH=str(work.feast.repo_path),
        CHURN_FEAST_PROFILE="production",
        CHURN_REDIS_URL=work.feast.redis_url,
        MLFLOW_TRACKING_URI=work.tracking_uri,
        CHURN_SERVING_HOST="127.0.0.1",
        CHURN_SERVING_PORT=str(port),
        CHURN_SERVING_PREDICTION_LOG_DIR=str(work.folder / "predictions"),
    )
    return subprocess.Popen(
        [str(BIN / "churn"), "serve", "--log-level", "warning"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_until_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Poll ``url`` until it answers 200."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")


def request_bodies(work: Workspace, epoch: int) -> dict[str, tuple[str, str]]:
    """Path and body template (``%d`` = user id) of each target."""
    feast_body = (
        '{"feature_service": "churn_v1", "entities": {"user_id": [%d], '
        f'"event_timestamp": [{epoch}]}}}}'
    )
    return {
        "feast serve": ("/get-online-features", feast_body),
        "churn serve": ("/predict", '{"user_id": %d}'),
    }


def check_answers(urls: dict[str, str], bodies: dict[str, tuple[str, str]]) -> None:
    """Both servers answer a known user with features (and churn with a probability)."""
    import httpx

    for target, url in urls.items():
        path, template = bodies[target]
        response = httpx.post(
            url + path, content=template % 1, headers={"content-type": "application/json"}
        )
        response.raise_for_status()
        body = response.json()
        if target == "churn serve":
            assert 0 <= body["churn_probability"] <= 1, body
        else:
            names = body["metadata"]["feature_names"]
            values = body["results"][names.index("feature_1")]["values"]
            assert values[0] is not None, body


def run_wrk(
    url: str, path: str, template: str, *, connections: int, seconds: int, users: int, folder: Path
) -> Result:
    """One wrk run (one thread: the generator takes as little CPU as possible)."""
    script = folder / f"load_{uuid.uuid4().hex[:6]}.lua"
    script.write_text(
        "local counter = 0\n"
        "request = function()\n"
        f"  counter = (counter % {users}) + 1\n"
        f"  local body = string.format('{template}', counter)\n"
        f"  return wrk.format('POST', '{path}', "
        "{['Content-Type'] = 'application/json'}, body)\n"
        "end\n"
    )
    completed = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    return _parse_wrk(completed.stdout, connections)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _parse_wrk(output: str, connections: int) -> Result:
    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, flags=re.M)
        assert match, output
        return float(match.group(1)) * _UNITS_MS[match.group(2)]

    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    errors_match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    errors = int(errors_match.group(1)) if errors_match else 0
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    return Result("", connections, requests, errors, rps, latency("50"), latency("99"))


def run_httpx(
    url: str, path: str, template: str, *, connections: int, seconds: int, users: int, folder: Path
) -> Result:
    """Bounded async client: ``connections`` workers, each one request at a time."""
    import httpx

    async def drive() -> Result:
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + seconds
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:

            async def worker(offset: int) -> None:
                nonlocal errors
                user = offset
                while time.perf_counter() < deadline:
                    user = user % users + 1
                    started = time.perf_counter()
                    response = await client.post(
                        path, content=template % user, headers={"content-type": "application/json"}
                    )
                    latencies.append(time.perf_counter() - started)
                    errors += response.status_code >= 300

            started = time.perf_counter()
            await asyncio.gather(*(worker(i * 997) for i in range(connections)))
            elapsed = time.perf_counter() - started
        ordered = sorted(latencies)
        return Result(
            "",
            connections,
            len(ordered),
            errors,
            len(ordered) / elapsed,
            statistics.median(ordered) * 1000,
            ordered[int(0.99 * (len(ordered) - 1))] * 1000,
        )

    return asyncio.run(drive())


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _delete_project_keys(redis_url: str, project: str) -> None:
    import redis

    host, _, rest = redis_url.partition(":")
    port, *options = rest.split(",")
    db = next((int(o.split("=")[1]) for o in options if o.startswith("db=")), 0)
    client = redis.Redis(host=host, port=int(port), db=db)
    for key in client.scan_iter(match=f"*{project}", count=1000):
        client.delete(key)


def report(results: list[Result]) -> int:
    """Print the table and the verdicts; return 0 when every goal is met."""
    print(
        f"\n  {'target':<12} {'conns':>5} {'requests':>9} {'errors':>6} {'req/s':>9} "
        f"{'p50 ms':>8} {'p99 ms':>8}"
    )
    for r in results:
        print(
            f"  {r.target:<12} {r.connections:>5} {r.requests:>9,} {r.errors:>6} {r.rps:>9,.0f} "
            f"{r.p50_ms:>8.2f} {r.p99_ms:>8.2f}"
        )
    by = {(r.target, r.connections): r for r in results}
    single = by[("churn serve", 1)]
    ours, theirs = by[("churn serve", 8)], by[("feast serve", 8)]
    ratio = ours.rps / theirs.rps
    verdicts = [
        (
            f"single client p50 {single.p50_ms:.2f} ms <= {GOAL_P50_MS:g} ms",
            single.p50_ms <= GOAL_P50_MS,
        ),
        (
            f"8 connections: {ratio:.2f}x feast serve throughput >= {GOAL_RATIO:g}x",
            ratio >= GOAL_RATIO,
        ),
        (
            f"8 connections: p99 {ours.p99_ms:.2f} ms <= {GOAL_P99_MS:g} ms",
            ours.p99_ms <= GOAL_P99_MS,
        ),
        ("no errors", all(r.errors == 0 for r in results)),
    ]
    print()
    for text, met in verdicts:
        print(f"  {'meets' if met else 'MISSES'}: {text}")
    return 0 if all(met for _, met in verdicts) else 1


def main(argv: list[str] | None = None) -> int:
    """Prepare, start both servers, drive them, report, clean up."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=10, help="duration of each load run")
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--client", choices=["auto", "wrk", "httpx"], default="auto")
    parser.add_argument("--redis-url", default=os.environ.get("CHURN_REDIS_URL", "127.0.0.1:6379"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "httpx"
    drive = run_wrk if client == "wrk" else run_httpx
    print(
        f"serve benchmark {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f}, load generator: {client}"
    )
    folder = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    processes: list[subprocess.Popen[bytes]] = []
    work: Workspace | None = None
    try:
        work = prepare(
            folder, users=args.users, redis_url=args.redis_url, trees=args.trees, depth=args.depth
        )
        ports = {"feast serve": _free_port(), "churn serve": _free_port()}
        processes = [
            start_feast(work, ports["feast serve"]),
            start_churn(work, ports["churn serve"]),
        ]
        urls = {target: f"http://127.0.0.1:{port}" for target, port in ports.items()}
        wait_until_ready(urls["feast serve"] + "/health", processes[0])
        wait_until_ready(urls["churn serve"] + "/ready", processes[1])
        bodies = request_bodies(work, int(time.time()))
        check_answers(urls, bodies)
        results: list[Result] = []
        for connections in (1, 8):
            for target in ("feast serve", "churn serve"):
                path, template = bodies[target]
                options = {"users": work.users, "folder": folder}
                drive(
                    urls[target], path, template, connections=connections, seconds=2, **options
                )  # warm-up
                result = drive(
                    urls[target],
                    path,
                    template,
                    connections=connections,
                    seconds=args.seconds,
                    **options,
                )
                results.append(Result(target, *list(result.__dict__.values())[1:]))
                print(f"  ran {target} with {connections} connection(s)")
        status = report(results)
        if args.json:
            args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))
        return status
    finally:
        for process in processes:
            _stop(process)
        if work is not None:
            _delete_project_keys(args.redis_url, work.project)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
