"""Drift statistics from Spark aggregates, for windows too large for one process.

Only small aggregates reach the driver: counts, means, quantile edges and per-bin counts
(each executor bins its own partition with ``np.searchsorted`` inside ``mapInArrow``).

- PSI is exact: the reference's quantile edges come from Spark's exact ``percentile``
  (linear interpolation, as numpy's default) and both samples are counted over them, the
  same bins as :func:`monitoring.statistics.quantile_edges` / ``bin_counts``.
- KS has a stated, computed error bound: both empirical CDFs are counted exactly at a grid
  of ``ks_grid`` pooled quantiles (``percentile_approx``; the edges need not be exact).
  The largest CDF difference on the grid, ``D_grid``, is reported. Between two grid edges
  both CDFs are monotone, so the true statistic is at most ``D_grid`` plus what one bin
  can add: ``D_grid <= D <= D_grid + ks_error_bound``, the bound computed from the same
  counts for every column (about 2 / ks_grid for continuous data). The p-value is
  Smirnov's asymptotic one at ``D_grid`` (``ks_2samp``'s ``method='asymp'``).
- Categorical columns (at most ``max_categories`` distinct values) are compared from
  exact per-value counts (PSI over categories, chi-square).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from monitoring.comparison import DriftReport
from monitoring.settings import MonitoringSettings
from monitoring.severity import assign_severity
from monitoring.statistics import (
    HISTOGRAM_BINS,
    Distribution,
    DriftInputError,
    FeatureDrift,
    Role,
    SampleSummary,
    adjust_p_values,
    compare_category_counts,
    compare_empty,
    compare_insufficient,
    continuous_drift,
    kolmogorov_sf,
    too_few,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import Column
    from pyspark.sql import DataFrame as SparkFrame

# Grid of pooled quantiles for the KS statistic; the bound shrinks as 1 / grid.
KS_GRID = 1000
_APPROX_ACCURACY = 100_000  # percentile_approx: rank error at most n / accuracy


def _finite(column: Column) -> Column:
    from pyspark.sql import functions as F

    return column.isNotNull() & ~F.isnan(column) & (F.abs(column) != F.lit(float("inf")))


def _values(frame: SparkFrame, name: str) -> SparkFrame:
    """The column as doubles, finite values only, in one column named ``v``."""
    from pyspark.sql import functions as F

    value = F.col(f"`{name}`").cast("double")
    return frame.select(value.alias("v")).where(_finite(F.col("v")))


def summarize_on_spark(frame: SparkFrame, name: str) -> SampleSummary:
    """Count, missing count, mean and (population) standard deviation of one column."""
    from pyspark.sql import functions as F

    value = F.col(f"`{name}`").cast("double")
    finite = _finite(value)
    row = frame.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.when(finite, 1).otherwise(0)).alias("count"),
        F.avg(F.when(finite, value)).alias("mean"),
        F.stddev_pop(F.when(finite, value)).alias("std"),
    ).first()
    assert row is not None  # an aggregate always returns one row
    count = int(row["count"] or 0)
    if count == 0:
        return SampleSummary(count=0, nulls=int(row["rows"]), mean=None, std=None)
    return SampleSummary(
        count=count, nulls=int(row["rows"]) - count, mean=float(row["mean"]), std=float(row["std"])
    )


def bin_counts_on_spark(frame: SparkFrame, name: str, edges: np.ndarray) -> np.ndarray:
    """Counts of bins ``(-inf, e1], (e1, e2], ..., (ek, inf)`` of a column's finite values.

    Each executor counts its own partition with ``np.searchsorted``; only ``k + 1``
    counts per partition travel.
    """
    import pyarrow as pa
    from pyspark.sql import functions as F

    inner = [float(edge) for edge in edges]

    def count(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import numpy as np

        sorted_edges = np.asarray(inner, dtype=np.float64)
        totals = np.zeros(sorted_edges.size + 1, dtype=np.int64)
        for batch in batches:
            values = batch.column(0).to_numpy(zero_copy_only=False)
            # side="left": a value equal to an edge belongs to the bin that edge closes.
            bins = np.searchsorted(sorted_edges, values, side="left")
            totals += np.bincount(bins, minlength=totals.size)
        yield pa.RecordBatch.from_arrays(
            [pa.array(np.arange(totals.size, dtype=np.int64)), pa.array(totals)],
            names=["bin", "n"],
        )

    rows = (
        _values(frame, name)
        .mapInArrow(count, "bin long, n long")
        .groupBy("bin")
        .agg(F.sum("n").alias("n"))
        .collect()
    )
    counts = np.zeros(len(inner) + 1, dtype=np.int64)
    for row in rows:
        counts[int(row["bin"])] = int(row["n"])
    return counts


def exact_quantile_edges(frame: SparkFrame, name: str, bins: int) -> np.ndarray:
    """Inner PSI edges at the reference's exact quantiles, ties merged (as in-process)."""
    from pyspark.sql import functions as F

    probabilities = (np.arange(1, bins) / bins).tolist()
    row = _values(frame, name).agg(F.percentile("v", probabilities).alias("q")).first()
    assert row is not None
    return np.unique(np.asarray(row["q"], dtype=np.float64))


