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
   predictions each: |estimated - realized| ROC AUC, how often the realized value lies
   inside the interval and how wide the interval is, with the champion's calibration term
   (``test_estimate_calibration_sd``, core.estimate_shift) and, beside it, with label
   noise only (the previous design); with the support check (core.estimate_support: a
   window whose rows leave a feature's training range by more than
   ``estimate_max_out_of_range`` is ``out_of_support``, no figure), coverage and error
   over the windows with a claimed figure, and how many were refused, of which kinds;
3. 100 windows from the reference distribution: how often the retraining trigger's
   estimated-harm rule fires, and how many the support check refuses;
4. a harmful shift that moves no column's values (each user's usage and engagement, as a
   pair, moved to the weekday whose risk cancels theirs: heavy users on weekends, light
   users mid-week; no derived feature combines them with the day) with the drift job's
   univariate severities on it, and a shift of a column the model does not use: which of
   them the trigger retrains on;
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


def paired_with_weekdays(frame: pd.DataFrame, seed: int, *, noise: float) -> pd.DataFrame:
    """Each row's (usage, engagement) pair moved to another row's day so that the day's
    risk and the pair's cancel: the riskiest pairs (light, disengaged users) land on the
    safest days and the safest on weekends. Every column keeps its values (the pairs and
    the days are only re-matched), and no derived feature combines the pair with the day.
    ``noise`` (logit units) loosens the matching; labels follow the moved rows (the
    generator's P(churn | features) holds)."""
    from materialize.generate import _churn_probability

    rng = np.random.default_rng(seed)
    out = frame.reset_index(drop=True).copy()
    day = out["event_date"].dt.dayofweek.to_numpy()
    f1, f2 = out["feature_1"].to_numpy(), out["feature_2"].to_numpy()

    def logit(p: np.ndarray) -> np.ndarray:
        return np.asarray(np.log(p / (1 - p)))

    pair_risk = logit(_churn_probability(f1, f2, np.full(len(out), 2)))
    day_risk = logit(_churn_probability(np.full(len(out), 4.0), np.full(len(out), 4.0), day))
    pairs = np.argsort(-(pair_risk + rng.normal(0, noise, len(out))))  # riskiest first
    days = np.argsort(day_risk + rng.normal(0, noise, len(out)))  # safest day first
    moved = out.copy()
    for column in ("feature_1", "feature_2", "feature_ratio", "feature_log"):
        values = out[column].to_numpy()
        placed = np.empty_like(values)
        placed[days] = values[pairs]
        moved[column] = placed
    return moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=75)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--redis-url", default="127.0.0.1:6379,db=14")
    parser.add_argument(
        "--pairing-noise",
        type=float,
        nargs="+",
        default=[0.5, 1.5],
        help="Looseness (logit SD) of the harmful shift's matching; one line per value.",
    )
    options = parser.parse_args()

    from sklearn.metrics import roc_auc_score

    with tempfile.TemporaryDirectory(prefix="bench-estimate-") as scratch:
        folder = Path(scratch)
        environment, end = prepare(folder, trials=options.trials, redis_url=options.redis_url)
        os.environ.update(
            {k: v for k, v in environment.items() if k.startswith(("CHURN", "MLFLOW"))}
        )
        from core.estimate_shift import CalibrationTerm
        from core.estimate_support import out_of_range_shares, ranges_from_metrics
        from core.models import ModelRegistry
        from monitoring.comparison import compare_frames
        from monitoring.estimation import estimate_performance, limit_to_support
        from monitoring.multivariate import detect_domain_shift
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
        term = CalibrationTerm.from_metrics(dict(metrics))
        print(
            f"   calibration term carried with the version: {term.per_distance:.4f} ROC AUC SD "
            f"per unit of distance of the window's probabilities from the test window's "
            f"(constant summary {term.calibration_sd:.4f})"
        )
        settings = MonitoringSettings()
        min_rows, margin = settings.min_window_rows, settings.retrain_auc_margin
        training_ranges = ranges_from_metrics(dict(metrics))
        limit = settings.estimate_max_out_of_range
        print(
            f"   training ranges carried with the version: {len(training_ranges)} features; "
            f"out-of-range limit {limit:.0%}"
        )

        def supported(estimate: Any, frame: pd.DataFrame) -> Any:
            """The estimate with the support check churn estimate applies."""
            columns = {name: frame[name].to_numpy(dtype=np.float64) for name in training_ranges}
            shares = out_of_range_shares(columns, training_ranges)
            return limit_to_support(estimate, shares, limit=limit)

        def score(frame: pd.DataFrame) -> np.ndarray:
            return np.asarray(model.predict_proba(frame[list(FEATURES)])[:, 1])

        from materialize.generate import generate_raw_events

        pool = model_frame(
            generate_raw_events(users=20_000, days=14, end=end + timedelta(days=14), seed=11)
        )
        ranges = {name: (pool[name].min(), pool[name].max()) for name in FEATURES[:4]}

        def outside_share(frame: pd.DataFrame) -> float:
            """Share of rows with a feature outside the unshifted rows' range."""
            outside = np.zeros(len(frame), dtype=bool)
            for name, (low, high) in ranges.items():
                outside |= (frame[name] < low).to_numpy() | (frame[name] > high).to_numpy()
            return float(outside.mean())

        windows = shifted_windows(end, count=options.windows, rows=options.rows)
        errors: list[float] = []
        designs = ("distance-scaled term", "constant term", "label noise only")
        inside: dict[str, list[bool]] = {design: [] for design in designs}
        widths: dict[str, list[float]] = {design: [] for design in designs}
        distances: dict[str, float] = {}
        print(f"\n2. {len(windows)} covariate-shifted windows of {options.rows} predictions:")
        per_kind: dict[str, list[tuple[float, bool]]] = {}
        outside: dict[str, float] = {}
        claimed: list[bool] = []  # per window: a figure claimed (the support check passed)
        refused_kinds: dict[str, int] = {}
        worst_share: dict[str, float] = {}
        for index, (label, frame) in enumerate(windows):
            outside[label] = outside_share(frame)
            probabilities = score(frame)
            labels = _labels_for(frame, seed=index)
            realized = float(roc_auc_score(labels, probabilities))
            distances[label] = term.distance(probabilities)
            checked = supported(
                estimate_performance(
                    probabilities, min_rows=min_rows, calibration_sd=term.for_window(probabilities)
                ),
                frame,
            )
            claimed.append(checked.status == "ok")
            worst_share[label] = max((checked.out_of_range or {0: 0.0}).values())
            if checked.status == "out_of_support":
                refused_kinds[label] = refused_kinds.get(label, 0) + 1
            for design, sd in zip(
                designs,
                (term.for_window(probabilities), term.calibration_sd, 0.0),
                strict=True,
            ):
                estimate = estimate_performance(probabilities, min_rows=min_rows, calibration_sd=sd)
                assert estimate.roc_auc is not None
                inside[design].append(estimate.roc_auc.contains(realized))
                widths[design].append(estimate.roc_auc.high - estimate.roc_auc.low)
            errors.append(abs(estimate.roc_auc.estimate - realized))
            per_kind.setdefault(label, []).append(
                (estimate.roc_auc.estimate - realized, inside[designs[0]][-1])
            )
        for label, values in per_kind.items():
            gaps = [gap for gap, _ in values]
            print(
                f"   {label:<22} estimated - realized: mean {np.mean(gaps):+.4f}; inside "
                f"{sum(hit for _, hit in values)}/{len(values)}; distance "
                f"{distances[label]:.2f}; rows outside the unshifted range {outside[label]:.1%}; "
                f"worst feature outside the training range {worst_share[label]:.1%} "
                f"({'refused' if label in refused_kinds else 'claimed'})"
            )
        kind_bias = [abs(np.mean([gap for gap, _ in values])) for values in per_kind.values()]
        print(
            f"   |estimated - realized| ROC AUC: mean {np.mean(errors):.4f}, median "
            f"{np.median(errors):.4f}, 90th percentile {np.quantile(errors, 0.9):.4f}, max "
            f"{np.max(errors):.4f}; within 0.02 in {np.mean(np.array(errors) <= 0.02):.0%}; "
            f"largest mean bias of a shift kind {max(kind_bias):.4f}"
        )
        for design in inside:
            print(
                f"   {design}: realized inside the 95% interval in {np.mean(inside[design]):.0%}"
                f" (goal >= 90%); interval width mean {np.mean(widths[design]):.4f}, max "
                f"{np.max(widths[design]):.4f}"
            )
        kept = np.array(claimed)
        kept_errors = np.array(errors)[kept]
        kept_inside = np.array(inside[designs[0]])[kept]
        print(
            f"   with the support check (limit {limit:.0%} of rows outside a feature's "
            f"training range): figure claimed in {kept.sum()}/{len(kept)} windows; realized "
            f"inside the interval in {kept_inside.sum()}/{len(kept_inside)} "
            f"({np.mean(kept_inside):.0%}, goal >= 90%); |estimated - realized| mean "
            f"{np.mean(kept_errors):.4f}, 90th percentile {np.quantile(kept_errors, 0.9):.4f}, "
            f"max {np.max(kept_errors):.4f}"
        )
        print(
            f"   refused (out_of_support): {len(kept) - kept.sum()} windows: "
            + (", ".join(f"{kind} {n}" for kind, n in refused_kinds.items()) or "none")
        )

        fired = refused = 0
        for index in range(100):
            rng = np.random.default_rng(1000 + index)
            frame = pool.iloc[rng.choice(len(pool), size=options.rows, replace=False)]
            probabilities = score(frame)
            estimate = supported(
                estimate_performance(
                    probabilities, min_rows=min_rows, calibration_sd=term.for_window(probabilities)
                ),
                frame,
            )
            refused += estimate.status == "out_of_support"
            fired += estimated_harm(estimate, reference_auc, margin=margin) is not None
        print(
            f"\n3. 100 reference windows: the trigger's estimated-harm rule fired {fired} "
            f"time(s) (goal <= 1; champion test ROC AUC {reference_auc:.4f}, margin {margin}); "
            f"refused as out of support: {refused}"
        )

        def trigger(
            report: Any, probabilities: np.ndarray, frame: pd.DataFrame
        ) -> tuple[Any, str, str, list[str]]:
            """The window's estimate and what the retraining trigger decides on it."""
            estimate = supported(
                estimate_performance(
                    probabilities, min_rows=min_rows, calibration_sd=term.for_window(probabilities)
                ),
                frame,
            )
            harm = estimated_harm(estimate, reference_auc, margin=margin)
            action, _reasons, signal, alerts = decide_retraining(
                report,
                now=datetime.now(UTC),
                last_retrained=None,
                cooldown=timedelta(hours=24),
                harm=HarmSignals(
                    estimated=harm,
                    unsupported=estimate.note if estimate.status == "out_of_support" else None,
                ),
            )
            return estimate, action, str(signal), list(alerts)

        print("\n4. a harmful shift below every univariate 'major', and an ignored column:")
        train_like = pool.iloc[np.random.default_rng(5).choice(len(pool), 20_000, replace=False)]
        sample = pool.iloc[np.random.default_rng(6).choice(len(pool), size=4000, replace=False)]
        baseline = float(roc_auc_score(_labels_for(sample, seed=9), score(sample)))
        for noise in options.pairing_noise:
            harmful = paired_with_weekdays(sample, 6, noise=noise)
            probabilities = score(harmful)
            realized = float(roc_auc_score(_labels_for(harmful, seed=9), probabilities))
            report = compare_frames(train_like[list(FEATURES)], harmful[list(FEATURES)], settings)
            estimate, action, signal, _ = trigger(report, probabilities, harmful)
            severities = {item.feature: item.severity for item in report.features}
            joint = detect_domain_shift(
                train_like[list(FEATURES)], harmful[list(FEATURES)], list(FEATURES), settings
            )
            auc = estimate.roc_auc
            low, mid, high = (auc.low, auc.estimate, auc.high) if auc else (np.nan,) * 3
            print(
                f"   usage and engagement moved to the weekday that cancels them (noise "
                f"{noise:g}): realized ROC AUC {realized:.4f} (same rows unshifted "
                f"{baseline:.4f}, drop {baseline - realized:.4f}); worst univariate severity "
                f"{max(severities.values(), key=['none', 'minor', 'major'].index)} "
                f"{severities}; data quality {report.quality.severity}; domain classifier "
                f"AUROC {joint.auroc or float('nan'):.3f} ({joint.severity}); estimated "
                f"{mid:.4f} ({low:.4f} - {high:.4f}); trigger: {action} (signal {signal})"
            )
        ignored = train_like.copy().iloc[:4000]
        ignored["region_code"] = np.random.default_rng(1).normal(3.0, 1.0, len(ignored))
        reference_with = train_like.copy()
        reference_with["region_code"] = np.random.default_rng(2).normal(0.0, 1.0, len(train_like))
        columns = [*FEATURES, "region_code"]
        report = compare_frames(reference_with[columns], ignored[columns], settings)
        _, action, signal, alerts = trigger(report, score(ignored), ignored)
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
