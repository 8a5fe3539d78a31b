"""Benchmark: Feast's stock materialization against ``materialize.engine.FastEngine``.

Generates (or takes) a user-features table, then for each engine copies ``feature_repo/``
with its own project and registry, runs ``feast apply``, and materializes the same range
into Redis in a separate process (so each peak RSS is that engine's alone). Prints rows/s,
wall time and peak RSS of each, the speed-up, and whether both wrote identical hashes.

    .venv/bin/python -m bench.materialize --users 1000000
    .venv/bin/python -m bench.materialize --users 100000 --engines fast

Run it as a module from the checkout root: as a script, ``bench/`` would head ``sys.path``
and this file would shadow the ``materialize`` package Feast imports the engine from.

The Redis keys of the benchmark projects are deleted at the end (``--keep`` keeps them).
Heavy at 1M users (about 2 x 250 MB in Redis): run it on a quiet machine.
"""

from __future__ import annotations

import argparse
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


def _prepare_repo(
    work: Path, engine: str, table: Path, redis_url: str, chunk_rows: int | None
) -> tuple[Path, str]:
    """A copy of feature_repo/ for ``engine`` with its own project; returns (repo, project)."""
    root = work / engine
    repo = root / "feature_repo"
    shutil.copytree(FEATURE_REPO, repo, ignore=shutil.ignore_patterns("__pycache__", "data"))
    project = f"bench_{engine}_{uuid.uuid4().hex[:8]}"
    yaml_path = repo / "feature_store.yaml"
    text = re.sub(r"^project: .*$", f"project: {project}", yaml_path.read_text(), flags=re.M)
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
    return {**os.environ, "CHURN_DATA_DIR": str(root / "data"), "CHURN_REDIS_URL": redis_url}


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


def _redis(redis_url: str) -> Any:
    import redis

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
    client = _redis(args.redis_url)
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
    projects: dict[str, str] = {}
    results: dict[str, dict[str, Any]] = {}
    try:
        for engine in engines:
            repo, project = _prepare_repo(work, engine, table, args.redis_url, args.chunk_rows)
            projects[engine] = project
            print(f"{engine}: materializing {START:%Y-%m-%d} .. {END:%Y-%m-%d} ...", flush=True)
            results[engine] = _run_engine(repo, args.redis_url)
            results[engine]["rows"] = len(_project_keys(client, project))
        _report(results, args)
        if len(projects) == 2:
            compared, equal = _compare(client, projects, sample=2_000)
            print(f"identical hashes: {equal:,}/{compared:,} sampled entities")
            if equal != compared:
                return 1
    finally:
        if not args.keep:
            for project in projects.values():
                _delete_keys(client, project)
            if temporary:
                shutil.rmtree(work, ignore_errors=True)
    return 0


def _report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\n{datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores, Redis {args.redis_url}, "
        f"{args.users:,} users x {args.snapshots} rows"
    )
    print(f"{'engine':<8}{'rows':>12}{'wall s':>10}{'rows/s':>12}{'peak RSS MB':>14}")
    for engine, result in results.items():
        rate = result["rows"] / result["seconds"] if result["seconds"] else 0.0
        result["rate"] = rate
        print(
            f"{engine:<8}{result['rows']:>12,}{result['seconds']:>10.1f}{rate:>12,.0f}"
            f"{result['peak_rss_mb']:>14,.0f}"
        )
    if {"stock", "fast"} <= results.keys():
        speedup = results["fast"]["rate"] / results["stock"]["rate"]
        memory = results["fast"]["peak_rss_mb"] / results["stock"]["peak_rss_mb"]
        print(f"fast / stock: {speedup:.1f}x rows/s, {memory:.2f}x peak RSS")


if __name__ == "__main__":
    sys.exit(main())
