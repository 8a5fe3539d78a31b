"""Windows of rows and their summaries, quantile edges and bin counts on the local backend.

Every sample is a :class:`core.compute.statistics.FrameSample`: the rows are in this
process, joined by Feast's DuckDB offline store and aggregated with numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core.compute.statistics import (
    TIMESTAMP,
    FrameSample,
    Sample,
    SampleSummary,
    Scorer,
    SnapshotSource,
)
from core.errors import InputError, TableReadError
from core.tables import read_time_window

if TYPE_CHECKING:
    from feast import FeatureStore

    from core.feast_adapter.services import ServiceFeatures


def utc_timestamp(value: datetime | pd.Timestamp) -> pd.Timestamp:
    """A time as a UTC timestamp (a naive one is taken as UTC)."""
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def short_feature_names(features: ServiceFeatures) -> dict[str, str]:
    """Column of a joined row (full feature name) -> its name in a sample (short name)."""
    return dict(zip(features.columns, features.names, strict=True))


def count_bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of bins ``(-inf, e1], ..., (ek, inf)`` of unsorted finite values.

    A value equal to an edge belongs to the bin that edge closes. The spark backend's
    executors count their partitions with this function too.
    """
    bins = np.searchsorted(edges, values, side="left")
    return np.bincount(bins, minlength=edges.size + 1).astype(np.int64)


def _frame(sample: Sample) -> pd.DataFrame:
    if not isinstance(sample, FrameSample):
        raise TypeError(f"the local backend holds rows in this process, not {type(sample)}")
    return sample.frame


def finite_values(sample: Sample, column: str) -> tuple[np.ndarray, int]:
    """A column's finite values as float64 (text parsed as numbers), and how many are missing."""
    series = _frame(sample)[column]
    if not pd.api.types.is_numeric_dtype(series):  # booleans are numeric; text is parsed
        series = pd.to_numeric(series, errors="coerce")
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = values[np.isfinite(values)]
    return finite, int(values.size - finite.size)


class LocalStatistics:
    """:class:`core.compute.statistics.StatisticsCompute` on the local backend.

    Aggregating rows of this process needs no store: ``LocalStatistics()`` serves any
    :class:`FrameSample`; windows and joins need the store of :class:`LocalCompute`.
    """

    distributed = False
    store: FeatureStore

    def read_window(
        self, location: str, columns: list[str], *, start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        """See :meth:`core.compute.statistics.StatisticsCompute.read_window`."""
        if "://" in location:
            raise InputError(f"{location}: a location only the cluster reads needs --profile spark")
        return read_time_window(location, columns, start=start, end=end)

    def snapshot_window(
        self, sources: Sequence[SnapshotSource], *, window: timedelta, until: datetime | None
    ) -> tuple[Sample, tuple[pd.Timestamp, pd.Timestamp]]:
        """See :meth:`core.compute.statistics.StatisticsCompute.snapshot_window`."""
        frames = []
        for snapshot in sources:
            source = snapshot.source
            path = Path(source.path)
            if not path.exists():
                raise TableReadError(f"offline table {path} does not exist (run `churn ingest`)")
            reverse = {mapped: column for column, mapped in (source.field_mapping or {}).items()}
            names = {reverse.get(key, key): key for key in snapshot.keys}
            table = pd.read_parquet(path, columns=[*names, source.timestamp_field])
            table = table.rename(columns={**names, source.timestamp_field: TIMESTAMP})
            table[TIMESTAMP] = pd.to_datetime(table[TIMESTAMP], utc=True)
            frames.append(table)
        snapshots = pd.concat(frames, ignore_index=True).drop_duplicates() if frames else None
        if snapshots is None or snapshots[TIMESTAMP].isna().all():
            raise InputError("the snapshot tables hold no snapshot")
        end = utc_timestamp(until) if until is not None else snapshots[TIMESTAMP].max()
        start = end - pd.Timedelta(window)
        stamps = snapshots[TIMESTAMP]
        rows = snapshots.loc[(stamps > start) & (stamps <= end)].reset_index(drop=True)
        return FrameSample(rows), (start, end)

    def join_features(
        self,
        features: ServiceFeatures,
        entity_rows: Sample,
        *,
        as_available_then: bool,
        stack: ExitStack,
    ) -> Sample:
        """See :meth:`core.compute.statistics.StatisticsCompute.join_features`."""
        job = self.store.get_historical_features(
            entity_df=_frame(entity_rows),
            features=features.feast_service,
            full_feature_names=True,
            filter_by_created_timestamp=as_available_then,
        )
        joined = job.to_df().rename(columns=short_feature_names(features))
        joined[TIMESTAMP] = pd.to_datetime(joined[TIMESTAMP], utc=True)
        kept = [*features.join_keys, TIMESTAMP, *features.names]
        return FrameSample(joined[kept].reset_index(drop=True))

    def to_pandas(self, sample: Sample, columns: list[str] | None = None) -> pd.DataFrame:
        """See :meth:`core.compute.statistics.StatisticsCompute.to_pandas`."""
        frame = _frame(sample)
        return frame if columns is None else frame[columns]

    def add_scores(
        self, sample: Sample, scorer: Scorer, *, column: str, stack: ExitStack
    ) -> Sample:
        """See :meth:`core.compute.statistics.StatisticsCompute.add_scores`."""
        frame = _frame(sample)
        return FrameSample(frame.assign(**{column: scorer(frame)}))

    def sample_rows(
        self, sample: Sample, columns: list[str], *, rows: int, seed: int
    ) -> pd.DataFrame:
        """See :meth:`core.compute.statistics.StatisticsCompute.sample_rows`."""
        frame = _frame(sample)[columns]
        if len(frame) > rows:
            frame = frame.sample(n=rows, random_state=seed)
        return frame.reset_index(drop=True)

    def summarize(self, sample: Sample, column: str) -> SampleSummary:
        """See :meth:`core.compute.statistics.StatisticsCompute.summarize`."""
        values, nulls = finite_values(sample, column)
        if values.size == 0:
            return SampleSummary(count=0, nulls=nulls, mean=None, std=None)
        return SampleSummary(
            count=int(values.size), nulls=nulls, mean=float(values.mean()), std=float(values.std())
        )

    def distinct_values(self, samples: Sequence[Sample], column: str, *, limit: int) -> int:
        """See :meth:`core.compute.statistics.StatisticsCompute.distinct_values`."""
        pooled = np.concatenate([finite_values(sample, column)[0] for sample in samples])
        return int(pd.unique(pooled).size)

    def category_counts(self, sample: Sample, column: str) -> pd.Series:
        """See :meth:`core.compute.statistics.StatisticsCompute.category_counts`."""
        return pd.Series(finite_values(sample, column)[0]).value_counts(sort=False)

    def quantiles(
        self,
        samples: Sequence[Sample],
        column: str,
        probabilities: Sequence[float],
        *,
        exact: bool,
    ) -> np.ndarray:
        """See :meth:`core.compute.statistics.StatisticsCompute.quantiles` (always exact)."""
        pooled = np.concatenate([finite_values(sample, column)[0] for sample in samples])
        return np.quantile(pooled, np.asarray(probabilities, dtype=np.float64))

    def bin_counts(self, sample: Sample, column: str, edges: np.ndarray) -> np.ndarray:
        """See :meth:`core.compute.statistics.StatisticsCompute.bin_counts`."""
        return count_bins(finite_values(sample, column)[0], np.asarray(edges, dtype=np.float64))
