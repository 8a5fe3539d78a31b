"""Benchmark: ``churn serve`` (features + model) against ``feast serve`` (features only).

It measures what ships. In a temporary folder it runs the platform's own commands as a user
types them: ``churn generate`` (the demo's 2000 users x 60 days), ``churn ingest``,
``churn apply``, ``churn materialize`` into Redis under a private Feast project, and
``churn train --trials 6`` once per model family (the default ``hist_gradient_boosting``
and the reference ``gradient_boosting``), each into its own MLflow registry, so each
family's champion is exactly what ``churn train`` registers. Then, for 1 and 2 workers:

- ``feast serve --no-access-log --max-requests 0 --workers W`` (tuned) answering
  ``POST /get-online-features`` for the ``churn_v1`` feature service;
- ``churn serve --workers W`` (default settings otherwise) answering ``POST /predict``
  (the same lookup, plus the model), once per family;

each driven by ``wrk`` (``apt-get install wrk``; else a slower async httpx client) at 1, 8
and 32 connections over the users that have complete features. Then the default family's
server without and with bearer-token authentication, ``--auth-rounds`` times each
(``bench/serve_auth.py``). With one worker it also
measures what ``"explain": true`` adds to a single request (``bench/explain_latency.py``).
It prints requests/s, p50 and p99 of each run, which model was served (family, trees,
inference engine), and the issue's goals: at one worker, ``churn serve`` on the default
family serves at least 3x ``feast serve``'s requests/s at 8 connections with a p99 no
higher than its, and one client's p50 is at most half of ``feast serve``'s; two workers
serve more than one.

    .venv/bin/python -m bench.serve                  # 10 s per run
    .venv/bin/python -m bench.serve --seconds 20 --workers 1
    .venv/bin/python -m bench.serve --profile cluster --workers 1 --families hist_gradient_boosting

``--profile cluster`` runs everything (both servers included) on a Redis Cluster:
``--cluster-nodes`` (default ``$CHURN_REDIS_CLUSTER_NODES``; ``local`` starts a
three-master cluster on free loopback ports for the run and stops it after).

Run it as a module from the checkout root (as a script, ``bench/materialize.py`` would
shadow the ``materialize`` package).

Everything it creates (temp folder, Redis keys of its project) is removed at the end.
The load generator shares the machine's cores with the servers and Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

BIN = Path(sys.executable).parent
FAMILIES = ("hist_gradient_boosting", "gradient_boosting")
GOAL_RATIO = 3.0
CONNECTIONS = (1, 8, 32)


@dataclass(frozen=True)
class Champion:
    """A family's champion, as ``churn train`` registered it."""

    family: str
    tracking_uri: str
    version: str
    trees: int
    test_auc: float


@dataclass(frozen=True)
class Workspace:
    """What every server serves: one Feast project on Redis, one registry per family."""

    folder: Path
    project: str
    feast: Any  # FeastSettings
    environment: dict[str, str]
    champions: dict[str, Champion]
    users: list[int]


@dataclass(frozen=True)
class Result:
    """One load run."""

    target: str
    workers: int
    connections: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float


def _churn(environment: dict[str, str], *args: str) -> str:
    """Run one ``churn`` command as a user would; its output, or an error with it."""
    completed = subprocess.run(
        [str(BIN / "churn"), *args], env=environment, capture_output=True, text=True
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"churn {' '.join(args)} exited {completed.returncode}:\n"
            f"{completed.stdout[-2000:]}{completed.stderr[-2000:]}"
        )
    return completed.stdout


