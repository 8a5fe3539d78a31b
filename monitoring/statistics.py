"""Drift statistics: PSI, Kolmogorov-Smirnov, chi-square and effect sizes, from values or counts.

The numerics only, written once for both ways a column is compared
(:mod:`monitoring.columns`): from the values in this process, or from counts a backend
computed where the rows are. How severe a result is lives in ``monitoring.severity`` and
the comparison of two samples into a report in ``monitoring.comparison``. Pure functions
over numpy arrays, no I/O. In process each continuous column is sorted once; PSI bin
counts, the KS statistic and the plotted histogram are then read off the sorted arrays with
``np.searchsorted``, which keeps 10 features x 1M rows within a couple of seconds
(``scipy.stats.ks_2samp`` alone takes about a second per 1M-row pair).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import special, stats
from scipy.stats import chi2_contingency, false_discovery_control

from core.compute.statistics import SampleSummary
from monitoring.settings import Correction

Severity = Literal["none", "minor", "major"]
Kind = Literal["continuous", "categorical", "empty", "insufficient_data"]
Role = Literal["feature", "score"]

# scipy's ks_2samp computes exact p-values up to this sample size (its MAX_AUTO_N) and
# Smirnov's asymptotic distribution above it; the fast path below follows the same rule.
KS_EXACT_MAX_N = 10_000
HISTOGRAM_BINS = 40
# Grid of pooled quantiles for the KS statistic from counts; its bound shrinks as 1 / grid.
KS_GRID = 1000

__all__ = [
    "Coverage",
    "Distribution",
    "FeatureDrift",
    "SampleSummary",
    "adjust_p_values",
    "bin_counts",
    "chi_square_test",
    "kolmogorov_sf",
    "ks_asymptotic_p_value",
    "ks_bound_from_counts",
    "ks_two_sample",
    "population_stability_index",
    "sorted_quantiles",
]


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
class Coverage:
    """How much of the current sample falls where the reference (training) sample has no values.

    For a continuous column, the values outside the reference's ``[low, high]`` (``below``
    and ``above`` it); a sample of the reference's own distribution lands there with
    probability ``2 / (n + 1)`` (``expected_share``, n the reference's values). For a
    categorical one, the values of categories the reference never had (``unseen``).
    Shares are of the current non-missing values.
    """

    outside: int
    share: float
    expected_share: float = 0.0
    low: float | None = None
    high: float | None = None
    below: int = 0
    above: int = 0
    unseen: tuple[str, ...] = ()


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
    coverage: Coverage | None = None

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
    ``method='asymp'``: :func:`ks_asymptotic_p_value`.
    """
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
    return statistic, ks_asymptotic_p_value(statistic, n1, n2)


def ks_asymptotic_p_value(statistic: float, n1: int, n2: int) -> float:
    """ks_2samp's ``method='asymp'``: Smirnov's ``kstwo.sf(d, round(n1 n2 / (n1 + n2)))``."""
    m, n = sorted([float(n1), float(n2)], reverse=True)
    return kolmogorov_sf(statistic, int(np.round(m * n / (m + n))))


def ks_bound_from_counts(
    reference_counts: np.ndarray, current_counts: np.ndarray
) -> tuple[float, float]:
    """KS statistic on a grid and its error bound, from two samples' counts over the same bins.

    Returns ``(D_grid, bound)`` with ``D_grid <= D <= D_grid + bound`` for the exact
    two-sample statistic ``D``. Bin ``i`` is ``(e_{i-1}, e_i]``. At its edges the CDF
    difference ``d = F_ref - F_cur`` is known exactly; inside it ``F_ref`` rises by at most
    ``r_i`` and ``F_cur`` by at most ``c_i`` (the bin's shares), so ``d`` stays within
    ``[d_{i-1} - c_i, d_{i-1} + r_i]`` and within ``[d_i - r_i, d_i + c_i]``. With bins at
    ``grid`` pooled quantiles the bound is about ``2 / grid`` for continuous data.
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


def kolmogorov_sf(statistic: float, n: int) -> float:
    """``scipy.stats.kstwo.sf(statistic, n)``, with its slowest branch vectorised.

    For n > 140 and 2.2 <= n d^2 < 370 scipy evaluates ``2 * scipy.special.smirnov(n, d)``,
    an exact sum of about n terms that takes a second at n = 500,000. The same sum
    (Birnbaum-Tingey) is computed here in log space with numpy (relative difference
    below 1e-8); every other case is scipy's own.
    """
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
        return np.asarray(false_discovery_control(values, method="bh")).tolist()
    order = np.argsort(values)
    multipliers = values.size - np.arange(values.size)
    stepped = np.minimum(np.maximum.accumulate(values[order] * multipliers), 1.0)
    adjusted = np.empty_like(values)
    adjusted[order] = stepped
    return adjusted.tolist()
