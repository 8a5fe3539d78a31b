"""Benchmark: our engine on Spark vs Feast's spark.engine vs our engine on DuckDB.

Starts a Spark standalone cluster on localhost (a master and two one-core workers, from
pyspark's own ``spark-class``, as the tests do) unless ``--master`` names one. Generates a
user-features table (``--users`` x ``--snapshots`` rows, microsecond times as ``churn
ingest`` writes them), then for each engine copies ``feature_repo/`` with its own project,
runs ``feast apply`` on the profile as shipped, and materializes the same range into Redis
in a separate process:

- ``ours-spark``: the spark profile as shipped (``materialize.engine.backends.spark.SparkEngine``);
- ``feast-spark``: the spark profile with its ``batch_engine`` type replaced by
  ``spark.engine`` (Feast's own), its session started with the same settings as ours;
- ``ours-duckdb``: the production profile as shipped (``materialize.engine.FastEngine``).

Each engine runs ``--rounds`` times (3 by default), the engines' order rotated each round;
before each later run the engine's keys are deleted, so every run writes every key. One
engine's runs move by up to 20% (the DuckDB engine's first by up to 50%: Redis grows its
tables and memory during the first round and keeps them after the deletes), so the median
is reported with every run's seconds, and Feast's time over ours round by round. While
each runs, the RSS of the driver (the Python process and its JVM) and of each executor
(its JVM and its Python workers) is sampled every 0.2 s; the peaks over the rounds are
printed. Every entity's hash is then compared with ``ours-duckdb``'s (all fields for our
engines; the fields Feast writes for Feast's). Finally the point-in-time join of
``--label-rows`` label rows against the table, spark profile vs production profile.

    .venv/bin/python bench/spark_materialize.py                      # 2M rows, 1M users
    .venv/bin/python bench/spark_materialize.py --users 100000 --label-rows 100000
    .venv/bin/python bench/spark_materialize.py --rounds 1 --label-rows 0  # one run each

Heavy (about 3 x 250 MB in Redis at 1M users): run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    # Run as a script, this folder heads sys.path and bench/materialize.py would shadow the
    # `materialize` package that Feast imports the engine from.
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

ROOT = Path(__file__).resolve().parent.parent
FEATURE_REPO = ROOT / "feature_repo"
# Profile file and batch engine type of each engine (None: the profile's own block); a
# replaced block keeps the profile's spark_conf (Feast's engine gets the same JVMs as ours).
ENGINES: dict[str, tuple[str, str | None]] = {
    "ours-spark": ("feature_store.spark.yaml", None),
    "feast-spark": ("feature_store.spark.yaml", "spark.engine"),
    "ours-duckdb": ("feature_store.yaml", None),
}
REFERENCE = "ours-duckdb"


def _base_bench() -> Any:
    """bench/materialize.py (table generator, Redis helpers, range), loaded by path."""
    spec = importlib.util.spec_from_file_location(
        "bench_materialize", ROOT / "bench" / "materialize.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BASE = _base_bench()


@dataclass
class MemoryPeaks:
    """Peak RSS (MB) of the driver tree and of each executor tree seen while sampling."""

    driver_mb: float = 0.0
    executors_mb: dict[int, float] = field(default_factory=dict)


def _tree_rss_mb(process: Any) -> float:
    import psutil

    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def _sample_memory(
    driver_pid: int, cluster_dir: Path, peaks: MemoryPeaks, stop: threading.Event
) -> None:
    """Record peak RSS of the driver and of every executor (JVM + Python workers).

    Only executors of this benchmark's cluster count (they run in its workers' folders):
    other Spark applications on the machine are left out.
    """
    import psutil

    driver = psutil.Process(driver_pid)
    while not stop.is_set():
        with suppress(psutil.Error):
            peaks.driver_mb = max(peaks.driver_mb, _tree_rss_mb(driver))
        for process in psutil.process_iter(["pid", "cmdline"]):
            cmdline = process.info.get("cmdline") or []
            if any("CoarseGrainedExecutorBackend" in part for part in cmdline):
                try:
                    if not process.cwd().startswith(str(cluster_dir)):
                        continue
                    rss = _tree_rss_mb(process)
                except psutil.Error:
                    continue
                pid = process.info["pid"]
                peaks.executors_mb[pid] = max(peaks.executors_mb.get(pid, 0.0), rss)
        stop.wait(0.2)


def _environment(root: Path, args: argparse.Namespace, master: str, profile: str) -> dict[str, str]:
    return {
        **os.environ,
        "CHURN_DATA_DIR": str(root / "data"),
        "CHURN_REDIS_URL": args.redis_url,
        "CHURN_FEAST_PROFILE": "spark" if "spark" in profile else "production",
        "CHURN_SPARK_MASTER": master,
        "CHURN_SPARK_STAGING": str((root / "data" / "spark-staging").resolve()),
        # Executors run this interpreter (it has the project installed).
        "PYSPARK_PYTHON": sys.executable,
    }


def _replace_engine(text: str, engine_type: str) -> str:
    """The profile with its batch_engine block's type replaced, its spark_conf kept."""
    import yaml

    config = yaml.safe_load(text)
    block = config.get("batch_engine") or {}
    replaced = {"type": engine_type}
    if block.get("spark_conf"):
        replaced["spark_conf"] = block["spark_conf"]
    without = re.sub(r"^batch_engine:.*\n(?:(?:[ \t]+.*|[ \t]*#.*)?\n)*", "", text, flags=re.M)
    return without + yaml.safe_dump({"batch_engine": replaced}, sort_keys=False)


