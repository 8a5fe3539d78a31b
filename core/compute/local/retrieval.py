"""Point-in-time joins, staged reads and the leakage audit's source reads on the local backend.

Feast's offline store (DuckDB) joins in this process; the joined rows are a pandas frame.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pandas as pd

from core.compute.retrieval import SourceCheck, pull_source_rows

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore
    from feast.infra.offline_stores.offline_store import RetrievalJob


class LocalRetrieval:
    """:class:`core.compute.retrieval.RetrievalCompute` on the local backend."""

    store: FeatureStore

    @contextmanager
    def point_in_time_join(
        self,
        entity_rows: pd.DataFrame,
        *,
        features: FeatureService | list[str],
        label: str,
        filter_by_created_timestamp: bool = True,
    ) -> Iterator[LocalJoinedRows]:
        """See :meth:`core.compute.retrieval.RetrievalCompute.point_in_time_join`."""
        job = self.store.get_historical_features(
            entity_df=entity_rows,
            features=features,
            full_feature_names=True,
            filter_by_created_timestamp=filter_by_created_timestamp,
        )
        yield LocalJoinedRows(job.to_df(), store=self.store)

    @contextmanager
    def historical_features(
        self, entity_df: pd.DataFrame, *, label: str, **options: Any
    ) -> Iterator[RetrievalJob]:
        """Feast's ``get_historical_features`` (nothing is staged in this process)."""
        yield self.store.get_historical_features(entity_df=entity_df, **options)

    def retrieval_to_pandas(
        self, job: RetrievalJob, columns: list[str], *, label: str
    ) -> pd.DataFrame:
        """Feast's ``to_df()``, only ``columns`` kept."""
        frame = job.to_df()
        return frame[[column for column in columns if column in frame.columns]]


class LocalJoinedRows:
    """:class:`core.compute.retrieval.JoinedRows` as a pandas frame in this process."""

    def __init__(self, frame: pd.DataFrame, *, store: FeatureStore):
        self.frame = frame
        self.store = store

    @property
    def columns(self) -> list[str]:
        """The joined rows' columns."""
        return [str(column) for column in self.frame.columns]

    def count(self) -> int:
        """Number of joined rows."""
        return len(self.frame)

    def count_distinct(self, column: str) -> int:
        """Number of distinct values of one column."""
        return int(self.frame[column].nunique())

    def to_pandas(self, columns: list[str]) -> pd.DataFrame:
        """The rows with only ``columns``."""
        return self.frame[columns].copy()

    def count_rows_without_source(
        self, checks: Sequence[SourceCheck], *, row_id: str, time_column: str
    ) -> int:
        """See :meth:`core.compute.retrieval.JoinedRows.count_rows_without_source`."""
        sources: dict[tuple[object, ...], pd.DataFrame] = {}
        leaking: set[object] = set()
        for check in checks:
            key = (check.view.name, check.start, check.end)
            if key not in sources:
                sources[key] = _source_rows(self.store, check)
            leaking |= _unsupported_rows(
                self.frame, sources[key], check, row_id=row_id, time_column=time_column
            )
        return len(leaking)


def _source_rows(store: FeatureStore, check: SourceCheck) -> pd.DataFrame:
    """The view's source rows in the check's range, with ``_source_time`` (and created)."""
    source = check.view.batch_source
    job = pull_source_rows(store, check.view, start=check.start, end=check.end)
    assert source is not None  # checked by pull_source_rows
    frame = job.to_df().rename(columns=dict(source.field_mapping or {}))
    frame = frame.rename(columns={source.timestamp_field: "_source_time"})
    if source.created_timestamp_column:
        frame = frame.rename(columns={source.created_timestamp_column: "_source_created"})
    return frame


def _unsupported_rows(
    joined: pd.DataFrame, source: pd.DataFrame, check: SourceCheck, *, row_id: str, time_column: str
) -> set[object]:
    """Row ids whose value of one feature has no source row available at the row's time."""
    keys, label_keys = check.keys, list(check.label_keys)
    used = joined.loc[
        joined[check.column].notna(), [row_id, time_column, *label_keys, check.column]
    ]
    used = used.rename(columns=dict(zip(label_keys, keys, strict=True)))
    used = used.assign(_value=used[check.column].astype("float64"))
    candidates = source.loc[source[check.feature].notna()]
    candidates = candidates.assign(_value=candidates[check.feature].astype("float64"))
    time_columns = [c for c in ("_source_time", "_source_created") if c in candidates]
    pairs = used.merge(candidates[[*keys, "_value", *time_columns]], on=[*keys, "_value"])
    label_time = pd.to_datetime(pairs[time_column], utc=True)
    source_time = pd.to_datetime(pairs["_source_time"], utc=True)
    valid = source_time <= label_time
    if "_source_created" in pairs:
        valid &= pd.to_datetime(pairs["_source_created"], utc=True) <= label_time
    if check.view.ttl:
        valid &= source_time >= label_time - check.view.ttl
    legitimate = set(pairs.loc[valid, row_id].tolist())
    return set(used[row_id].tolist()) - legitimate
