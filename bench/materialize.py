"""Benchmark: Feast's stock materialization against ``materialize.engine.FastEngine``.

Generates (or takes) a user-features table, then for each engine copies ``feature_repo/``
with its own project and registry, runs ``feast apply``, and materializes the same range
into Redis in a separate process (so each peak RSS is that engine's alone). Prints rows/s,
wall time and peak RSS of each, the speed-up, and whether both wrote identical hashes.

    .venv/bin/python -m bench.materialize --users 1000000
    .venv/bin/python -m bench.materialize --users 100000 --engines fast
    .venv/bin/python -m bench.materialize --profile cluster --users 200000 --runs 3

``--profile cluster`` writes to the Redis Cluster of ``--cluster-nodes`` (default
``$CHURN_REDIS_CLUSTER_NODES``; ``local`` starts a three-master cluster on free loopback
ports for the run, as the tests do, and stops it after). ``--runs N`` repeats every
engine N times (fresh projects, interleaved) and prints the median and spread.

Run it as a module from the checkout root: as a script, ``bench/`` would head ``sys.path``
and this file would shadow the ``materialize`` package Feast imports the engine from.

The Redis keys of the benchmark projects are deleted at the end (``--keep`` keeps them).
Heavy at 1M users (about 2 x 250 MB in Redis): run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FEATURE_REPO = ROOT / "feature_repo"
END = datetime(2026, 3, 2, tzinfo=UTC)
START = END - timedelta(days=21)
ENGINE_BLOCKS = {
    "stock": "batch_engine: local\n",
    "fast": "batch_engine:\n  type: materialize.engine.FastEngine\n",
}


def generate_table(path: Path, *, users: int, snapshots: int, seed: int) -> int:
    """Write a user-features table (contract schema): ``snapshots`` rows per user.

    Every row lies inside the 20 days before END, so every user is materialized.
    Returns the number of rows.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    rows = users * snapshots
    end_us = int(END.timestamp() * 1_000_000)
    event = end_us - rng.integers(0, 20 * 86_400, size=rows) * 1_000_000
    # Distinct created times break any tie on the event time the same way in both engines.
    created = event + 300_000_000 + rng.integers(0, 1_000_000, size=rows)
    feature_1 = rng.gamma(2.0, 3.0, size=rows)
    feature_2 = rng.normal(0.0, 2.0, size=rows)
    table = pa.table(
        {
            "user_id": pa.array(np.repeat(np.arange(1, users + 1, dtype=np.int64), snapshots)),
            # Microseconds, as `churn ingest` writes them (Spark refuses Parquet nanoseconds).
            "event_timestamp": pa.array(event, pa.timestamp("us", tz="UTC")),
            "created": pa.array(created, pa.timestamp("us", tz="UTC")),
            "feature_1": pa.array(feature_1, mask=rng.random(rows) < 0.05),
            "feature_2": pa.array(feature_2, mask=rng.random(rows) < 0.05),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return rows


PROFILE_FILES = {"production": "feature_store.yaml", "cluster": "feature_store.cluster.yaml"}


def _prepare_repo(
    work: Path,
    engine: str,
    table: Path,
    redis_url: str,
    chunk_rows: int | None,
    *,
    profile: str = "production",
) -> tuple[Path, str]:
    """A copy of feature_repo/ for ``engine`` with its own project; returns (repo, project).

    The profile's yaml becomes the copy's ``feature_store.yaml`` (what Feast opens).
    """
    project = f"bench_{engine}_{uuid.uuid4().hex[:8]}"
    root = work / project
    repo = root / "feature_repo"
    shutil.copytree(FEATURE_REPO, repo, ignore=shutil.ignore_patterns("__pycache__", "data"))
    yaml_path = repo / "feature_store.yaml"
    profile_text = (repo / PROFILE_FILES[profile]).read_text()
    text = re.sub(r"^project: .*$", f"project: {project}", profile_text, flags=re.M)
    text = re.sub(r"^batch_engine:.*\n(?:[ \t]+.*\n)*", "", text, flags=re.M)
    block = ENGINE_BLOCKS[engine]
    if engine == "fast" and chunk_rows:
        block += f"  chunk_rows: {chunk_rows}\n"
    yaml_path.write_text(text + block)
    offline = root / "data" / "offline"
    offline.mkdir(parents=True)
    (offline / "user_features.parquet").symlink_to(table.resolve())
    subprocess.run(
        [str(Path(sys.executable).with_name("feast")), "apply"],
        cwd=repo,
        env=_environment(root, redis_url),
        check=True,
        capture_output=True,
    )
    return repo, project


def _environment(root: Path, redis_url: str) -> dict[str, str]:
    # The same connection string fills either profile's placeholder.
    return {
        **os.environ,
        "CHURN_DATA_DIR": str(root / "data"),
        "CHURN_REDIS_URL": redis_url,
        "CHURN_REDIS_CLUSTER_NODES": redis_url,
    }


def run_child(repo: Path) -> None:
    """Materialize START..END in this process; print wall time and peak RSS as JSON."""
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    started = time.perf_counter()
    store.materialize(START, END)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb}))


