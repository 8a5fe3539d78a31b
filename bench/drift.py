"""Benchmark of the drift statistics: 10 features x 1M rows (reference and current each).

Run from the checkout root: ``.venv/bin/python -m bench.drift [--rows N] [--repeat R]``.
Prints the best and median wall time of ``compare_frames`` (PSI, KS or chi-square, effect
sizes, severity, plot histograms) with the default thread count and with one thread, the
domain classifier on the sample ``churn drift`` draws of each window, and the time
``scipy.stats.ks_2samp`` takes for one column pair for comparison. Goal: under 2 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import pandas as pd

from monitoring.comparison import compare_frames
from monitoring.settings import MonitoringSettings

GOAL_SECONDS = 2.0


def make_frames(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Eight continuous features (two of them shifted, some nulls) and two binary ones."""
    rng = np.random.default_rng(seed)

    def sample(shift: float) -> pd.DataFrame:
        columns: dict[str, np.ndarray] = {}
        for index in range(8):
            values = rng.normal(shift if index < 2 else 0.0, 1.0, size=rows)
            values[rng.random(rows) < 0.01] = np.nan
            columns[f"continuous_{index}"] = values
        for index in range(2):
            columns[f"binary_{index}"] = (rng.random(rows) < 0.3 + shift / 10).astype(np.int64)
        return pd.DataFrame(columns)

    return sample(0.0), sample(0.2)


def time_runs(
    reference: pd.DataFrame, current: pd.DataFrame, settings: MonitoringSettings, repeat: int
) -> tuple[list[float], list[float]]:
    """Wall and CPU times of ``repeat`` comparisons.

    CPU time is reported too because the machine is shared: other processes stretch the
    wall time of a single-threaded run, hardly its CPU time.
    """
    walls, cpus = [], []
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        compare_frames(reference, current, settings)
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - started_cpu)
    return walls, cpus


def time_domain_classifier(
    reference: pd.DataFrame, current: pd.DataFrame, settings: MonitoringSettings, repeat: int
) -> None:
    """The domain classifier on the sample ``churn drift`` draws (the default cap a side),
    beside the univariate comparison of the same rows."""
    from monitoring.multivariate import detect_domain_shift

    rows, seed = settings.multivariate_max_rows, settings.multivariate_seed
    samples = [
        frame.sample(n=min(rows, len(frame)), random_state=seed) for frame in (reference, current)
    ]
    features = list(reference.columns)
    walls, verdicts = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        verdicts.append(detect_domain_shift(*samples, features, settings))
        walls.append(time.perf_counter() - started)
    baseline, _ = time_runs(*samples, settings, repeat)
    verdict = verdicts[-1]
    print(
        f"  domain classifier on {len(samples[0]):,} + {len(samples[1]):,} sampled rows: wall "
        f"median {statistics.median(walls):.3f} s (min {min(walls):.3f}, max {max(walls):.3f}); "
        f"compare_frames on the same rows {statistics.median(baseline):.3f} s; AUROC "
        f"{verdict.auroc:.3f} ({verdict.severity}, separating {', '.join(verdict.top_features)})"
    )


def main() -> None:
    """Build the frames, warm up (imports), time the comparison."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    reference, current = make_frames(args.rows)
    settings = MonitoringSettings()
    compare_frames(reference.head(20_000), current.head(20_000), settings)  # imports scipy
    print(f"drift: 10 features x {args.rows:,} rows (reference and current each)")
    print(f"  load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for label, workers in (("default threads", 0), ("one thread", 1)):
        times, cpus = time_runs(
            reference, current, settings.model_copy(update={"workers": workers}), args.repeat
        )
        best, median = min(times), statistics.median(times)
        verdict = "meets" if median < GOAL_SECONDS else "MISSES"
        print(
            f"  compare_frames ({label}): wall best {best:.3f} s, median {median:.3f} s "
            f"({verdict} the {GOAL_SECONDS:g} s goal); CPU median {statistics.median(cpus):.3f} s"
        )
    time_domain_classifier(reference, current, settings, args.repeat)
    from scipy import stats

    column = "continuous_0"
    started = time.perf_counter()
    stats.ks_2samp(reference[column].dropna(), current[column].dropna())
    elapsed = time.perf_counter() - started
    print(f"  for comparison, scipy.stats.ks_2samp on one column: {elapsed:.3f} s")


if __name__ == "__main__":
    main()
