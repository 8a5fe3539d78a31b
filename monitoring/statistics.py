"""Drift statistics: PSI, Kolmogorov-Smirnov, chi-square and effect sizes, column by column.

The numerics only: how severe a result is lives in ``monitoring.severity`` and the
comparison of two frames into a report in ``monitoring.comparison``. Pure functions over
pandas columns and numpy arrays, no I/O. Each continuous column is
sorted once; PSI bin counts, the KS statistic and the plotted histogram are then read off
the sorted arrays with ``np.searchsorted``, which keeps 10 features x 1M rows within a
couple of seconds (``scipy.stats.ks_2samp`` alone takes about a second per 1M-row pair).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from core.errors import InputError
from monitoring.settings import Correction, MonitoringSettings

Severity = Literal["none", "minor", "major"]
Kind = Literal["continuous", "categorical", "empty", "insufficient_data"]
Role = Literal["feature", "score"]

# scipy's ks_2samp computes exact p-values up to this sample size (its MAX_AUTO_N) and
# Smirnov's asymptotic distribution above it; the fast path below follows the same rule.
KS_EXACT_MAX_N = 10_000
HISTOGRAM_BINS = 40
_SAMPLE_FOR_CARDINALITY = 10_000


class DriftInputError(InputError):
    """The data cannot be compared as asked (missing column, nothing to compare)."""


@dataclass(frozen=True)
class SampleSummary:
    """Size and location of one side of a comparison (nulls counted apart)."""

    count: int
    nulls: int
    mean: float | None
    std: float | None

    @property
    def null_rate(self) -> float:
        """Share of missing (null or non-finite) values."""
        total = self.count + self.nulls
        return self.nulls / total if total else 0.0


@dataclass(frozen=True)
class Distribution:
    """Reference and current proportions over the same bins or categories.

    ``edges`` are bin boundaries (for PSI bins only the inner ones: the outer bins are
    open-ended) or ``labels`` name categories.
    """

    reference: list[float]
    current: list[float]
    edges: list[float] | None = None
    labels: list[str] | None = None


@dataclass(frozen=True)
class FeatureDrift:
    """The drift result of one column; severity is set by ``monitoring.severity``."""

    feature: str
    kind: Kind
    test: Literal["ks", "chi2"] | None
    psi: float | None
    statistic: float | None
    p_value: float | None
    reference: SampleSummary
    current: SampleSummary
    role: Role = "feature"
    p_value_adjusted: float | None = None
    severity: Severity = "none"
    reasons: tuple[str, ...] = ()
    effect_size: float | None = None
    effect_size_name: str | None = None
    mean_shift_sd: float | None = None
    psi_bins: Distribution | None = None
    histogram: Distribution | None = None
    note: str | None = None

    @property
    def drift_detected(self) -> bool:
        """Whether the column drifted at all (severity is not ``none``)."""
        return self.severity != "none"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the documented keys first, then the details."""
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        for side in ("reference", "current"):
            data[side]["null_rate"] = getattr(self, side).null_rate
        head = {
            key: data.pop(key)
            for key in ("feature", "test", "psi", "statistic", "p_value", "severity")
        }
        status = "insufficient_data" if self.kind == "insufficient_data" else self.severity
        return {**head, "drift_detected": self.drift_detected, **data, "status": status}


# ---------------------------------------------------------------------------- PSI


