"""Point-in-time joins, staged reads and the leakage audit's source reads on the spark backend."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from core.compute.spark import io

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore
    from feast.infra.offline_stores.offline_store import RetrievalJob


class SparkRetrieval:
    """:class:`core.compute.retrieval.RetrievalCompute` on the spark backend."""

    store: FeatureStore

    @contextmanager
    def historical_features(
        self, entity_df: pd.DataFrame, *, label: str, **options: Any
    ) -> Iterator[RetrievalJob]:
        """The entity rows staged for the executors (not shipped from the driver's JVM)."""
        with io.historical_features(self.store, entity_df, label=label, **options) as job:
            yield job

    def retrieval_to_pandas(
        self, job: RetrievalJob, columns: list[str], *, label: str
    ) -> pd.DataFrame:
        """Staged by the executors, read back in bounded Arrow batches, then removed."""
        with io.staged_retrieval(self.store, job, label=label) as staged:
            return staged.to_pandas(columns)