def ks_on_grid(
    reference: SparkFrame, current: SparkFrame, name: str, *, grid: int = KS_GRID
) -> tuple[float, float]:
    """KS statistic on a grid of pooled quantiles and its error bound.

    Returns:
        ``(D_grid, bound)`` with ``D_grid <= D <= D_grid + bound`` for the exact two-sample
        statistic ``D``.
    """
    from pyspark.sql import functions as F

    pooled = _values(reference, name).unionByName(_values(current, name))
    probabilities = (np.arange(1, grid) / grid).tolist()
    row = pooled.agg(F.percentile_approx("v", probabilities, _APPROX_ACCURACY).alias("q")).first()
    assert row is not None
    edges = np.unique(np.asarray(row["q"], dtype=np.float64))
    reference_counts = bin_counts_on_spark(reference, name, edges)
    current_counts = bin_counts_on_spark(current, name, edges)
    return ks_bound_from_counts(reference_counts, current_counts)


def ks_bound_from_counts(
    reference_counts: np.ndarray, current_counts: np.ndarray
) -> tuple[float, float]:
    """``(D_grid, bound)`` from two samples' counts over the same bins.

    Bin ``i`` is ``(e_{i-1}, e_i]``. At its edges the CDF difference ``d = F_ref - F_cur``
    is known exactly; inside it ``F_ref`` rises by at most ``r_i`` and ``F_cur`` by at most
    ``c_i`` (the bin's shares), so ``d`` stays within ``[d_{i-1} - c_i, d_{i-1} + r_i]``
    and within ``[d_i - r_i, d_i + c_i]``.
    """
    r = reference_counts / reference_counts.sum()
    c = current_counts / current_counts.sum()
    d = np.concatenate(([0.0], np.cumsum(r) - np.cumsum(c)))  # at -inf and each right edge
    d_grid = float(np.abs(d).max())
    left, right = d[:-1], d[1:]
    upper = np.minimum(left + r, right + c)
    lower = np.maximum(left - c, right - r)
    d_upper = float(np.maximum(np.abs(upper), np.abs(lower)).max())
    return d_grid, max(d_upper - d_grid, 0.0)


def _distinct_values(frame: SparkFrame, name: str, limit: int) -> int:
    """Distinct finite values, counted up to ``limit + 1``."""
    return _values(frame, name).distinct().limit(limit + 1).count()


def _category_counts(frame: SparkFrame, name: str) -> pd.Series:
    """Exact count of each finite value (the column has few distinct values)."""
    rows = _values(frame, name).groupBy("v").count().collect()
    return pd.Series({row["v"]: int(row["count"]) for row in rows}, dtype="int64")


