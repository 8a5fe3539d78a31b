"""Windows of rows and their summaries, quantile edges and bin counts: the protocol.

A backend holds the rows of a window (a :class:`Sample`): the local backend in this process,
the spark backend staged on the cluster. Callers never touch those rows directly: they ask
the backend for what they need, either the rows themselves in bounded batches
(:meth:`StatisticsCompute.to_pandas`) or small aggregates (a column's summary, quantiles,
counts per bin or per value) from which the caller computes its statistics. Rows already in
this process (a file, a log) are a :class:`FrameSample`, which every backend takes.

Numeric aggregates look only at a column's finite values, cast to float64: nulls, NaN and
infinities are counted apart (:class:`SampleSummary`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from core.feast_adapter.services import ServiceFeatures

TIMESTAMP = "event_timestamp"


@dataclass(frozen=True)
class SampleSummary:
    """Size and location of one column of a sample (missing values counted apart)."""

    count: int
    nulls: int
    mean: float | None
    std: float | None  # population standard deviation

    @property
    def null_rate(self) -> float:
        """Share of missing (null or non-finite) values."""
        total = self.count + self.nulls
        return self.nulls / total if total else 0.0


@dataclass(frozen=True)
class SnapshotSource:
    """A table of entity snapshots: a Feast batch source read by path, and its join keys.

    ``source`` is Feast's data source (``path``, ``timestamp_field``, ``field_mapping``);
    ``keys`` are the entity columns under their feature-view names.
    """

    source: Any
    keys: list[str]


class Scorer(Protocol):
    """Scores the rows of one batch: a float per row (NaN where it cannot).

    A distributed backend calls it where the rows are (on the executors), so it must pickle:
    an instance of a module-level class.
    """

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        """One score per row of ``frame``, in its order."""
        ...


class Sample(Protocol):
    """Rows a backend holds; ask the backend for them or for aggregates over them."""

    @property
    def rows(self) -> int:
        """Number of rows."""
        ...

    @property
    def columns(self) -> list[str]:
        """Column names."""
        ...


@dataclass(frozen=True)
class FrameSample:
    """Rows already in this process (a file, a log, entity rows); every backend takes them."""

    frame: pd.DataFrame

    @property
    def rows(self) -> int:
        """Number of rows."""
        return len(self.frame)

    @property
    def columns(self) -> list[str]:
        """Column names."""
        return [str(column) for column in self.frame.columns]


class StatisticsCompute(Protocol):
    """Windows of rows and their summaries, quantile edges and bin counts (drift, evaluation)."""

    # True when the rows stay on a cluster: aggregates there move only counts, while
    # reading the rows (``to_pandas``) moves them all to this process.
    distributed: bool

    def read_window(
        self, location: str, columns: list[str], *, start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        """The rows of a Parquet table whose ``event_timestamp`` is in ``[start, end]``.

        Only ``columns`` are kept and only the window reaches this process (``event_timestamp``
        as UTC).

        Raises:
            InputError: The location cannot be read by this backend, the table is missing or
                lacks a column.
        """
        ...

    def snapshot_window(
        self, sources: Sequence[SnapshotSource], *, window: timedelta, until: datetime | None
    ) -> tuple[Sample, tuple[pd.Timestamp, pd.Timestamp]]:
        """The distinct (keys, ``event_timestamp``) of the snapshots in ``(end - window, end]``.

        ``end`` is ``until`` or the newest snapshot of all the sources.

        Returns:
            The keys and times (possibly no rows), and ``(start, end)`` in UTC.

        Raises:
            InputError: A source table is missing, or no source holds a snapshot.
        """
        ...

    def join_features(
        self,
        features: ServiceFeatures,
        entity_rows: Sample,
        *,
        as_available_then: bool,
        stack: ExitStack,
    ) -> Sample:
        """Point-in-time join of entity rows through a feature service.

        Args:
            features: The service's features.
            entity_rows: Keys, request fields and ``event_timestamp``.
            as_available_then: Only feature values that had arrived by each row's time
                (``created`` at or before it); False joins each value at its event time,
                whenever it arrived.
            stack: What the backend stages for the result lives until it closes.

        Returns:
            One row per entity row: join keys, ``event_timestamp`` (UTC) and the service's
            features under their short names, on-demand ones included.
        """
        ...

    def to_pandas(self, sample: Sample, columns: list[str] | None = None) -> pd.DataFrame:
        """A sample's rows (only ``columns`` if given) in this process, read in bounded batches."""
        ...

    def add_scores(
        self, sample: Sample, scorer: Scorer, *, column: str, stack: ExitStack
    ) -> Sample:
        """The sample with ``column`` holding ``scorer``'s value of each row, computed where
        the rows are (staged until ``stack`` closes)."""
        ...

    def sample_rows(
        self, sample: Sample, columns: list[str], *, rows: int, seed: int
    ) -> pd.DataFrame:
        """At most ``rows`` of the sample's rows, drawn at random without replacement (all
        of them when it holds no more), only ``columns``, in this process.

        The draw happens where the rows are; the same seed on the same rows draws the same
        rows.
        """
        ...

    def summarize(self, sample: Sample, column: str) -> SampleSummary:
        """Count, missing count, mean and population standard deviation of a column."""
        ...

    def distinct_values(self, samples: Sequence[Sample], column: str, *, limit: int) -> int:
        """Distinct finite values of a column over the samples together, counted up to
        ``limit + 1`` (more than ``limit`` need not be counted exactly)."""
        ...

    def category_counts(self, sample: Sample, column: str) -> pd.Series:
        """How many times each finite value of a column occurs (value -> count)."""
        ...

    def quantiles(
        self,
        samples: Sequence[Sample],
        column: str,
        probabilities: Sequence[float],
        *,
        exact: bool,
    ) -> np.ndarray:
        """Quantiles of a column's finite values over the samples together.

        Args:
            exact: Linear interpolation between order statistics (numpy's default);
                otherwise a backend may approximate (rank error at most 1e-5 of the rows).
        """
        ...

    def bin_counts(self, sample: Sample, column: str, edges: np.ndarray) -> np.ndarray:
        """Counts of bins ``(-inf, e1], (e1, e2], ..., (ek, inf)`` of a column's finite values."""
        ...