def _prepare_repo(
    work: Path, name: str, table: Path, args: argparse.Namespace, master: str
) -> tuple[Path, Path, str, dict[str, str]]:
    """A copy of feature_repo/ for one engine, applied; returns (repo, yaml, project, env)."""
    profile_file, engine_type = ENGINES[name]
    root = work / name
    repo = root / "feature_repo"
    shutil.copytree(FEATURE_REPO, repo, ignore=shutil.ignore_patterns("__pycache__", "data"))
    project = f"bench_{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    yaml_path = repo / profile_file
    text = re.sub(r"^project: .*$", f"project: {project}", yaml_path.read_text(), flags=re.M)
    if engine_type is not None:
        text = _replace_engine(text, engine_type)
    yaml_path.write_text(text)
    offline = root / "data" / "offline"
    offline.mkdir(parents=True)
    (offline / "user_features.parquet").symlink_to(table.resolve())
    environment = _environment(root, args, master, profile_file)
    subprocess.run(
        [str(Path(sys.executable).with_name("feast")), "-f", str(yaml_path), "apply"],
        cwd=repo,
        env=environment,
        check=True,
        capture_output=True,
    )
    return repo, yaml_path, project, environment


def run_child(repo: Path, yaml_path: Path, task: str, labels: Path | None) -> None:
    """In this process: materialize the range, or join the labels; print seconds as JSON."""
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo), fs_yaml_file=yaml_path)
    if getattr(store.config.offline_store, "spark_conf", None):
        # Start each engine's session on the cluster before the clock, as the engine would
        # start it: ours through its own spark_session() (the offline store's spark_conf
        # with its batch_engine block's over it); Feast's spark.engine builds its session
        # from its batch_engine block alone, so without an active session it would run in
        # local[*] on the driver: it gets the same two layers here.
        from core.feast_adapter.store import batch_engine_of

        engine = batch_engine_of(store)
        if hasattr(engine, "spark_session"):
            spark = engine.spark_session()
        else:
            from feast.infra.compute_engines.spark.utils import get_or_create_new_spark_session

            block = store.config.batch_engine_config
            block_conf = block.get("spark_conf") if isinstance(block, dict) else None
            spark = get_or_create_new_spark_session(
                {**store.config.offline_store.spark_conf, **(block_conf or {})}
            )
        # Executors register with the application asynchronously; a JVM-only job waits for
        # them, so their start (several seconds here, the same for both engines) is not
        # timed as materialization. No Python worker is started by it.
        spark.range(0, 4, 1, 4).count()
    if task == "materialize":
        started = time.perf_counter()
        store.materialize(BASE.START, BASE.END)
        print(json.dumps({"seconds": time.perf_counter() - started}))
        return
    import pandas as pd

    assert labels is not None
    entity_df = pd.read_parquet(labels)
    started = time.perf_counter()
    # The path the product's joins take (core.compute.spark.io): on Spark the entity rows and the
    # result are staged by the executors and read back in bounded Arrow batches; elsewhere
    # Feast's to_df().
    from core.compute.spark.io import historical_features, retrieval_to_pandas

    columns = ["user_id", "event_timestamp", "feature_1", "feature_2"]
    features = ["user_features:feature_1", "user_features:feature_2"]
    with historical_features(store, entity_df, label="bench-join", features=features) as job:
        frame = retrieval_to_pandas(store, job, columns, label="bench-join")
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rows": len(frame)}))


