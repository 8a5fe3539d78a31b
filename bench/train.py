"""Benchmark: time to a registered model on demo-sized data, per model family.

Builds a private data folder and Feast repo (embedded profile) with the same commands as
the demo (`churn generate`, `churn ingest --backfill`, `feast apply`), then runs `churn
train` once per model family in its own process, as a user would, and reads the outcome
back from MLflow.
Prints, side by side: wall time to a registered model, tuning time, trials per minute,
pruned trials, refit time, best validation ROC AUC and test ROC AUC.

    .venv/bin/python -m bench.train                       # 20 trials per family
    .venv/bin/python -m bench.train --trials 50 --families hist_gradient_boosting
    .venv/bin/python -m bench.train --workers 2           # two tuning processes each

The reference family (GradientBoostingClassifier) is slow: about 15-30 s per full fit on
demo data, so 50 trials take tens of minutes; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FAMILIES = ("hist_gradient_boosting", "gradient_boosting")


def _run(command: list[str], env: dict[str, str], cwd: Path) -> str:
    completed = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    if completed.returncode not in (0, 3):  # 3: trained but below the gate, still a result
        raise SystemExit(f"{' '.join(command)} failed:\n{completed.stdout}{completed.stderr}")
    return completed.stdout


def prepare(folder: Path, *, users: int, days: int, end: str, env: dict[str, str]) -> Path:
    """Generate, ingest and apply demo-sized data; return the private Feast repo."""
    repo = folder / "feature_repo"
    shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    project = f"bench_train_{uuid.uuid4().hex[:8]}"
    for yaml_file in repo.glob("feature_store*.yaml"):
        text = re.sub(r"^project: .*$", f"project: {project}", yaml_file.read_text(), flags=re.M)
        yaml_file.write_text(text)
    churn = str(BIN / "churn")
    raw = folder / "data" / "raw" / "events.parquet"
    _run(
        [churn, "generate", "--users", str(users), "--days", str(days), "--end", end],
        env,
        folder,
    )
    # A first, historical load (as `make demo` does): rows count from their event time.
    print(_run([churn, "ingest", "--backfill", str(raw)], env, folder).strip().splitlines()[0])
    yaml_path = repo / "feature_store.embedded.yaml"
    _run([str(BIN / "feast"), "-f", str(yaml_path), "apply"], env, repo)
    return repo


def train(
    family: str, *, repo: Path, trials: int, timeout: int, workers: int, env: dict[str, str]
) -> dict[str, Any]:
    """Run `churn train` for one family; return its figures read back from MLflow."""
    model_name = f"bench-{family}"
    command = [
        str(BIN / "churn"),
        "train",
        "--repo",
        str(repo),
        "--profile",
        "embedded",
        "--model-family",
        family,
        "--trials",
        str(trials),
        "--timeout",
        str(timeout),
        "--workers",
        str(workers),
        "--model-name",
        model_name,
        "--experiment",
        "bench-train",
        "--no-progress",
    ]
    started = time.monotonic()
    _run(command, env, repo.parent)
    wall = time.monotonic() - started

    from core.models import mlflow_client

    client = mlflow_client(env["MLFLOW_TRACKING_URI"])
    versions = client.search_model_versions(f"name = '{model_name}'")
    run_id = versions[0].run_id if versions else None
    if run_id is None:  # below the gate: the latest parent run of the family
        experiment = client.get_experiment_by_name("bench-train")
        [run] = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"params.model_family = '{family}' and tags.`gate.passed` = 'false'",
            max_results=1,
        )
    else:
        run = client.get_run(run_id)
    metrics = run.data.metrics
    return {
        "family": family,
        "registered": "yes" if versions else "no (gate)",
        "wall_s": wall,
        "tuning_s": metrics["tuning_seconds"],
        "trials": int(metrics["trials_complete"] + metrics["trials_pruned"]),
        "pruned": int(metrics["trials_pruned"]),
        "trials_per_min": metrics["trials_per_minute"],
        "refit_s": metrics["refit_seconds"],
        "val_auc": metrics["val_roc_auc"],
        "test_auc": metrics["test_roc_auc"],
        "rows": int(run.data.params["data.rows"]),
    }


def print_table(results: list[dict[str, Any]]) -> None:
    """Families side by side, one row per figure."""
    rows = [
        ("registered", "registered", "{}"),
        ("time to registered model (s)", "wall_s", "{:.1f}"),
        ("tuning time (s)", "tuning_s", "{:.1f}"),
        ("trials (pruned)", None, None),
        ("trials / minute", "trials_per_min", "{:.1f}"),
        ("refit on train+val (s)", "refit_s", "{:.1f}"),
        ("best val ROC AUC", "val_auc", "{:.4f}"),
        ("test ROC AUC", "test_auc", "{:.4f}"),
        ("training rows", "rows", "{}"),
    ]
    width = max(len(label) for label, _, _ in rows) + 2
    header = "".join(f"{r['family']:>26}" for r in results)
    print(f"{'':<{width}}{header}")
    for label, key, fmt in rows:
        if key is None or fmt is None:
            values = [f"{r['trials']} ({r['pruned']})" for r in results]
        else:
            values = [fmt.format(r[key]) for r in results]
        print(f"{label:<{width}}" + "".join(f"{value:>26}" for value in values))


def main() -> None:
    """Parse options, prepare the data once, train each family, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000, help="demo default: 2000")
    parser.add_argument("--days", type=int, default=60, help="demo default: 60")
    parser.add_argument("--end", default="2026-11-01", help="fixed, for comparable runs")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--timeout", type=int, default=3600, help="tuning budget per family (s)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-train-"))
    env = {
        **os.environ,
        "CHURN_DATA_DIR": str(folder / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'data' / 'mlflow' / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    (folder / "data" / "mlflow").mkdir(parents=True)
    try:
        repo = prepare(folder, users=args.users, days=args.days, end=args.end, env=env)
        results = []
        for family in args.families:
            print(f"training {family}: {args.trials} trials, {args.workers} worker(s) ...")
            results.append(
                train(
                    family,
                    repo=repo,
                    trials=args.trials,
                    timeout=args.timeout,
                    workers=args.workers,
                    env=env,
                )
            )
        print(f"\nnproc {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} at the end")
        print_table(results)
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