def _histogram_on_spark(reference: SparkFrame, current: SparkFrame, name: str) -> Distribution:
    """Equal-width histogram over the central 99% of both samples (approximate ends)."""
    from pyspark.sql import functions as F

    ends = []
    for frame in (reference, current):
        row = (
            _values(frame, name)
            .agg(F.percentile_approx("v", [0.005, 0.995], _APPROX_ACCURACY).alias("q"))
            .first()
        )
        assert row is not None
        ends.append(row["q"])
    low = min(ends[0][0], ends[1][0])
    high = max(ends[0][1], ends[1][1])
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
    shares = [bin_counts_on_spark(frame, name, edges[1:-1]) for frame in (reference, current)]
    return Distribution(
        reference=(shares[0] / shares[0].sum()).tolist(),
        current=(shares[1] / shares[1].sum()).tolist(),
        edges=edges.tolist(),
    )


def compare_column_on_spark(
    name: str,
    reference: SparkFrame,
    current: SparkFrame,
    settings: MonitoringSettings,
    *,
    role: Role = "feature",
    ks_grid: int = KS_GRID,
) -> FeatureDrift:
    """Compare one numeric column of two Spark samples (severity not yet set).

    The same decisions as :func:`monitoring.statistics.compare_column`: too few values,
    an all-null side, few distinct values (categorical) or continuous.
    """
    summaries = (summarize_on_spark(reference, name), summarize_on_spark(current, name))
    if too_few(summaries, settings.min_samples):
        return compare_insufficient(name, summaries, role, settings.min_samples)
    if summaries[0].count == 0 or summaries[1].count == 0:
        return compare_empty(name, summaries, role)
    pooled_distinct = _distinct_values(
        reference.select(f"`{name}`").unionByName(current.select(f"`{name}`")),
        name,
        settings.max_categories,
    )
    if role == "feature" and pooled_distinct <= settings.max_categories:
        counts = (_category_counts(reference, name), _category_counts(current, name))
        return compare_category_counts(name, counts, summaries, settings, role)
    edges = exact_quantile_edges(reference, name, settings.psi_bins)
    reference_counts = bin_counts_on_spark(reference, name, edges)
    current_counts = bin_counts_on_spark(current, name, edges)
    statistic, bound = ks_on_grid(reference, current, name, grid=ks_grid)
    n1, n2 = float(summaries[0].count), float(summaries[1].count)
    m, n = max(n1, n2), min(n1, n2)
    p_value = kolmogorov_sf(statistic, int(np.round(m * n / (m + n))))
    return continuous_drift(
        name,
        summaries,
        settings,
        role,
        psi_counts=(reference_counts, current_counts, edges),
        ks=(statistic, p_value),
        histogram=_histogram_on_spark(reference, current, name),
        notes=[f"KS on {ks_grid} pooled quantiles: exact statistic within +{bound:.2g}"],
    )


def compare_frames_on_spark(
    reference: SparkFrame,
    current: SparkFrame,
    settings: MonitoringSettings,
    *,
    features: Sequence[str],
    score_column: str | None = None,
    sources: dict[str, Any] | None = None,
) -> DriftReport:
    """:func:`monitoring.statistics.compare_frames` for two Spark samples.

    Raises:
        DriftInputError: A named column is missing from a sample.
    """
    names = [*features, *([score_column] if score_column else [])]
    missing = [n for n in names if n not in reference.columns or n not in current.columns]
    if missing:
        raise DriftInputError(f"column(s) {', '.join(missing)} are not in both samples")
    results = [compare_column_on_spark(name, reference, current, settings) for name in features]
    tested = [index for index, item in enumerate(results) if item.p_value is not None]
    if settings.correction != "none":
        adjusted = adjust_p_values(
            [results[index].p_value or 0.0 for index in tested], settings.correction
        )
        for index, value in zip(tested, adjusted, strict=True):
            results[index] = replace(results[index], p_value_adjusted=value)
    score = (
        compare_column_on_spark(score_column, reference, current, settings, role="score")
        if score_column
        else None
    )
    return DriftReport(
        features=tuple(assign_severity(item, settings) for item in results),
        settings=settings,
        score=assign_severity(score, settings) if score else None,
        skipped={},
        reference_rows=reference.count(),
        current_rows=current.count(),
        sources=sources or {},
    )