def _run_child(
    repo: Path, yaml_path: Path, environment: dict[str, str], task: str, labels: Path | None
) -> tuple[dict[str, Any], MemoryPeaks]:
    cluster_dir = repo.parent.parent / "cluster"
    command = [sys.executable, __file__, "--child", str(repo), str(yaml_path), task]
    if labels is not None:
        command.append(str(labels))
    process = subprocess.Popen(
        command, cwd=repo, env=environment, stdout=subprocess.PIPE, text=True
    )
    peaks, stop = MemoryPeaks(), threading.Event()
    sampler = threading.Thread(
        target=_sample_memory, args=(process.pid, cluster_dir, peaks, stop), daemon=True
    )
    sampler.start()
    output, _ = process.communicate()
    stop.set()
    sampler.join()
    if process.returncode:
        raise RuntimeError(f"{task} in {repo} failed with exit status {process.returncode}")
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result, peaks


def _mismatches(
    client: Any, project: str, reference: str, *, feast_fields_only: bool
) -> tuple[int, int]:
    """Compare every entity hash of ``project`` with ``reference``'s: (entities, mismatches)."""
    keys = BASE._project_keys(client, reference)
    compared = mismatched = 0
    for start in range(0, len(keys), 10_000):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + 10_000]:
            pipe.hgetall(key)
            pipe.hgetall(key[: -len(reference)] + project.encode())
        values = pipe.execute()
        if feast_fields_only:
            values = [
                {name: value for name, value in fields.items() if not name.startswith(b"_created:")}
                for fields in values
            ]
        compared += len(values) // 2
        mismatched += sum(values[i] != values[i + 1] for i in range(0, len(values), 2))
    mismatched += abs(len(BASE._project_keys(client, project)) - len(keys))
    return compared, mismatched


def _write_labels(path: Path, *, rows: int, users: int, seed: int) -> None:
    """Label rows (user_id, event_timestamp) inside the table's range, microsecond times."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed + 1)
    end_us = int(BASE.END.timestamp() * 1_000_000)
    times = end_us - rng.integers(0, 20 * 86_400, size=rows) * 1_000_000
    table = pa.table(
        {
            "user_id": pa.array(rng.integers(1, users + 1, size=rows, dtype=np.int64)),
            "event_timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
        }
    )
    pq.write_table(table, path)


def rotated(engines: list[str], round_index: int) -> list[str]:
    """The engines in the order of a round: each round starts one engine further on, so no
    engine always runs right after the same one."""
    shift = round_index % len(engines)
    return engines[shift:] + engines[:shift]


def summarize_runs(runs: list[dict[str, Any]], rows: int) -> dict[str, Any]:
    """One engine's runs: median seconds (rows/s from it), the range, the memory peaks."""
    seconds = sorted(run["seconds"] for run in runs)
    median = statistics.median(seconds)
    # Each run is a new application with new executors: the largest peak, the second...
    ranked = [sorted(run["executors_mb"], reverse=True) for run in runs]
    executors = [max(sizes) for sizes in itertools.zip_longest(*ranked, fillvalue=0.0)]
    return {
        "seconds": median,
        "all_seconds": [run["seconds"] for run in runs],
        "entities": runs[-1]["entities"],
        "rows_per_s": rows / median,
        "entities_per_s": runs[-1]["entities"] / median,
        "driver_mb": max(run["driver_mb"] for run in runs),
        "executors_mb": executors,
    }


