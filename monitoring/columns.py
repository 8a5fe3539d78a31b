"""One column of two samples compared: the same decisions whether the values are here or not.

A column is compared through a :class:`ColumnPair`, which answers the few questions the
comparison asks (summaries, how many distinct values, counts per category, the
reference's quantiles, counts per bin, the plot's range, the KS test). Two pairs answer
them:

- :class:`FramePair` / :class:`TextPair`: the values are in this process (exact; the KS
  statistic from the sorted values);
- :class:`SamplePair`: a backend holds the rows (:mod:`core.compute`) and answers with
  aggregates computed where they are. PSI is exact (the reference's exact quantiles as
  edges, both samples counted over them). The KS statistic is counted on a grid of
  ``ks_grid`` pooled quantiles (which need not be exact): ``D_grid <= D <= D_grid + bound``
  with the bound computed from the same counts (:func:`ks_on_grid`), and the p-value is
  Smirnov's asymptotic one at ``D_grid``.

Severity is not set here (``monitoring.severity``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd

from core.compute.statistics import Sample, SampleSummary, StatisticsCompute
from monitoring.settings import MonitoringSettings
from monitoring.statistics import (
    HISTOGRAM_BINS,
    KS_GRID,
    Coverage,
    Distribution,
    FeatureDrift,
    Role,
    bin_counts,
    chi_square_test,
    ks_asymptotic_p_value,
    ks_bound_from_counts,
    ks_two_sample,
    population_stability_index,
    sorted_quantiles,
)

_SAMPLE_FOR_CARDINALITY = 10_000
_PLOT_SHARES = (0.005, 0.995)  # the histogram shows the central 99% of both samples

Ends = tuple[float, float]


class ColumnPair(Protocol):
    """One column of the reference and current samples, as the comparison asks about it."""

    # Text or booleans: compared as categories whatever their number.
    text: bool

    def summaries(self) -> tuple[SampleSummary, SampleSummary]:
        """Reference and current summaries (missing values counted apart)."""
        ...

    def few_distinct(self, limit: int) -> bool:
        """Whether both samples together hold at most ``limit`` distinct values."""
        ...

    def category_counts(self) -> tuple[pd.Series, pd.Series]:
        """Each side's count per value."""
        ...

    def reference_quantiles(self, probabilities: np.ndarray) -> np.ndarray:
        """Exact quantiles of the reference (linear interpolation)."""
        ...

    def bin_counts(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each side's counts of bins ``(-inf, e1], ..., (ek, inf)``."""
        ...

    def plot_ends(self) -> tuple[Ends, Ends]:
        """Each side's values at 0.5% and 99.5% (the plotted range)."""
        ...

    def ks(self) -> tuple[float, float, str | None]:
        """KS statistic, its p-value, and a note on how exact it is (None: exact)."""
        ...


def _few_distinct(reference: np.ndarray, current: np.ndarray, limit: int) -> bool:
    """Whether two arrays together hold at most ``limit`` distinct values.

    The heads are checked first so a continuous column is recognised without hashing
    all of it.
    """
    for values in (reference, current):
        if pd.unique(values[:_SAMPLE_FOR_CARDINALITY]).size > limit:
            return False
    return pd.unique(np.concatenate((reference, current))).size <= limit


def _summary(values: np.ndarray, nulls: int) -> SampleSummary:
    if values.size == 0:
        return SampleSummary(count=0, nulls=nulls, mean=None, std=None)
    return SampleSummary(
        count=int(values.size), nulls=nulls, mean=float(values.mean()), std=float(values.std())
    )


class FramePair:
    """A numeric column whose finite values are in this process; each side sorted once."""

    text = False

    def __init__(
        self, reference: np.ndarray, current: np.ndarray, *, nulls: tuple[int, int]
    ) -> None:
        self._values = (reference, current)
        self._nulls = nulls
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None

    def _sorted_values(self) -> tuple[np.ndarray, np.ndarray]:
        if self._sorted is None:
            self._sorted = (np.sort(self._values[0]), np.sort(self._values[1]))
        return self._sorted

    def summaries(self) -> tuple[SampleSummary, SampleSummary]:
        """See :class:`ColumnPair`."""
        return (
            _summary(self._values[0], self._nulls[0]),
            _summary(self._values[1], self._nulls[1]),
        )

    def few_distinct(self, limit: int) -> bool:
        """See :class:`ColumnPair`."""
        return _few_distinct(*self._values, limit)

    def category_counts(self) -> tuple[pd.Series, pd.Series]:
        """See :class:`ColumnPair`."""
        reference, current = self._values
        return (
            pd.Series(reference).value_counts(sort=False),
            pd.Series(current).value_counts(sort=False),
        )

    def reference_quantiles(self, probabilities: np.ndarray) -> np.ndarray:
        """See :class:`ColumnPair`."""
        return sorted_quantiles(self._sorted_values()[0], probabilities)

    def bin_counts(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """See :class:`ColumnPair`."""
        reference, current = self._sorted_values()
        return bin_counts(reference, edges), bin_counts(current, edges)

    def plot_ends(self) -> tuple[Ends, Ends]:
        """See :class:`ColumnPair` (the order statistics at or below each share)."""

        def ends(values: np.ndarray) -> Ends:
            low, high = (float(values[int(share * (values.size - 1))]) for share in _PLOT_SHARES)
            return low, high

        reference, current = self._sorted_values()
        return ends(reference), ends(current)

    def ks(self) -> tuple[float, float, str | None]:
        """See :class:`ColumnPair` (exact)."""
        statistic, p_value = ks_two_sample(*self._sorted_values())
        return statistic, p_value, None


class TextPair:
    """A text or boolean column in this process: compared as categories."""

    text = True

    def __init__(self, reference: pd.Series, current: pd.Series) -> None:
        self._kept = (reference.dropna(), current.dropna())
        self._nulls = (
            int(reference.size - self._kept[0].size),
            int(current.size - self._kept[1].size),
        )

    def summaries(self) -> tuple[SampleSummary, SampleSummary]:
        """See :class:`ColumnPair` (no mean for text)."""
        (reference, current), (reference_nulls, current_nulls) = self._kept, self._nulls
        return (
            SampleSummary(count=int(reference.size), nulls=reference_nulls, mean=None, std=None),
            SampleSummary(count=int(current.size), nulls=current_nulls, mean=None, std=None),
        )

    def few_distinct(self, limit: int) -> bool:
        """See :class:`ColumnPair`."""
        return True

    def category_counts(self) -> tuple[pd.Series, pd.Series]:
        """See :class:`ColumnPair`."""
        return self._kept[0].value_counts(sort=False), self._kept[1].value_counts(sort=False)

    def reference_quantiles(self, probabilities: np.ndarray) -> np.ndarray:
        """Text has no quantiles (never asked: text is categorical)."""
        raise TypeError("a text column has no quantiles")

    def bin_counts(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Text has no bins (never asked: text is categorical)."""
        raise TypeError("a text column has no bins")

    def plot_ends(self) -> tuple[Ends, Ends]:
        """Text has no range (never asked: text is categorical)."""
        raise TypeError("a text column has no range")

    def ks(self) -> tuple[float, float, str | None]:
        """Text has no KS test (never asked: text is categorical)."""
        raise TypeError("a text column has no KS test")


def ks_on_grid(
    compute: StatisticsCompute,
    reference: Sample,
    current: Sample,
    column: str,
    *,
    grid: int = KS_GRID,
) -> tuple[float, float]:
    """KS statistic on a grid of ``grid`` pooled quantiles, and its error bound.

    Returns:
        ``(D_grid, bound)`` with ``D_grid <= D <= D_grid + bound`` for the exact two-sample
        statistic ``D`` (:func:`monitoring.statistics.ks_bound_from_counts`).
    """
    probabilities = np.arange(1, grid) / grid
    pooled = compute.quantiles([reference, current], column, probabilities.tolist(), exact=False)
    edges = np.unique(pooled)
    return ks_bound_from_counts(
        compute.bin_counts(reference, column, edges), compute.bin_counts(current, column, edges)
    )


class SamplePair:
    """A numeric column of two samples a backend holds: every answer is an aggregate."""

    text = False

    def __init__(
        self,
        compute: StatisticsCompute,
        reference: Sample,
        current: Sample,
        column: str,
        *,
        ks_grid: int = KS_GRID,
    ) -> None:
        self._compute = compute
        self._samples = (reference, current)
        self._column = column
        self._ks_grid = ks_grid
        self._summaries: tuple[SampleSummary, SampleSummary] | None = None

    def summaries(self) -> tuple[SampleSummary, SampleSummary]:
        """See :class:`ColumnPair`."""
        if self._summaries is None:
            reference, current = (self._compute.summarize(s, self._column) for s in self._samples)
            self._summaries = (reference, current)
        return self._summaries

    def few_distinct(self, limit: int) -> bool:
        """See :class:`ColumnPair`."""
        return self._compute.distinct_values(self._samples, self._column, limit=limit) <= limit

    def category_counts(self) -> tuple[pd.Series, pd.Series]:
        """See :class:`ColumnPair`."""
        reference, current = (self._compute.category_counts(s, self._column) for s in self._samples)
        return reference, current

    def reference_quantiles(self, probabilities: np.ndarray) -> np.ndarray:
        """See :class:`ColumnPair`."""
        return self._compute.quantiles(
            [self._samples[0]], self._column, probabilities.tolist(), exact=True
        )

    def bin_counts(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """See :class:`ColumnPair`."""
        reference, current = (
            self._compute.bin_counts(sample, self._column, edges) for sample in self._samples
        )
        return reference, current

    def plot_ends(self) -> tuple[Ends, Ends]:
        """See :class:`ColumnPair` (approximate quantiles)."""
        reference, current = (
            self._compute.quantiles([sample], self._column, _PLOT_SHARES, exact=False)
            for sample in self._samples
        )
        return (float(reference[0]), float(reference[1])), (float(current[0]), float(current[1]))

    def ks(self) -> tuple[float, float, str | None]:
        """See :class:`ColumnPair` (on a grid, within the stated bound)."""
        statistic, bound = ks_on_grid(
            self._compute, *self._samples, self._column, grid=self._ks_grid
        )
        reference, current = self.summaries()
        p_value = ks_asymptotic_p_value(statistic, reference.count, current.count)
        note = f"KS on {self._ks_grid} pooled quantiles: exact statistic within +{bound:.2g}"
        return statistic, p_value, note


# ------------------------------------------------------------------ the comparison


def _mean_shift(reference: SampleSummary, current: SampleSummary) -> float | None:
    """Shift of the mean in reference standard deviations (None without spread)."""
    if reference.mean is None or current.mean is None or not reference.std:
        return None
    return (current.mean - reference.mean) / reference.std


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


def _shares(counts: np.ndarray) -> list[float]:
    return (counts / counts.sum()).tolist()


def _histogram(pair: ColumnPair) -> Distribution:
    """Equal-width histogram over the central 99% of both samples, for the report plot."""
    (reference_low, reference_high), (current_low, current_high) = pair.plot_ends()
    low, high = min(reference_low, current_low), max(reference_high, current_high)
    if high <= low:  # a constant column: a unit-wide window around it
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
    # Values beyond the window fall into the outer bins (inner edges only).
    reference, current = pair.bin_counts(edges[1:-1])
    return Distribution(
        reference=_shares(reference), current=_shares(current), edges=edges.tolist()
    )


def _compare_continuous(
    name: str,
    pair: ColumnPair,
    summaries: tuple[SampleSummary, SampleSummary],
    settings: MonitoringSettings,
    role: Role,
) -> FeatureDrift:
    """PSI over the reference's quantile bins (ties merged into fewer bins) and the KS test.

    The outer bins are open-ended, so current values outside the reference range count.
    """
    probabilities = np.arange(1, settings.psi_bins) / settings.psi_bins
    # The reference's minimum and maximum come with its deciles (one aggregate).
    quantiles = pair.reference_quantiles(np.concatenate(([0.0], probabilities, [1.0])))
    edges = np.unique(quantiles[1:-1])
    reference_counts, current_counts = pair.bin_counts(edges)
    statistic, p_value, ks_note = pair.ks()
    psi = population_stability_index(reference_counts, current_counts, epsilon=settings.psi_epsilon)
    remarks = [ks_note] if ks_note else []
    if edges.size < settings.psi_bins - 1:
        remarks.append(f"{edges.size + 1} PSI bins: the reference has ties at its quantiles")
    return FeatureDrift(
        **_identity(name, summaries, role),
        kind="continuous",
        test="ks",
        psi=psi,
        statistic=statistic,
        p_value=p_value,
        effect_size=statistic,
        effect_size_name="ks_statistic",
        psi_bins=Distribution(
            reference=_shares(reference_counts),
            current=_shares(current_counts),
            edges=edges.tolist(),
        ),
        histogram=_histogram(pair),
        note="; ".join(remarks) or None,
        coverage=_range_coverage(pair, float(quantiles[0]), float(quantiles[-1]), summaries),
    )


def _range_coverage(
    pair: ColumnPair, low: float, high: float, summaries: tuple[SampleSummary, SampleSummary]
) -> Coverage:
    """Current values below the reference's minimum or above its maximum."""
    # Bins (-inf, just below low], (.., high], (high, inf): the outer ones are outside.
    _, (below, _, above) = pair.bin_counts(np.array([np.nextafter(low, -np.inf), high]))
    outside = int(below + above)
    return Coverage(
        outside=outside,
        share=outside / summaries[1].count,
        expected_share=2 / (summaries[0].count + 1),
        low=low,
        high=high,
        below=int(below),
        above=int(above),
    )


def _category_label(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    return str(value)


def _compare_categories(
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
    unseen = (counts[0] == 0) & (counts[1] > 0)
    outside = int(counts[1][unseen].sum())
    statistic, p_value, cramers_v = chi_square_test(counts)
    proportions = Distribution(
        reference=_shares(counts[0]),
        current=_shares(counts[1]),
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
        coverage=Coverage(
            outside=outside,
            share=outside / max(int(counts[1].sum()), 1),
            unseen=tuple(_category_label(value) for value in table.index[unseen]),
        ),
    )


def _untested(
    name: str,
    summaries: tuple[SampleSummary, SampleSummary],
    role: Role,
    *,
    kind: str,
    note: str,
) -> FeatureDrift:
    return FeatureDrift(
        feature=name,
        kind=kind,  # type: ignore[arg-type]
        test=None,
        psi=None,
        statistic=None,
        p_value=None,
        reference=summaries[0],
        current=summaries[1],
        role=role,
        note=note,
    )


def _empty_note(summaries: tuple[SampleSummary, SampleSummary]) -> str:
    reference, current = summaries
    if reference.count == 0 and current.count == 0:
        return "no values in either sample (all null): nothing to compare"
    if current.count == 0:
        return f"all {current.nulls} current values are null (reference has {reference.count})"
    return f"all {reference.nulls} reference values are null (current has {current.count})"


def _insufficient_note(summaries: tuple[SampleSummary, SampleSummary], minimum: int) -> str:
    sides = [
        f"{side} has {summary.count}"
        for side, summary in zip(("reference", "current"), summaries, strict=True)
        if summary.count < minimum
    ]
    return (
        f"insufficient data: {' and '.join(sides)} value(s), at least {minimum} needed per "
        "side; not tested"
    )


def too_few(summaries: tuple[SampleSummary, SampleSummary], minimum: int) -> bool:
    """Too few rows on a side, or a side with a few values but fewer than needed.

    A side with enough rows that are all missing is not "too few": that is a column that
    vanished (``empty``, major when one-sided).
    """
    if any(s.count + s.nulls < minimum for s in summaries):
        return True
    return any(0 < s.count < minimum for s in summaries)


def compare_pair(
    name: str, pair: ColumnPair, settings: MonitoringSettings, *, role: Role = "feature"
) -> FeatureDrift:
    """Compare one column of two samples (severity not yet set).

    Too few values on a side: ``insufficient_data``, not tested. An all-missing side:
    ``empty``. Text, booleans and (for features) numeric columns with at most
    ``settings.max_categories`` distinct values: categories (PSI over categories,
    chi-square). Other numeric columns: quantile-binned PSI and KS.
    """
    summaries = pair.summaries()
    if too_few(summaries, settings.min_samples):
        note = _insufficient_note(summaries, settings.min_samples)
        return _untested(name, summaries, role, kind="insufficient_data", note=note)
    if summaries[0].count == 0 or summaries[1].count == 0:
        return _untested(name, summaries, role, kind="empty", note=_empty_note(summaries))
    if pair.text or (role == "feature" and pair.few_distinct(settings.max_categories)):
        return _compare_categories(name, pair.category_counts(), summaries, settings, role)
    return _compare_continuous(name, pair, summaries, settings, role)


def is_numeric(series: pd.Series) -> bool:
    """Numeric and not boolean (booleans are categories)."""
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _numeric_values(series: pd.Series) -> tuple[np.ndarray, int]:
    """Finite values as float64 and the number of missing (null or non-finite) ones."""
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(values)
    kept = values[finite] if not finite.all() else values
    return kept, int(values.size - kept.size)


def frame_pair(reference: pd.Series, current: pd.Series) -> ColumnPair:
    """The pair of two columns in this process: numeric if both are, else text."""
    if is_numeric(reference) and is_numeric(current):
        (reference_values, reference_nulls), (current_values, current_nulls) = (
            _numeric_values(reference),
            _numeric_values(current),
        )
        return FramePair(reference_values, current_values, nulls=(reference_nulls, current_nulls))
    return TextPair(reference, current)


def compare_column(
    name: str,
    reference: pd.Series,
    current: pd.Series,
    settings: MonitoringSettings,
    *,
    role: Role = "feature",
) -> FeatureDrift:
    """Compare one column of two samples in this process (see :func:`compare_pair`).

    Missing values (null, NaN, infinite) are counted apart and left out of both tests.
    """
    return compare_pair(name, frame_pair(reference, current), settings, role=role)


def compare_sample_column(
    compute: StatisticsCompute,
    name: str,
    samples: Sequence[Sample],
    settings: MonitoringSettings,
    *,
    role: Role = "feature",
    ks_grid: int = KS_GRID,
) -> FeatureDrift:
    """Compare one numeric column of two samples a backend holds (see :func:`compare_pair`)."""
    reference, current = samples
    pair = SamplePair(compute, reference, current, name, ks_grid=ks_grid)
    return compare_pair(name, pair, settings, role=role)
