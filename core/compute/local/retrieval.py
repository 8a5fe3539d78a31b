"""Point-in-time joins, staged reads and the leakage audit's source reads on the local backend."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore
    from feast.infra.offline_stores.offline_store import RetrievalJob


class LocalRetrieval:
    """:class:`core.compute.retrieval.RetrievalCompute` on the local backend."""

    store: FeatureStore

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
