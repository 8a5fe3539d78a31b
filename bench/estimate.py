"""Benchmark: performance estimated without labels against the realized one, on the model
``churn train`` registers.

Builds a private Feast project and MLflow store, registers the champion as a user would
(``churn generate --users 2000 --days 60``, ``churn ingest --backfill``, ``churn apply``,
``churn train --trials 6``, the demo's sizes), loads it through the model checkpoint and
then, on windows the generator makes after the training data (seed 7, so other users'
days), measures:

1. calibration: the run's test ECE and ROC AUC, calibrated against uncalibrated;
2. covariate-shifted windows (one feature moved by -1.5 to +1.5 SD, or a subpopulation
   over-sampled: light users, weekends, low engagement), ``--windows`` of ``--rows``
   predictions each: |estimated - realized| ROC AUC and how often the realized value lies
   inside the interval;
3. 100 windows from the reference distribution: how often the retraining trigger's
   estimated-harm rule fires;
4. a harmful shift that moves no marginal (usage and engagement paired against each other
   within the window: the risk they carry cancels out) and the drift job's univariate
   severity on it, and a shift of a column the model does not use: which of them the
   trigger retrains on;
5. ``churn estimate --current`` on 1M predictions (3 runs, median and spread) beside
   scikit-learn's ``roc_auc_score`` on the same 1M labelled predictions in process.

    .venv/bin/python -m bench.estimate
    .venv/bin/python -m bench.estimate --windows 50 --rows 2000
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FEATURES = (
    "feature_1",
    "feature_2",
    "feature_ratio",
    "feature_log",
    "day_of_week_sin",
    "day_of_week_cos",
    "is_weekend",
)


def _churn(environment: dict[str, str], *args: str) -> str:
    completed = subprocess.run(
        [str(BIN / "churn"), *args], cwd=ROOT, env=environment, capture_output=True, text=True
    )
    if completed.returncode not in (0, 4):
        raise RuntimeError(
            f"churn {' '.join(args)} exited {completed.returncode}:\n"
            f"{completed.stdout[-2000:]}{completed.stderr[-2000:]}"
        )
    return completed.stdout


def prepare(folder: Path, *, trials: int, redis_url: str) -> tuple[dict[str, str], datetime]:
    """A private repo and store; the champion ``churn train`` registers. Returns the
    environment and the end of the training data."""
    project = f"bench_estimate_{uuid.uuid4().hex[:8]}"
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
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=7)
    started = time.perf_counter()
    raw = data_dir / "raw" / "events.parquet"
    _churn(
        environment,
        "generate",
        "--users",
        "2000",
        "--days",
        "60",
        "--end",
        end.date().isoformat(),
        "--out",
        str(raw),
    )
    _churn(environment, "ingest", "--backfill", str(raw))
    _churn(environment, "apply")
    _churn(environment, "train", "--no-progress", "--trials", str(trials))
    print(
        f"churn generate, ingest, apply, train --trials {trials}: "
        f"{time.perf_counter() - started:.0f} s"
    )
    return environment, end


def model_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """The churn_v1 columns of raw events (the on-demand views' formulas), complete rows."""
    frame = raw.dropna(subset=["feature_1", "feature_2"]).copy()
    day = frame["event_date"].dt.dayofweek.to_numpy()
    frame["feature_ratio"] = frame["feature_1"] / (frame["feature_2"] + 1e-8)
    frame["feature_log"] = np.log1p(np.maximum(frame["feature_1"], 0.0))
    frame["day_of_week_sin"] = np.sin(2 * np.pi * day / 7)
    frame["day_of_week_cos"] = np.cos(2 * np.pi * day / 7)
    frame["is_weekend"] = (day >= 5).astype(np.int64)
    return frame.reset_index(drop=True)


def _labels_for(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """Labels drawn from the generator's churn probability (covariate shift: P(y|x) holds)."""
    from materialize.generate import _churn_probability

    probability = _churn_probability(
        frame["feature_1"].to_numpy(),
        frame["feature_2"].to_numpy(),
        frame["event_date"].dt.dayofweek.to_numpy(),
    )
    return (np.random.default_rng(seed).random(len(frame)) < probability).astype(np.int64)


def shifted_windows(start: datetime, *, count: int, rows: int) -> list[tuple[str, pd.DataFrame]]:
    """``count`` windows of ``rows`` predictions: one feature moved, or a subpopulation
    over-sampled, from generator batches after the training data."""
    from materialize.generate import generate_raw_events

    end = start + timedelta(days=14)
    base = model_frame(generate_raw_events(users=20_000, days=14, end=end, seed=7))
    kinds: list[tuple[str, Any]] = []
    for amount in (-1.5, -1.0, -0.5, 0.5, 1.0, 1.5):
        for name in ("feature_1", "feature_2"):
            kinds.append((f"{name} {amount:+.1f} SD", {name: amount}))
    light = base["feature_1"] < base["feature_1"].quantile(0.25)
    low_engagement = base["feature_2"] < base["feature_2"].quantile(0.25)
    weekend = base["is_weekend"] == 1
    for label, mask in (
        ("light users", light),
        ("weekends", weekend),
        ("low engagement", low_engagement),
    ):
        kinds.append((f"{label} x4", mask))
    pools: dict[str, pd.DataFrame] = {}
    windows = []
    for index in range(count):
        label, how = kinds[index % len(kinds)]
        rng = np.random.default_rng(100 + index)
        if isinstance(how, dict):
            if label not in pools:
                pools[label] = model_frame(
                    generate_raw_events(users=20_000, days=14, end=end, seed=7, shifts=how)
                )
            pool = pools[label]
            chosen = pool.iloc[rng.choice(len(pool), size=rows, replace=False)]
        else:  # the subpopulation weighs four times as much as the others
            weights = np.where(how.to_numpy(), 4.0, 1.0)
            chosen = base.iloc[
                rng.choice(len(base), size=rows, replace=False, p=weights / weights.sum())
            ]
        windows.append((label, chosen.reset_index(drop=True)))
    return windows


def paired_against(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Usage and engagement re-paired within the window so that high usage meets low
    engagement: each column's values (marginals) are unchanged, their risks cancel."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    order_1 = np.argsort(out["feature_1"].to_numpy() + rng.normal(0, 0.5, len(out)))
    values_2 = np.sort(out["feature_2"].to_numpy())[::-1]
    feature_2 = np.empty(len(out))
    feature_2[order_1] = values_2
    out["feature_2"] = feature_2
    out["feature_ratio"] = out["feature_1"] / (out["feature_2"] + 1e-8)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=60)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--redis-url", default="127.0.0.1:6379,db=14")
    options = parser.parse_args()

    from sklearn.metrics import roc_auc_score

    with tempfile.TemporaryDirectory(prefix="bench-estimate-") as scratch:
        folder = Path(scratch)
        environment, end = prepare(folder, trials=options.trials, redis_url=options.redis_url)
        os.environ.update(
            {k: v for k, v in environment.items() if k.startswith(("CHURN", "MLFLOW"))}
        )
        from core.models import ModelRegistry
        from monitoring.comparison import compare_frames
        from monitoring.estimation import estimate_performance
        from monitoring.retrain import HarmSignals, decide_retraining, estimated_harm
        from monitoring.settings import MonitoringSettings

        registry = ModelRegistry.from_settings()
        version, model = registry.load_version("churn-predictor", alias="champion")
        run = registry.client.get_run(str(version.run_id))
        metrics, params = run.data.metrics, run.data.params
        print(
            f"\n1. calibration ({params.get('calibration.method')}), test window: ECE "
            f"{metrics['test_ece']:.4f} calibrated vs {metrics['test_ece_uncalibrated']:.4f} "
            f"uncalibrated; ROC AUC {metrics['test_roc_auc']:.4f} vs "
            f"{metrics['test_roc_auc_uncalibrated']:.4f} (difference "
            f"{metrics['test_roc_auc'] - metrics['test_roc_auc_uncalibrated']:+.4f})"
        )
        reference_auc = float(metrics["test_roc_auc"])
        settings = MonitoringSettings()
        min_rows, margin = settings.min_window_rows, settings.retrain_auc_margin

        def score(frame: pd.DataFrame) -> np.ndarray:
            return np.asarray(model.predict_proba(frame[list(FEATURES)])[:, 1])

        windows = shifted_windows(end, count=options.windows, rows=options.rows)
        errors, inside = [], []
        print(f"\n2. {len(windows)} covariate-shifted windows of {options.rows} predictions:")
        per_kind: dict[str, list[float]] = {}
        for index, (label, frame) in enumerate(windows):
            probabilities = score(frame)
            labels = _labels_for(frame, seed=index)
            estimate = estimate_performance(probabilities, min_rows=min_rows)
            realized = float(roc_auc_score(labels, probabilities))
            assert estimate.roc_auc is not None
            errors.append(abs(estimate.roc_auc.estimate - realized))
            inside.append(estimate.roc_auc.contains(realized))
            per_kind.setdefault(label, []).append(estimate.roc_auc.estimate - realized)
        for label, values in per_kind.items():
            print(f"   {label:<22} estimated - realized: mean {np.mean(values):+.4f}")
        print(
            f"   |estimated - realized| ROC AUC: mean {np.mean(errors):.4f}, median "
            f"{np.median(errors):.4f}, 90th percentile {np.quantile(errors, 0.9):.4f}, max "
            f"{np.max(errors):.4f}; within 0.02 in {np.mean(np.array(errors) <= 0.02):.0%}; "
            f"realized inside the 95% interval in {np.mean(inside):.0%} (goal >= 90%)"
        )

        from materialize.generate import generate_raw_events

        pool = model_frame(
            generate_raw_events(users=20_000, days=14, end=end + timedelta(days=14), seed=11)
        )
        fired = 0
        for index in range(100):
            rng = np.random.default_rng(1000 + index)
            frame = pool.iloc[rng.choice(len(pool), size=options.rows, replace=False)]
            estimate = estimate_performance(score(frame), min_rows=min_rows)
            fired += estimated_harm(estimate, reference_auc, margin=margin) is not None
        print(
            f"\n3. 100 reference windows: the trigger's estimated-harm rule fired {fired} "
            f"time(s) (goal <= 1; champion test ROC AUC {reference_auc:.4f}, margin {margin})"
        )

        print("\n4. a harmful shift below every univariate 'major', and an ignored column:")
        train_like = pool.iloc[np.random.default_rng(5).choice(len(pool), 20_000, replace=False)]
        harmful = paired_against(
            pool.iloc[np.random.default_rng(6).choice(len(pool), size=4000, replace=False)], 6
        )
        probabilities = score(harmful)
        realized = float(roc_auc_score(_labels_for(harmful, seed=9), probabilities))
        baseline = float(roc_auc_score(_labels_for(train_like, seed=9), score(train_like)))
        report = compare_frames(train_like[list(FEATURES)], harmful[list(FEATURES)], settings)
        estimate = estimate_performance(probabilities, min_rows=min_rows)
        harm = estimated_harm(estimate, reference_auc, margin=margin)
        action, _reasons, signal, _ = decide_retraining(
            report,
            now=datetime.now(UTC),
            last_retrained=None,
            cooldown=timedelta(hours=24),
            harm=HarmSignals(estimated=harm),
        )
        severities = {item.feature: item.severity for item in report.features}
        estimated_auc = estimate.roc_auc.estimate if estimate.roc_auc else float("nan")
        print(
            f"   usage against engagement: realized ROC AUC {realized:.4f} (unshifted "
            f"{baseline:.4f}, drop {baseline - realized:.4f}); univariate severities "
            f"{severities}; estimated {estimated_auc:.4f}; "
            f"trigger: {action} (signal {signal})"
        )
        ignored = train_like.copy().iloc[:4000]
        ignored["region_code"] = np.random.default_rng(1).normal(3.0, 1.0, len(ignored))
        reference_with = train_like.copy()
        reference_with["region_code"] = np.random.default_rng(2).normal(0.0, 1.0, len(train_like))
        columns = [*FEATURES, "region_code"]
        report = compare_frames(reference_with[columns], ignored[columns], settings)
        estimate = estimate_performance(score(ignored), min_rows=min_rows)
        harm = estimated_harm(estimate, reference_auc, margin=margin)
        action, _reasons, signal, alerts = decide_retraining(
            report,
            now=datetime.now(UTC),
            last_retrained=None,
            cooldown=timedelta(hours=24),
            harm=HarmSignals(estimated=harm),
        )
        print(
            f"   region_code (not a model feature) +3 SD: major {report.names_with('major')}; "
            f"trigger: {action} (signal {signal}; alerts {alerts})"
        )

        print("\n5. churn estimate on 1M predictions:")
        rng = np.random.default_rng(0)
        million = np.clip(rng.beta(1.2, 4.0, size=1_000_000), 0, 1)
        path = folder / "million.parquet"
        pd.DataFrame({"churn_probability": million}).to_parquet(path, index=False)
        times = []
        for attempt in range(3):
            started = time.perf_counter()
            _churn(
                environment,
                "estimate",
                "--current",
                str(path),
                "--out",
                str(folder / f"e{attempt}"),
            )
            times.append(time.perf_counter() - started)
        labels = (rng.random(len(million)) < million).astype(np.int64)
        sk_times = []
        for _ in range(3):
            started = time.perf_counter()
            roc_auc_score(labels, million)
            sk_times.append(time.perf_counter() - started)
        print(
            f"   churn estimate --current (1M rows, whole command): median "
            f"{statistics.median(times):.2f} s (runs {', '.join(f'{t:.2f}' for t in times)}; "
            f"goal < 2 s); in process, sklearn roc_auc_score on the same rows with labels: "
            f"median {statistics.median(sk_times):.2f} s"
        )
        started = time.perf_counter()
        estimate_performance(million, min_rows=min_rows)
        print(f"   estimate_performance alone, in process: {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
