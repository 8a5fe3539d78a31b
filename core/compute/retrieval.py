"""Point-in-time joins, staged reads and the leakage audit's source reads: the protocol.

A backend joins entity rows with features as of each row's time and keeps the joined rows
where it computed them (in this process, or staged on the cluster): :class:`JoinedRows`.
The caller then counts them, reads the columns it needs, and checks each used value
against the rows of its view's batch source (:class:`SourceCheck`): only counts and the
columns asked for ever reach the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from core.errors import FeatureServiceError

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureService, FeatureStore, FeatureView
    from feast.infra.offline_stores.offline_store import RetrievalJob


@dataclass(frozen=True)
class SourceCheck:
    """One feature of joined rows, to be matched against its batch view's source rows.

    A used (non-null) value is legitimate only if its entity has a source row holding that
    value whose event time is at or before the joined row's time (and, when the view has a
    ttl, not older than the ttl) and whose created time, when the source records one, is at
    or before that time too.

    Attributes:
        column: The joined rows' column holding the used value.
        view: The batch feature view the value came from.
        feature: The feature's name in the view.
        label_keys: The joined rows' columns holding the view's entity keys, in the order
            of ``view.entity_columns``.
        start: Earliest source event time read.
        end: Latest source event time read.
    """

    column: str
    view: FeatureView
    feature: str
    label_keys: tuple[str, ...]
    start: datetime
    end: datetime

    @property
    def keys(self) -> list[str]:
        """The view's entity key columns (as the source rows name them)."""
        return [column.name for column in self.view.entity_columns]


class JoinedRows(Protocol):
    """The rows of one point-in-time join, held by the backend that computed them."""

    @property
    def columns(self) -> list[str]:
        """The joined rows' columns."""
        ...

    def count(self) -> int:
        """Number of joined rows."""
        ...

    def count_distinct(self, column: str) -> int:
        """Number of distinct values of one column."""
        ...

    def to_pandas(self, columns: list[str]) -> pd.DataFrame:
        """The rows with only ``columns`` (in that order), in no particular row order."""
        ...

    def count_rows_without_source(
        self, checks: Sequence[SourceCheck], *, row_id: str, time_column: str
    ) -> int:
        """Rows with at least one used value that no source row supports (:class:`SourceCheck`).

        Args:
            checks: The features to check.
            row_id: A column identifying each joined row.
            time_column: The joined rows' time (the time each value must be available at).
        """
        ...


class RetrievalCompute(Protocol):
    """Point-in-time joins, staged reads and the leakage audit's source reads."""

    def point_in_time_join(
        self,
        entity_rows: pd.DataFrame,
        *,
        features: FeatureService | list[str],
        label: str,
        filter_by_created_timestamp: bool = True,
    ) -> AbstractContextManager[JoinedRows]:
        """Feast's ``get_historical_features`` of the entity rows, held for the block.

        Feature columns carry full names (``view__feature``). On the cluster the entity rows
        are staged for the executors and the joined rows are staged too; the staged files go
        when the block ends.

        Args:
            entity_rows: Entity keys, ``event_timestamp`` and any columns to carry along.
            features: A feature service or feature refs.
            label: Prefix of staged files' names (which job wrote them).
            filter_by_created_timestamp: Use only values created by each row's time (a
                value back-filled later is not used). Off only to show what a join without
                it would use.
        """
        ...

    def historical_features(
        self, entity_df: pd.DataFrame, *, label: str, **options: Any
    ) -> AbstractContextManager[RetrievalJob]:
        """``store.get_historical_features`` for these entity rows, as a block.

        Args:
            entity_df: The entity rows (pandas).
            label: Names what the backend stages for the retrieval (spark: the entity rows,
                written where the executors read them; removed when the block ends).
            **options: ``features``, ``full_feature_names``, ``filter_by_created_timestamp``...

        Yields:
            The retrieval job; read it (:meth:`retrieval_to_pandas`) inside the block.
        """
        ...

    def retrieval_to_pandas(
        self, job: RetrievalJob, columns: list[str], *, label: str
    ) -> pd.DataFrame:
        """A retrieval job's rows as pandas, only ``columns`` (those it has) kept.

        Local: Feast's ``to_df()``. Spark: staged by the executors and read back in bounded
        Arrow batches, the staged files removed (Feast's ``to_df()`` collects the whole
        result on the driver and leaves its copy behind).
        """
        ...


def pull_source_rows(
    store: FeatureStore, view: FeatureView, *, start: datetime, end: datetime
) -> RetrievalJob:
    """The offline store's job reading a view's batch source rows with event times in a range.

    The rows keep the source's column names (the caller applies ``field_mapping``); the
    created-time column is read too when the source has one.

    Raises:
        FeatureServiceError: The view has no batch source.
    """
    # Imported here: Spark executors import core.compute (through core.compute.spark.io).
    from feast.infra.offline_stores.offline_utils import get_offline_store_from_config

    source = view.batch_source
    if source is None:
        raise FeatureServiceError(f"feature view {view.name!r} has no batch source to read")
    reverse = {target: original for original, target in (source.field_mapping or {}).items()}
    keys = [column.name for column in view.entity_columns]
    names = [feature.name for feature in view.features]
    offline = get_offline_store_from_config(store.config.offline_store)
    return offline.pull_all_from_table_or_query(
        config=store.config,
        data_source=source,
        join_key_columns=[reverse.get(key, key) for key in keys],
        feature_name_columns=[reverse.get(name, name) for name in names],
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column or None,
        start_date=start,
        end_date=end,
    )