def _run_engine(repo: Path, redis_url: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.materialize", "--child", str(repo)],
        cwd=ROOT,
        env=_environment(repo.parent, redis_url),
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def _redis(redis_url: str, *, cluster: bool = False) -> Any:
    import redis

    if cluster:
        from redis.cluster import ClusterNode, RedisCluster

        nodes = [part.rsplit(":", 1) for part in redis_url.split(",") if "=" not in part]
        return RedisCluster(startup_nodes=[ClusterNode(host, int(port)) for host, port in nodes])
    host, _, rest = redis_url.partition(":")
    port, *params = rest.split(",")
    options = dict(param.split("=", 1) for param in params)
    return redis.Redis(host=host, port=int(port), db=int(options.get("db", 0)))


def _project_keys(client: Any, project: str) -> list[bytes]:
    return list(client.scan_iter(match=f"*{project}", count=10_000))


def _compare(client: Any, projects: dict[str, str], sample: int) -> tuple[int, int]:
    """Compare the hashes both engines wrote for ``sample`` entities: (compared, equal)."""
    first, second = projects.values()
    keys = _project_keys(client, first)[:sample]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
        pipe.hgetall(key[: -len(first)] + second.encode())
    # Our engine also keeps each row's created time (``_created:<view>``, never read by
    # Feast): compare the fields Feast writes and reads.
    values = [
        {name: value for name, value in fields.items() if not name.startswith(b"_created:")}
        for fields in pipe.execute()
    ]
    equal = sum(values[i] == values[i + 1] for i in range(0, len(values), 2))
    return len(keys), equal


def _delete_keys(client: Any, project: str) -> None:
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"*{project}", count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with --child, one engine's materialization)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--snapshots", type=int, default=2, help="rows per user in range")
    parser.add_argument("--table", type=Path, help="use this user_features.parquet")
    parser.add_argument("--engines", default="stock,fast", help="comma-separated: stock,fast")
    parser.add_argument("--redis-url", default=os.environ.get("CHURN_REDIS_URL", "127.0.0.1:6379"))
    parser.add_argument("--work-dir", type=Path, help="where repos and data go (a temp dir)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--chunk-rows", type=int, help="the fast engine's chunk_rows")
    parser.add_argument("--profile", choices=sorted(PROFILE_FILES), default="production")
    parser.add_argument(
        "--cluster-nodes",
        default=os.environ.get("CHURN_REDIS_CLUSTER_NODES", "local"),
        help="cluster profile: host:port,host:port, or `local` (start one for the run)",
    )
    parser.add_argument("--runs", type=int, default=1, help="runs of each engine (median)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the Redis keys and the temporary work dir"
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child)
        return 0

    engines = [name.strip() for name in args.engines.split(",") if name.strip()]
    unknown = sorted(set(engines) - set(ENGINE_BLOCKS))
    if unknown:
        parser.error(f"unknown engine(s) {', '.join(unknown)}; choose from stock, fast")
    with contextlib.ExitStack() as stack:
        if args.profile == "cluster" and args.cluster_nodes == "local":
            from tests.utils.redis_cluster import private_cluster

            folder = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
            args.redis_url = stack.enter_context(
                private_cluster(folder, replicas=0)
            ).connection_string
        elif args.profile == "cluster":
            args.redis_url = args.cluster_nodes
        return _measure(args, engines)


def _measure(args: argparse.Namespace, engines: list[str]) -> int:
    client = _redis(args.redis_url, cluster=args.profile == "cluster")
    try:
        client.ping()
    except Exception as error:
        print(f"error: cannot reach Redis at {args.redis_url}: {error}", file=sys.stderr)
        return 2
    temporary = args.work_dir is None
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-materialize-"))
    table = args.table
    if table is None:
        table = work / "offline" / "user_features.parquet"
        started = time.perf_counter()
        rows = generate_table(table, users=args.users, snapshots=args.snapshots, seed=args.seed)
        print(
            f"generated {rows:,} rows for {args.users:,} users in "
            f"{time.perf_counter() - started:.1f} s: {table}"
        )
    projects: list[str] = []
    runs: dict[str, list[dict[str, Any]]] = {engine: [] for engine in engines}
    try:
        for run in range(args.runs):
            latest: dict[str, str] = {}
            for engine in engines:
                repo, project = _prepare_repo(
                    work, engine, table, args.redis_url, args.chunk_rows, profile=args.profile
                )
                projects.append(project)
                latest[engine] = project
                print(
                    f"{engine} (run {run + 1}/{args.runs}): materializing "
                    f"{START:%Y-%m-%d} .. {END:%Y-%m-%d} ...",
                    flush=True,
                )
                result = _run_engine(repo, args.redis_url)
                result["rows"] = len(_project_keys(client, project))
                runs[engine].append(result)
            if run == 0 and len(latest) == 2:
                compared, equal = _compare(client, latest, sample=2_000)
                print(f"identical hashes: {equal:,}/{compared:,} sampled entities")
                if equal != compared:
                    return 1
            if not args.keep:  # keep the servers' memory for the next run
                for project in latest.values():
                    _delete_keys(client, project)
        _report(runs, args)
    finally:
        if not args.keep:
            for project in projects:
                _delete_keys(client, project)
            if temporary:
                shutil.rmtree(work, ignore_errors=True)
    return 0


def _report(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    import statistics

    print(
        f"\n{datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores, {args.profile} profile, "
        f"Redis {args.redis_url}, {args.users:,} users x {args.snapshots} rows, "
        f"{args.runs} run(s) per engine"
    )
    print(
        f"{'engine':<8}{'rows':>12}{'wall s':>10}{'rows/s (median)':>17}{'spread':>20}"
        f"{'peak RSS MB':>14}"
    )
    rates: dict[str, float] = {}
    for engine, results in runs.items():
        per_run = [r["rows"] / r["seconds"] if r["seconds"] else 0.0 for r in results]
        rates[engine] = statistics.median(per_run)
        seconds = statistics.median(r["seconds"] for r in results)
        peak = max(r["peak_rss_mb"] for r in results)
        spread = f"{min(per_run):,.0f}-{max(per_run):,.0f}"
        print(
            f"{engine:<8}{results[0]['rows']:>12,}{seconds:>10.1f}{rates[engine]:>17,.0f}"
            f"{spread:>20}{peak:>14,.0f}"
        )
    if {"stock", "fast"} <= rates.keys():
        memory = max(r["peak_rss_mb"] for r in runs["fast"]) / max(
            r["peak_rss_mb"] for r in runs["stock"]
        )
        print(
            f"fast / stock: {rates['fast'] / rates['stock']:.1f}x rows/s (medians), "
            f"{memory:.2f}x peak RSS"
        )


if __name__ == "__main__":
    sys.exit(main())
