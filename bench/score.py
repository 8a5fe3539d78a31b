"""Benchmark: ``churn score`` on many users against the point-in-time retrieval alone.

Builds a private Feast project (production profile: Redis online store, DuckDB offline
store), registers the champion ``churn train`` trains on the demo's history (``churn
generate``, ``churn ingest``, ``churn apply``, ``churn train`` as a user types them, with
the CLI's default trials or ``--trials``), replaces the offline table by ``--users`` users
with ``--snapshots`` rows each in the 20 days before the scoring time, then runs, each in
its own process so peak RSS is its own:

1. the retrieval alone: ``get_historical_features`` through the ``churn_v1`` service for
   every user at ``--at``, in the same chunks ``churn score`` uses;
2. ``churn score --reasons 0`` (scores only);
3. ``churn score`` (scores and the top 3 reasons), as a user types it;
4. the retrieval alone again (the load of a shared machine drifts during the runs).

It prints ``churn score``'s summary (model, trees, engine), wall time, users/s and peak RSS
of each (and of its largest child process: ``churn score`` loads the model in a second
process), and the overhead of scoring on top of the mean retrieval (goal: under 25%).

    .venv/bin/python -m bench.score                       # 1,000,000 users
    .venv/bin/python -m bench.score --users 200000 --chunk-rows 50000

Run it as a module from the checkout root (``bench/materialize.py`` would shadow the
``materialize`` package if this folder headed ``sys.path``). The temporary folder is
removed at the end; the scoring itself writes nothing to Redis.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GOAL_OVERHEAD = 0.25


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child_peak_mb() -> float:
    """The largest peak of the run's own child processes (churn score's registry worker)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _churn(environment: dict[str, str], *args: str) -> str:
    """Run one ``churn`` command as a user types it; its output, or an error with it."""
    completed = subprocess.run(
        [str(BIN / "churn"), *args], cwd=ROOT, env=environment, capture_output=True, text=True
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"churn {' '.join(args)} exited {completed.returncode}:\n"
            f"{completed.stdout[-2000:]}{completed.stderr[-2000:]}"
        )
    return completed.stdout


def prepare(
    folder: Path, *, users: int, snapshots: int, at: datetime, redis_url: str, trials: int | None
) -> dict[str, str]:
    """Repo copy, champion trained by ``churn train``, then the big offline table.

    The champion is what ``churn train`` registers from the demo's history (``churn
    generate``, ``churn ingest``, ``churn apply``, ``churn train`` with the CLI's default
    trials unless ``trials`` is given); then the offline table is replaced by ``users``
    users with ``snapshots`` rows each in the 20 days before ``at``. Returns the settings.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    project = f"bench_score_{uuid.uuid4().hex[:8]}"
    repo = folder / "feature_repo"
    shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    for yaml_file in repo.glob("feature_store*.yaml"):
        text = re.sub(r"^project: .*$", f"project: {project}", yaml_file.read_text(), flags=re.M)
        yaml_file.write_text(text)
    data_dir = folder / "data"
    (folder / "mlflow").mkdir()
    environment = {
        **os.environ,
        "CHURN_DATA_DIR": str(data_dir),
        "CHURN_FEAST_REPO_PATH": str(repo),
        "CHURN_FEAST_PROFILE": "production",
        "CHURN_REDIS_URL": redis_url,
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow' / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    started = time.perf_counter()
    raw = data_dir / "raw" / "events.parquet"
    _churn(environment, "generate", "--out", str(raw))
    helped = _churn(environment, "ingest", "--help")
    _churn(environment, "ingest", *(["--backfill"] if "--backfill" in helped else []), str(raw))
    _churn(environment, "apply")
    train = ["train", "--no-progress", *(["--trials", str(trials)] if trials else [])]
    _churn(environment, *train)
    print(
        f"churn generate, ingest, apply, {' '.join(train)}: {time.perf_counter() - started:.0f} s"
    )
    rng = np.random.default_rng(0)
    rows = users * snapshots
    end_us = int(at.timestamp() * 1_000_000)
    event = end_us - rng.integers(60, 20 * 86_400, size=rows) * 1_000_000
    table = pa.table(
        {
            "user_id": pa.array(np.repeat(np.arange(1, users + 1, dtype=np.int64), snapshots)),
            "event_timestamp": pa.array(event * 1000, pa.timestamp("ns", tz="UTC")),
            "created": pa.array(event * 1000, pa.timestamp("ns", tz="UTC")),
            "feature_1": pa.array(rng.gamma(2.0, 3.0, rows)),
            "feature_2": pa.array(rng.normal(0.0, 2.0, rows)),
        }
    )
    offline = data_dir / "offline" / "user_features.parquet"
    schema = pq.read_schema(offline)  # the ingested table's columns and types
    if "ingested_at" in schema.names:  # when the row arrived: here, when it happened
        table = table.append_column("ingested_at", table.column("created"))
    pq.write_table(table.select(schema.names).cast(schema), offline)
    return environment


def child_retrieve(at: datetime, chunk_rows: int) -> dict[str, Any]:
    """The retrieval alone, chunked like churn score: every user of the table at ``at``.

    Through the same offline-compute backend and store checkpoint ``churn score`` uses, so
    the difference between the runs is the scoring.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    from core.compute import offline_compute
    from core.feast_adapter.services import resolve_service_features
    from core.feast_store import open_feature_store
    from core.settings import DataSettings

    started = time.perf_counter()
    store = open_feature_store()
    compute = offline_compute(store)
    service = store.get_feature_service("churn_v1")
    columns = ["user_id", "event_timestamp", *resolve_service_features(store, "churn_v1").columns]
    ids = pq.read_table(DataSettings().user_features_path, columns=["user_id"])
    users = pd.unique(ids.column("user_id").to_numpy())
    users.sort()
    rows = 0
    for begin in range(0, len(users), chunk_rows):
        chunk = users[begin : begin + chunk_rows]
        entity = pd.DataFrame({"user_id": chunk, "event_timestamp": pd.Timestamp(at)})
        with compute.historical_features(
            entity,
            label="bench-score",
            features=service,
            full_feature_names=True,
            filter_by_created_timestamp=True,
        ) as job:
            joined = compute.retrieval_to_pandas(job, columns, label="bench-score")
        rows += len(joined)
    return {
        "seconds": time.perf_counter() - started,
        "rows": rows,
        "peak_rss_mb": _peak_mb(),
        "child_peak_rss_mb": _child_peak_mb(),
    }