def _print_materialization(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\n{datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores, Redis {args.redis_url}, "
        f"{args.users:,} users x {args.snapshots} rows; executors: 2 x 1 core"
    )
    header = f"{'engine':<13}{'entities':>10}{'median s':>10}{'runs s':>20}{'rows/s':>10}"
    print(header + f"{'driver MB':>11}  executors MB   mismatches")
    for name, result in results.items():
        executors = ", ".join(f"{mb:,.0f}" for mb in result["executors_mb"]) or "-"
        each = " ".join(f"{seconds:.1f}" for seconds in result["all_seconds"])
        print(
            f"{name:<13}{result['entities']:>10,}{result['seconds']:>10.1f}{each:>20}"
            f"{result['rows_per_s']:>10,.0f}{result['driver_mb']:>11,.0f}  {executors:<14} "
            f"{result.get('mismatches', '-')}"
        )
    if {"ours-spark", "feast-spark"} <= results.keys():
        ours, feast = results["ours-spark"], results["feast-spark"]
        # Round by round (the two engines' runs of one round ran minutes apart at most).
        ratios = [
            feast_seconds / ours_seconds
            for ours_seconds, feast_seconds in zip(
                ours["all_seconds"], feast["all_seconds"], strict=True
            )
        ]
        print(
            f"ours-spark / feast-spark: {feast['seconds'] / ours['seconds']:.1f}x rows/s "
            f"(medians); by round: {', '.join(f'{ratio:.1f}x' for ratio in ratios)}"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with --child, one step in this process)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--snapshots", type=int, default=2, help="rows per user in range")
    parser.add_argument("--label-rows", type=int, default=1_000_000, help="0: no join")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated")
    parser.add_argument("--master", help="spark:// URL of a running cluster (default: start one)")
    parser.add_argument("--redis-url", default=os.environ.get("CHURN_REDIS_URL", "127.0.0.1:6379"))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="runs of each engine, the engines' order rotated each round; medians reported",
    )
    parser.add_argument("--keep", action="store_true", help="keep Redis keys and the work dir")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        repo, yaml_path, task, *labels = args.child
        run_child(Path(repo), Path(yaml_path), task, Path(labels[0]) if labels else None)
        return 0
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    engines = list(dict.fromkeys(name.strip() for name in args.engines.split(",") if name.strip()))
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        parser.error(f"unknown engine(s) {', '.join(unknown)}; choose from {', '.join(ENGINES)}")
    client = BASE._redis(args.redis_url)
    client.ping()
    work = Path(tempfile.mkdtemp(prefix="bench-spark-materialize-"))
    projects: dict[str, str] = {}
    results: dict[str, dict[str, Any]] = {}
    try:
        with ExitStack() as stack:
            master = args.master
            if master is None:
                sys.path.insert(0, str(ROOT))
                from tests.utils.spark import standalone_cluster

                started = time.perf_counter()
                master = stack.enter_context(standalone_cluster(work / "cluster")).master_url
                print(f"standalone cluster {master} up in {time.perf_counter() - started:.1f} s")
            table = work / "offline" / "user_features.parquet"
            rows = BASE.generate_table(
                table, users=args.users, snapshots=args.snapshots, seed=args.seed
            )
            print(f"generated {rows:,} rows for {args.users:,} users: {table}")
            repos: dict[str, tuple[Path, Path, dict[str, str]]] = {}
            for name in engines:
                repo, yaml_path, project, environment = _prepare_repo(
                    work, name, table, args, master
                )
                projects[name], repos[name] = project, (repo, yaml_path, environment)
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in engines}
            for round_index in range(args.rounds):
                for name in rotated(engines, round_index):
                    if runs[name]:
                        # Every run writes every key (into a Redis already grown by round 1).
                        BASE._delete_keys(client, projects[name])
                    print(
                        f"round {round_index + 1}/{args.rounds}, {name}: materializing "
                        f"{BASE.START:%Y-%m-%d} .. {BASE.END:%Y-%m-%d} ...",
                        flush=True,
                    )
                    repo, yaml_path, environment = repos[name]
                    result, peaks = _run_child(repo, yaml_path, environment, "materialize", None)
                    entities = len(BASE._project_keys(client, projects[name]))
                    runs[name].append(
                        {
                            **result,
                            "entities": entities,
                            "driver_mb": peaks.driver_mb,
                            "executors_mb": list(peaks.executors_mb.values()),
                        }
                    )
                    # Printed at once: a later engine's failure keeps the earlier figures.
                    print(f"{name}: {json.dumps(runs[name][-1])}", flush=True)
            results = {name: summarize_runs(name_runs, rows) for name, name_runs in runs.items()}
            if REFERENCE in projects:
                for name in engines:
                    if name != REFERENCE:
                        compared, mismatched = _mismatches(
                            client,
                            projects[name],
                            projects[REFERENCE],
                            feast_fields_only=not name.startswith("ours"),
                        )
                        results[name]["mismatches"] = f"{mismatched:,} of {compared:,}"
            _print_materialization(results, args)
            if args.label_rows:
                labels = work / "labels.parquet"
                _write_labels(labels, rows=args.label_rows, users=args.users, seed=args.seed)
                print(f"\npoint-in-time join of {args.label_rows:,} label rows (spark backend)")
                for name in ("ours-spark", "ours-duckdb"):
                    if name not in repos:
                        continue
                    repo, yaml_path, environment = repos[name]
                    joined, peaks = _run_child(repo, yaml_path, environment, "join", labels)
                    profile = "spark" if "spark" in name else "duckdb"
                    executors = ", ".join(f"{mb:,.0f}" for mb in peaks.executors_mb.values())
                    print(
                        f"{profile:<8}{joined['rows']:>10,} rows {joined['seconds']:>7.1f} s  "
                        f"driver {peaks.driver_mb:,.0f} MB  executors {executors or '-'} MB"
                    )
    finally:
        if not args.keep:
            for project in projects.values():
                BASE._delete_keys(client, project)
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