def quantile_edges(sorted_reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the reference's quantiles, ties merged.

    The outer bins are open-ended (below the first edge, above the last), so current
    values outside the reference range are counted. Repeated quantiles (ties, constant
    columns) collapse to one edge: fewer, never empty-by-construction, bins.
    """
    probabilities = np.arange(1, bins) / bins
    return np.unique(sorted_quantiles(sorted_reference, probabilities))


def sorted_quantiles(sorted_values: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Quantiles of an already sorted array, linear interpolation (numpy's default).

    Reads two elements per quantile instead of partitioning the whole array again.
    """
    position = probabilities * (sorted_values.size - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, sorted_values.size - 1)
    low, high = sorted_values[below], sorted_values[above]
    fraction = position - below
    # numpy's _lerp: interpolate from the nearer end, so equal neighbours give them exactly.
    return np.where(
        fraction >= 0.5, high - (high - low) * (1 - fraction), low + (high - low) * fraction
    )


def bin_counts(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of bins ``(-inf, e1], (e1, e2], ..., (ek, inf)`` of an already sorted array."""
    cumulative = np.searchsorted(sorted_values, edges, side="right")
    return np.diff(np.concatenate(([0], cumulative, [sorted_values.size])))


def population_stability_index(
    reference_counts: np.ndarray, current_counts: np.ndarray, *, epsilon: float
) -> float:
    """PSI = sum((c - r) * ln(c / r)) over proportions (counts / n), not densities.

    Empty bins get ``epsilon`` as their proportion so the logarithm stays finite.
    """
    reference = np.maximum(reference_counts / reference_counts.sum(), epsilon)
    current = np.maximum(current_counts / current_counts.sum(), epsilon)
    return float(np.sum((current - reference) * np.log(current / reference)))


# ---------------------------------------------------------------- KS and chi-square


def _run_ends(sorted_values: np.ndarray) -> np.ndarray:
    """Index of the last element of each run of equal values."""
    return np.flatnonzero(np.append(sorted_values[1:] != sorted_values[:-1], True))


def ks_two_sample(sorted_reference: np.ndarray, sorted_current: np.ndarray) -> tuple[float, float]:
    """Two-sided two-sample KS statistic and p-value, as ``scipy.stats.ks_2samp``.

    Small samples go to scipy itself (exact p-values). Large ones get the same statistic,
    the largest difference of the two empirical CDFs at the observed values (ties
    included, same integer counts and divisions), from one binary search of the sorted
    current sample into the sorted reference, and the p-value of ks_2samp's
    ``method='asymp'``: Smirnov's ``kstwo.sf(d, round(n1 n2 / (n1 + n2)))``.
    """
    from scipy import stats

    n1, n2 = sorted_reference.size, sorted_current.size
    if max(n1, n2) <= KS_EXACT_MAX_N:
        result = stats.ks_2samp(sorted_reference, sorted_current)
        return float(result.statistic), float(result.pvalue)
    # Reference values <= and < each current value ("<" differs only on exact ties).
    at_or_below = np.searchsorted(sorted_reference, sorted_current, side="right")
    previous = sorted_reference[np.maximum(at_or_below - 1, 0)]
    tied = (at_or_below > 0) & (previous == sorted_current)
    below = (
        np.searchsorted(sorted_reference, sorted_current, side="left")
        if tied.any()
        else at_or_below
    )
    # F_cur - F_ref is largest at a current value; F_ref - F_cur just below one (that is,
    # at the largest observed value under it, or 0 before any value). With ties, only the
    # last (first) of equal current values counts; without them every index does.
    if np.any(sorted_current[1:] == sorted_current[:-1]):
        ends = _run_ends(sorted_current)
        starts = np.concatenate(([0], ends[:-1] + 1))
        current_ahead = (ends + 1) / n2 - at_or_below[ends] / n1
        reference_ahead = below[starts] / n1 - starts / n2
    else:
        current_ahead = np.arange(1, n2 + 1) / n2 - at_or_below / n1
        reference_ahead = below / n1 - np.arange(n2) / n2
    max_s = max(float(reference_ahead.max()), 0.0)
    min_s = float(np.clip(current_ahead.max(), 0, 1))
    statistic = min_s if min_s > max_s else max_s
    m, n = sorted([float(n1), float(n2)], reverse=True)
    return statistic, kolmogorov_sf(statistic, int(np.round(m * n / (m + n))))


def kolmogorov_sf(statistic: float, n: int) -> float:
    """``scipy.stats.kstwo.sf(statistic, n)``, with its slowest branch vectorised.

    For n > 140 and 2.2 <= n d^2 < 370 scipy evaluates ``2 * scipy.special.smirnov(n, d)``,
    an exact sum of about n terms that takes a second at n = 500,000. The same sum
    (Birnbaum-Tingey) is computed here in log space with numpy (relative difference
    below 1e-8); every other case is scipy's own.
    """
    from scipy import special, stats

    t = n * statistic
    smirnov_branch = (
        n > 140 and 0 < statistic < 0.5 and 1 < t < n - 1 and 2.2 <= t * statistic < 370
    )
    if not smirnov_branch:
        return float(np.clip(stats.kstwo.sf(statistic, n), 0, 1))
    j = np.arange(0, int(np.floor(n * (1 - statistic))) + 1, dtype=np.float64)
    with np.errstate(divide="ignore"):  # the last term can be 0^k: log 0 = -inf, exp -> 0
        log_terms = (
            -np.log(n + 1.0)
            - special.betaln(n - j + 1, j + 1)  # log binomial(n, j)
            + (n - j) * np.log1p(-statistic - j / n)
            + (j - 1) * np.log(statistic + j / n)
        )
    top = log_terms.max()
    one_sided = statistic * np.exp(top) * np.exp(log_terms - top).sum()
    return float(np.clip(2 * one_sided, 0, 1))


def chi_square_test(table: np.ndarray) -> tuple[float, float, float]:
    """Chi-square test of a 2 x k table of counts: (statistic, p-value, Cramér's V).

    Statistic and p-value are ``scipy.stats.chi2_contingency(table)`` (with its default
    Yates correction on 2 x 2 tables); Cramér's V uses the uncorrected statistic.
    A single category cannot differ: (0, 1, 0).
    """
    from scipy.stats import chi2_contingency

    if table.shape[1] < 2:
        return 0.0, 1.0, 0.0
    result = chi2_contingency(table)
    uncorrected = chi2_contingency(table, correction=False).statistic
    cramers_v = math.sqrt(float(uncorrected) / float(table.sum()))
    return float(result.statistic), float(result.pvalue), cramers_v


def adjust_p_values(p_values: Sequence[float], method: Correction) -> list[float]:
    """Adjust a family of p-values: Holm (step-down), Benjamini-Hochberg, or none."""
    values = np.asarray(p_values, dtype=float)
    if method == "none" or values.size == 0:
        return values.tolist()
    if method == "bh":
        from scipy.stats import false_discovery_control

        return np.asarray(false_discovery_control(values, method="bh")).tolist()
    order = np.argsort(values)
    multipliers = values.size - np.arange(values.size)
    stepped = np.minimum(np.maximum.accumulate(values[order] * multipliers), 1.0)
    adjusted = np.empty_like(values)
    adjusted[order] = stepped
    return adjusted.tolist()


# ------------------------------------------------------------------ one column


def is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _numeric_values(series: pd.Series) -> tuple[np.ndarray, int]:
    """Finite values as float64 and the number of missing (null or non-finite) ones."""
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(values)
    kept = values[finite] if not finite.all() else values
    return kept, int(values.size - kept.size)


def _summary(values: np.ndarray | None, count: int, nulls: int) -> SampleSummary:
    if values is None or values.size == 0:
        return SampleSummary(count=count, nulls=nulls, mean=None, std=None)
    return SampleSummary(
        count=count, nulls=nulls, mean=float(values.mean()), std=float(values.std())
    )


def _mean_shift(reference: SampleSummary, current: SampleSummary) -> float | None:
    """Shift of the mean in reference standard deviations (None without spread)."""
    if reference.mean is None or current.mean is None or not reference.std:
        return None
    return (current.mean - reference.mean) / reference.std


def _few_distinct(reference: np.ndarray, current: np.ndarray, limit: int) -> bool:
    """Whether two arrays together hold at most ``limit`` distinct values.

    The heads are checked first so a continuous column is recognised without hashing
    all of it.
    """
    for values in (reference, current):
        if pd.unique(values[:_SAMPLE_FOR_CARDINALITY]).size > limit:
            return False
    return pd.unique(np.concatenate((reference, current))).size <= limit


def _histogram(sorted_reference: np.ndarray, sorted_current: np.ndarray) -> Distribution:
    """Equal-width histogram over the central 99% of both samples, for the report plot."""

    def at(values: np.ndarray, share: float) -> float:
        return float(values[int(share * (values.size - 1))])

    low = min(at(sorted_reference, 0.005), at(sorted_current, 0.005))
    high = max(at(sorted_reference, 0.995), at(sorted_current, 0.995))
    if high <= low:  # a constant column: a unit-wide window around it
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
    # Values beyond the window fall into the outer bins (inner edges only).
    reference = bin_counts(sorted_reference, edges[1:-1]) / sorted_reference.size
    current = bin_counts(sorted_current, edges[1:-1]) / sorted_current.size
    return Distribution(
        reference=reference.tolist(), current=current.tolist(), edges=edges.tolist()
    )


def _identity(
    name: str, summaries: tuple[SampleSummary, SampleSummary], role: Role
) -> dict[str, Any]:
    """Fields every tested column's result shares: name, role, both sides, mean shift."""
    return {
        "feature": name,
        "role": role,
        "reference": summaries[0],
        "current": summaries[1],
        "mean_shift_sd": _mean_shift(*summaries),
    }


def _compare_continuous(
    name: str,
    reference: np.ndarray,
    current: np.ndarray,
    summaries: tuple[SampleSummary, SampleSummary],
    settings: MonitoringSettings,
    role: Role,
) -> FeatureDrift:
    sorted_reference = np.sort(reference)
    sorted_current = np.sort(current)
    edges = quantile_edges(sorted_reference, settings.psi_bins)
    reference_counts = bin_counts(sorted_reference, edges)
    current_counts = bin_counts(sorted_current, edges)
    statistic, p_value = ks_two_sample(sorted_reference, sorted_current)
    return continuous_drift(
        name,
        summaries,
        settings,
        role,
        psi_counts=(reference_counts, current_counts, edges),
        ks=(statistic, p_value),
        histogram=_histogram(sorted_reference, sorted_current),
    )


def continuous_drift(
    name: str,
    summaries: tuple[SampleSummary, SampleSummary],
    settings: MonitoringSettings,
    role: Role,
    *,
    psi_counts: tuple[np.ndarray, np.ndarray, np.ndarray],
    ks: tuple[float, float],
    histogram: Distribution,
    notes: Sequence[str] = (),
) -> FeatureDrift:
    """The result of a continuous column from its PSI bin counts and KS test.

    Args:
        psi_counts: Reference counts, current counts and the inner edges of the PSI bins.
        ks: KS statistic and p-value.
    """
    reference_counts, current_counts, edges = psi_counts
    psi = population_stability_index(reference_counts, current_counts, epsilon=settings.psi_epsilon)
    remarks = list(notes)
    if edges.size < settings.psi_bins - 1:
        remarks.append(f"{edges.size + 1} PSI bins: the reference has ties at its quantiles")
    return FeatureDrift(
        **_identity(name, summaries, role),
        kind="continuous",
        test="ks",
        psi=psi,
        statistic=ks[0],
        p_value=ks[1],
        effect_size=ks[0],
        effect_size_name="ks_statistic",
        psi_bins=Distribution(
            reference=(reference_counts / reference_counts.sum()).tolist(),
            current=(current_counts / current_counts.sum()).tolist(),
            edges=edges.tolist(),
        ),
        histogram=histogram,
        note="; ".join(remarks) or None,
    )


def _category_label(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    return str(value)


def _compare_categorical(
    name: str,
    reference: np.ndarray | pd.Series,
    current: np.ndarray | pd.Series,
    summaries: tuple[SampleSummary, SampleSummary],
    settings: MonitoringSettings,
    role: Role,
) -> FeatureDrift:
    counts = (
        pd.Series(reference).value_counts(sort=False),
        pd.Series(current).value_counts(sort=False),
    )
    return compare_category_counts(name, counts, summaries, settings, role)


def compare_category_counts(
    name: str,
    value_counts: tuple[pd.Series, pd.Series],
    summaries: tuple[SampleSummary, SampleSummary],
    settings: MonitoringSettings,
    role: Role,
) -> FeatureDrift:
    """PSI over categories and chi-square from each side's count per value."""
    table = (
        pd.concat(list(value_counts), axis=1, keys=["reference", "current"])
        .fillna(0)
        .astype(np.int64)
    )
    with contextlib.suppress(TypeError):  # mixed types: keep the order of appearance
        table = table.sort_index()
    counts = table.to_numpy().T
    psi = population_stability_index(counts[0], counts[1], epsilon=settings.psi_epsilon)
    statistic, p_value, cramers_v = chi_square_test(counts)
    proportions = Distribution(
        reference=(counts[0] / counts[0].sum()).tolist(),
        current=(counts[1] / counts[1].sum()).tolist(),
        labels=[_category_label(value) for value in table.index],
    )
    return FeatureDrift(
        **_identity(name, summaries, role),
        kind="categorical",
        test="chi2",
        psi=psi,
        statistic=statistic,
        p_value=p_value,
        effect_size=cramers_v,
        effect_size_name="cramers_v",
        psi_bins=proportions,
        histogram=proportions,
        note="single category in both samples" if counts.shape[1] == 1 else None,
    )


def compare_empty(
    name: str, summaries: tuple[SampleSummary, SampleSummary], role: Role
) -> FeatureDrift:
    reference, current = summaries
    if reference.count == 0 and current.count == 0:
        note = "no values in either sample (all null): nothing to compare"
    elif current.count == 0:
        note = f"all {current.nulls} current values are null (reference has {reference.count})"
    else:
        note = f"all {reference.nulls} reference values are null (current has {current.count})"
    return FeatureDrift(
        feature=name,
        kind="empty",
        test=None,
        psi=None,
        statistic=None,
        p_value=None,
        reference=reference,
        current=current,
        role=role,
        note=note,
    )


def compare_insufficient(
    name: str,
    summaries: tuple[SampleSummary, SampleSummary],
    role: Role,
    minimum: int,
) -> FeatureDrift:
    sides = [
        f"{side} has {summary.count}"
        for side, summary in zip(("reference", "current"), summaries, strict=True)
        if summary.count < minimum
    ]
    return FeatureDrift(
        feature=name,
        kind="insufficient_data",
        test=None,
        psi=None,
        statistic=None,
        p_value=None,
        reference=summaries[0],
        current=summaries[1],
        role=role,
        note=f"insufficient data: {' and '.join(sides)} value(s), at least {minimum} "
        "needed per side; not tested",
    )


def too_few(summaries: tuple[SampleSummary, SampleSummary], minimum: int) -> bool:
    """Too few rows on a side, or a side with a few values but fewer than needed.

    A side with enough rows that are all missing is not "too few": that is a column that
    vanished (``empty``, major when one-sided).
    """
    if any(s.count + s.nulls < minimum for s in summaries):
        return True
    return any(0 < s.count < minimum for s in summaries)


def compare_column(
    name: str,
    reference: pd.Series,
    current: pd.Series,
    settings: MonitoringSettings,
    *,
    role: Role = "feature",
) -> FeatureDrift:
    """Compare one column of the reference and current samples (severity not yet set).

    Numeric columns with at most ``settings.max_categories`` distinct values, booleans and
    text are compared as categories (PSI over categories, chi-square); other numeric
    columns by quantile-binned PSI and KS. Missing values (null, NaN, infinite) are
    counted apart and left out of both tests.
    """
    if is_numeric(reference) and is_numeric(current):
        reference_values, reference_nulls = _numeric_values(reference)
        current_values, current_nulls = _numeric_values(current)
        summaries = (
            _summary(reference_values, reference_values.size, reference_nulls),
            _summary(current_values, current_values.size, current_nulls),
        )
        if too_few(summaries, settings.min_samples):
            return compare_insufficient(name, summaries, role, settings.min_samples)
        if reference_values.size == 0 or current_values.size == 0:
            return compare_empty(name, summaries, role)
        if role == "feature" and _few_distinct(
            reference_values, current_values, settings.max_categories
        ):
            return _compare_categorical(
                name, reference_values, current_values, summaries, settings, role
            )
        return _compare_continuous(
            name, reference_values, current_values, summaries, settings, role
        )
    reference_kept, current_kept = reference.dropna(), current.dropna()
    summaries = (
        _summary(None, reference_kept.size, int(reference.size - reference_kept.size)),
        _summary(None, current_kept.size, int(current.size - current_kept.size)),
    )
    if too_few(summaries, settings.min_samples):
        return compare_insufficient(name, summaries, role, settings.min_samples)
    if reference_kept.empty or current_kept.empty:
        return compare_empty(name, summaries, role)
    return _compare_categorical(name, reference_kept, current_kept, summaries, settings, role)