def child_score(arguments: list[str]) -> dict[str, Any]:
    """``churn score <arguments>`` in this process."""
    from cli.main import _install_warning_display, build_app

    _install_warning_display()
    started = time.perf_counter()
    try:
        build_app()(["score", *arguments], standalone_mode=False)
    except SystemExit as exit_:  # typer.Exit(0) is not raised on success
        if exit_.code:
            raise
    return {
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": _peak_mb(),
        "child_peak_rss_mb": _child_peak_mb(),
    }


def _run_child(environment: dict[str, str], *arguments: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.score", "--child", *arguments],
        cwd=ROOT,
        env=environment,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = completed.stdout.strip().splitlines()
    print("\n".join(f"    {line}" for line in lines[:-1]))
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--snapshots", type=int, default=2, help="Offline rows per user.")
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--trials", type=int, help="churn train --trials (default: the CLI's)")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        kind, *rest = args.child
        if kind == "retrieve":
            print(json.dumps(child_retrieve(datetime.fromisoformat(rest[0]), int(rest[1]))))
        else:
            print(json.dumps(child_score(rest)))
        return
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    redis_url = os.environ.get("CHURN_REDIS_URL", "127.0.0.1:6379")
    at = datetime.now(UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix="bench-score-") as folder:
        started = time.perf_counter()
        environment = prepare(
            Path(folder),
            users=args.users,
            snapshots=args.snapshots,
            at=at,
            redis_url=redis_url,
            trials=args.trials,
        )
        print(
            f"prepared {args.users:,} users x {args.snapshots} rows and the champion "
            f"in {time.perf_counter() - started:.1f} s (its trees: see `model:` below)"
        )
        out = Path(folder) / "scores.parquet"
        common = ["--at", at.isoformat(), "--out", str(out), "--chunk-rows", str(args.chunk_rows)]
        runs = {
            "retrieval alone": _run_child(
                environment, "retrieve", at.isoformat(), str(args.chunk_rows)
            ),
            "churn score --reasons 0": _run_child(environment, "score", *common, "--reasons", "0"),
            "churn score (3 reasons)": _run_child(environment, "score", *common),
            # Again at the end: on a shared machine the load drifts during the runs.
            "retrieval alone (again)": _run_child(
                environment, "retrieve", at.isoformat(), str(args.chunk_rows)
            ),
        }
        base = (runs["retrieval alone"]["seconds"] + runs["retrieval alone (again)"]["seconds"]) / 2
        print(f"\noverheads against the mean of the two retrieval runs ({base:.1f} s)")
        print(
            f"\n{'run':<26} {'wall s':>8} {'users/s':>10} {'peak RSS MB':>12} "
            f"{'child peak MB':>14} {'overhead':>9}"
        )
        for name, run in runs.items():
            overhead = run["seconds"] / base - 1
            print(
                f"{name:<26} {run['seconds']:>8.1f} {args.users / run['seconds']:>10,.0f} "
                f"{run['peak_rss_mb']:>12,.0f} {run['child_peak_rss_mb']:>14,.0f} "
                f"{overhead:>+9.1%}"
            )
        for name in ("churn score --reasons 0", "churn score (3 reasons)"):
            overhead = runs[name]["seconds"] / base - 1
            verdict = "meets" if overhead < GOAL_OVERHEAD else "misses"
            print(f"{name}: {verdict} the {GOAL_OVERHEAD:.0%} overhead goal ({overhead:+.1%})")


if __name__ == "__main__":
    main()
