"""Point-in-time joins, staged reads and the leakage audit's source reads: the protocol."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd
    from feast.infra.offline_stores.offline_store import RetrievalJob


class RetrievalCompute(Protocol):
    """Point-in-time joins, staged reads and the leakage audit's source reads."""

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