def prepare(
    folder: Path,
    *,
    redis_url: str,
    trials: int,
    families: list[str],
    profile: str = "production",
    cluster_nodes: str | None = None,
) -> Workspace:
    """Demo data, feast apply and materialize, then one champion per family."""
    from core.settings import FeastSettings

    project = f"bench_serve_{uuid.uuid4().hex[:8]}"
    repo = folder / "feature_repo"
    shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    for yaml_file in repo.glob("feature_store*.yaml"):
        text = re.sub(r"^project: .*$", f"project: {project}", yaml_file.read_text(), flags=re.M)
        yaml_file.write_text(text)
    data_dir = folder / "data"
    environment = _without_prometheus_folder(dict(os.environ))
    environment.update(
        CHURN_DATA_DIR=str(data_dir),
        CHURN_FEAST_REPO_PATH=str(repo),
        CHURN_FEAST_PROFILE=profile,
        CHURN_REDIS_URL=redis_url,
        **({"CHURN_REDIS_CLUSTER_NODES": cluster_nodes} if cluster_nodes else {}),
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    started = time.perf_counter()
    raw = data_dir / "raw" / "events.parquet"
    _churn(environment, "generate", "--out", str(raw))
    _churn(environment, "ingest", *_ingest_options(environment), str(raw))
    _churn(environment, "apply")
    _churn(environment, "materialize")
    print(
        f"  demo data ingested, applied and materialized in {time.perf_counter() - started:.0f} s"
    )
    champions = {}
    for family in families:
        started = time.perf_counter()
        uri = f"sqlite:///{folder / f'mlflow-{family}' / 'mlflow.db'}"
        (folder / f"mlflow-{family}").mkdir()
        _churn(
            {**environment, "MLFLOW_TRACKING_URI": uri},
            "train",
            "--trials",
            str(trials),
            "--model-family",
            family,
            "--no-progress",
        )
        champions[family] = _describe_champion(family, uri)
        champion = champions[family]
        print(
            f"  churn train --model-family {family}: version {champion.version}, "
            f"{champion.trees} trees, test ROC AUC {champion.test_auc:.4f}, "
            f"{time.perf_counter() - started:.0f} s"
        )
    feast = FeastSettings(
        repo_path=repo,
        profile=profile,  # type: ignore[arg-type]  # one of the choices of --profile
        redis_url=redis_url,
        redis_cluster_nodes=cluster_nodes,
    )
    return Workspace(folder, project, feast, environment, champions, [])


def _ingest_options(environment: dict[str, str]) -> list[str]:
    """``--backfill`` when this version of ``churn ingest`` has it (a first, historical load)."""
    helped = subprocess.run(
        [str(BIN / "churn"), "ingest", "--help"], env=environment, capture_output=True, text=True
    )
    return ["--backfill"] if "--backfill" in helped.stdout else []


def _describe_champion(family: str, tracking_uri: str) -> Champion:
    """The champion of one registry, loaded as ``churn serve`` loads it (trusted only)."""
    from core.lineage import ModelLineage
    from core.models import ModelRegistry
    from core.settings import DEFAULT_MODEL_NAME

    version, model = ModelRegistry(tracking_uri).load_version(DEFAULT_MODEL_NAME, alias="champion")
    trees = int(getattr(model, "n_iter_", None) or model.n_estimators_)
    test_auc = ModelLineage.from_tags(version.tags).test_roc_auc
    auc = float("nan") if test_auc is None else test_auc
    return Champion(family, tracking_uri, version.version, trees, auc)


def _without_prometheus_folder(environment: dict[str, str]) -> dict[str, str]:
    # Feast's metrics module exports a prometheus multi-process folder into this process's
    # environment (materialize imported it); neither server should inherit it.
    return {
        key: value
        for key, value in environment.items()
        if key not in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")
    }


def start_feast(work: Workspace, port: int, workers: int) -> subprocess.Popen[bytes]:
    """``feast serve``, tuned as the issue asks (no access log, no worker recycling)."""
    from core.feast_store import feast_cli_environment

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
        str(workers),
    ]
    environment = _without_prometheus_folder(feast_cli_environment(work.feast))
    return subprocess.Popen(
        command,
        cwd=work.feast.repo_path,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_churn(
    work: Workspace,
    port: int,
    workers: int,
    champion: Champion,
    *,
    settings: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``churn serve --workers W`` on the same project and Redis, default settings.

    ``settings`` are extra environment variables (``CHURN_SERVING_AUTH_*``).
    """
    environment = dict(work.environment)
    environment.update(
        MLFLOW_TRACKING_URI=champion.tracking_uri,
        CHURN_SERVING_PORT=str(port),
        CHURN_PREDICTION_LOG_DIR=str(work.folder / "predictions" / uuid.uuid4().hex),
    )
    environment.update(settings or {})
    return subprocess.Popen(
        [str(BIN / "churn"), "serve", "--workers", str(workers), "--log-level", "warning"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def scorable_users(url: str) -> list[int]:
    """The demo users ``/predict`` answers (complete online features), in id order."""
    import httpx

    users = []
    for start in range(1, 2001, 100):
        batch = list(range(start, start + 100))
        answer = httpx.post(f"{url}/predict/batch", json={"user_ids": batch}, timeout=30)
        answer.raise_for_status()
        users += [p["user_id"] for p in answer.json()["predictions"]]
    return users


def engine_of(url: str) -> str:
    """The inference engine the service chose for its model."""
    import httpx

    return str(httpx.get(f"{url}/model", timeout=10).json()["inference"]["engine"])


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


def request_bodies(epoch: int) -> dict[str, tuple[str, str]]:
    """Path and body template (``%d`` = user id) of each kind of server."""
    feast_body = (
        '{"feature_service": "churn_v1", "entities": {"user_id": [%d], '
        f'"event_timestamp": [{epoch}]}}}}'
    )
    return {"feast": ("/get-online-features", feast_body), "churn": ("/predict", '{"user_id": %d}')}


def run_wrk(
    url: str,
    path: str,
    template: str,
    *,
    connections: int,
    seconds: int,
    users: list[int],
    folder: Path,
    headers: dict[str, str] | None = None,
) -> Result:
    """One wrk run (one thread: the generator takes as little CPU as possible)."""
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    lua_headers = ", ".join(f"['{name}'] = '{value}'" for name, value in all_headers.items())
    script = folder / f"load_{uuid.uuid4().hex[:6]}.lua"
    script.write_text(
        f"local users = {{{', '.join(map(str, users))}}}\n"
        "local counter = 0\n"
        "request = function()\n"
        "  counter = (counter % #users) + 1\n"
        f"  local body = string.format('{template}', users[counter])\n"
        f"  return wrk.format('POST', '{path}', {{{lua_headers}}}, body)\n"
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
    return Result("", 0, connections, requests, errors, rps, latency("50"), latency("99"))


def run_httpx(
    url: str,
    path: str,
    template: str,
    *,
    connections: int,
    seconds: int,
    users: list[int],
    folder: Path,
    headers: dict[str, str] | None = None,
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
                position = offset
                while time.perf_counter() < deadline:
                    position = (position + 1) % len(users)
                    started = time.perf_counter()
                    response = await client.post(
                        path,
                        content=template % users[position],
                        headers={"content-type": "application/json", **(headers or {})},
                    )
                    latencies.append(time.perf_counter() - started)
                    errors += response.status_code >= 300

            started = time.perf_counter()
            await asyncio.gather(*(worker(i * 997) for i in range(connections)))
            elapsed = time.perf_counter() - started
        ordered = sorted(latencies)
        return Result(
            "",
            0,
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


def _delete_project_keys(redis_url: str, project: str, cluster_nodes: str | None = None) -> None:
    import redis

    if cluster_nodes:
        from redis.cluster import ClusterNode, RedisCluster

        nodes = [part.rsplit(":", 1) for part in cluster_nodes.split(",") if "=" not in part]
        cluster = RedisCluster(startup_nodes=[ClusterNode(h, int(p)) for h, p in nodes])
        for key in cluster.scan_iter(match=f"*{project}", count=1000):
            cluster.delete(key)
        cluster.close()
        return

    host, _, rest = redis_url.partition(":")
    port, *options = rest.split(",")
    db = next((int(o.split("=")[1]) for o in options if o.startswith("db=")), 0)
    client = redis.Redis(host=host, port=int(port), db=db)
    for key in client.scan_iter(match=f"*{project}", count=1000):
        client.delete(key)


def report(results: list[Result], work: Workspace) -> int:
    """Print the table and the verdicts; return 0 when every goal is met."""
    print(
        f"\n  {'target':<44} {'workers':>7} {'conns':>5} {'requests':>9} {'errors':>6} "
        f"{'req/s':>8} {'p50 ms':>7} {'p99 ms':>7}"
    )
    for r in results:
        print(
            f"  {r.target:<44} {r.workers:>7} {r.connections:>5} {r.requests:>9,} {r.errors:>6} "
            f"{r.rps:>8,.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f}"
        )
    by = {(r.target.split(" (")[0], r.workers, r.connections): r for r in results}
    default = f"churn serve {FAMILIES[0]}"
    verdicts = []
    if (default, 1, 8) in by and ("feast serve", 1, 8) in by:
        ours, theirs = by[(default, 1, 8)], by[("feast serve", 1, 8)]
        single, their_single = by[(default, 1, 1)], by[("feast serve", 1, 1)]
        ratio = ours.rps / theirs.rps
        verdicts += [
            (
                f"1 worker, 8 connections: {ratio:.2f}x feast serve's requests/s >= "
                f"{GOAL_RATIO:g}x",
                ratio >= GOAL_RATIO,
            ),
            (
                f"1 worker, 8 connections: p99 {ours.p99_ms:.2f} ms <= feast serve's "
                f"{theirs.p99_ms:.2f} ms",
                ours.p99_ms <= theirs.p99_ms,
            ),
            (
                f"1 worker, one client: p50 {single.p50_ms:.2f} ms <= half of feast serve's "
                f"{their_single.p50_ms:.2f} ms",
                single.p50_ms <= their_single.p50_ms / 2,
            ),
        ]
    if (default, 2, 8) in by and (default, 1, 8) in by:
        one, two = by[(default, 1, 8)].rps, by[(default, 2, 8)].rps
        verdicts.append(
            (f"8 connections: 2 workers {two:,.0f} req/s > 1 worker {one:,.0f}", two > one)
        )
    verdicts.append(("no errors", all(r.errors == 0 for r in results)))
    print()
    for text, met in verdicts:
        print(f"  {'meets' if met else 'MISSES'}: {text}")
    return 0 if all(met for _, met in verdicts) else 1


def _compare_auth(work: Workspace, args: argparse.Namespace, users: list[int], drive: Any) -> int:
    """Without and with bearer-token authentication (bench/serve_auth.py); 0 if the goal is met."""
    from bench.serve_auth import (
        format_comparison,
        measure_auth_overhead,
        time_token_checks,
        verdict,
    )

    champion = work.champions[args.families[0]]
    comparisons = [
        measure_auth_overhead(
            work,
            champion,
            workers=workers,
            rounds=args.auth_rounds,
            seconds=args.seconds,
            users=users,
            drive=drive,
        )
        for workers in args.workers
    ]
    first, again = time_token_checks()
    print(f"\n  authentication, churn serve {args.families[0]}, {args.auth_rounds} rounds:")
    for comparison in comparisons:
        for line in format_comparison(comparison):
            print(line)
    print(f"  one token's check in process: first seen {first:.0f} us, remembered {again:.1f} us")
    met = [verdict(comparison) for comparison in comparisons]
    for text, ok in met:
        print(f"  {'meets' if ok else 'MISSES'}: {text}")
    return 0 if all(ok for _, ok in met) else 1


def main(argv: list[str] | None = None) -> int:
    """Prepare, start each server in turn, drive it, report, clean up."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="duration of each load run")
    parser.add_argument("--trials", type=int, default=6, help="churn train --trials")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--client", choices=["auto", "wrk", "httpx"], default="auto")
    parser.add_argument("--redis-url", default=os.environ.get("CHURN_REDIS_URL", "127.0.0.1:6379"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--auth-rounds",
        type=int,
        default=3,
        help="rounds of the default family without and with authentication (0: none)",
    )
    parser.add_argument(
        "--auth-only", action="store_true", help="only the comparison without and with auth"
    )
    parser.add_argument("--profile", choices=["production", "cluster"], default="production")
    parser.add_argument(
        "--cluster-nodes",
        default=os.environ.get("CHURN_REDIS_CLUSTER_NODES", "local"),
        help="cluster profile: host:port,host:port, or `local` (start one for the run)",
    )
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.profile == "cluster" and args.cluster_nodes == "local":
            from tests.utils.redis_cluster import private_cluster

            nodes = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
            args.cluster_nodes = stack.enter_context(
                private_cluster(nodes, replicas=0)
            ).connection_string
        if args.profile != "cluster":
            args.cluster_nodes = None
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """The benchmark, once the online store is chosen."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "httpx"
    drive = run_wrk if client == "wrk" else run_httpx
    print(
        f"serve benchmark {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"{args.profile} profile, "
        f"load average {os.getloadavg()[0]:.2f}, load generator: {client}"
    )
    folder = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    work: Workspace | None = None
    results: list[Result] = []
    explain_lines: list[str] = []
    try:
        work = prepare(
            folder,
            redis_url=args.redis_url,
            trials=args.trials,
            families=args.families,
            profile=args.profile,
            cluster_nodes=args.cluster_nodes,
        )
        bodies = request_bodies(int(time.time()))
        users: list[int] = []
        for workers in [] if args.auth_only else args.workers:
            # churn serve first: it finds the users with complete features, which both
            # kinds of server are then driven with.
            targets: list[tuple[str, str, Any]] = [
                (f"churn serve {family}", "churn", work.champions[family])
                for family in args.families
            ]
            targets.append(("feast serve", "feast", None))
            for name, kind, champion in targets:
                port = _free_port()
                if champion is None:
                    process = start_feast(work, port, workers)
                    ready = "/health"
                else:
                    process = start_churn(work, port, workers, champion)
                    ready = "/ready"
                url = f"http://127.0.0.1:{port}"
                try:
                    wait_until_ready(url + ready, process)
                    label = name
                    if champion is not None:
                        users = users or scorable_users(url)
                        label = f"{name} ({champion.trees} trees, {engine_of(url)})"
                    path, template = bodies[kind]
                    options: dict[str, Any] = {
                        "users": users or list(range(1, 2001)),
                        "folder": folder,
                    }
                    for connections in CONNECTIONS:
                        drive(url, path, template, connections=connections, seconds=2, **options)
                        result = drive(
                            url,
                            path,
                            template,
                            connections=connections,
                            seconds=args.seconds,
                            **options,
                        )
                        results.append(Result(label, workers, *list(result.__dict__.values())[2:]))
                        print(
                            f"  {label}, {workers} worker(s), {connections} connection(s): "
                            f"{result.rps:,.0f} req/s"
                        )
                    if champion is not None and workers == min(args.workers):
                        from bench.explain_latency import format_result, measure_explain_latency

                        explained = measure_explain_latency(url, users, requests=1000)
                        explain_lines.append(format_result(label, explained))
                        print(f"  {explain_lines[-1]}")
                finally:
                    _stop(process)
        status = 0
        if not args.auth_only:
            status = report(results, work)
            print("\n  explanations, one client, single requests (bench/explain_latency.py):")
            for line in explain_lines:
                print(f"  {line}")
        if args.auth_rounds > 0:
            status = max(status, _compare_auth(work, args, users, drive))
        if args.json:
            args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))
        return status
    finally:
        if work is not None:
            _delete_project_keys(args.redis_url, work.project, args.cluster_nodes)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
