"""Entity samples and the offline values of sampled entities on the spark backend.

The source is read through Feast's Spark offline store; a sample is the ``size`` distinct
entities with the smallest seeded hash, a top-k the executors compute in parallel, so the
same seed gives the same entities and only those reach the driver.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
from feast.infra.offline_stores.offline_utils import get_offline_store_from_config

from core.compute.sampling import entity_columns
from core.compute.spark.io import historical_features, retrieval_to_pandas

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore, FeatureView

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SparkSampling:
    """:class:`core.compute.sampling.SamplingCompute` on the spark backend."""

    store: FeatureStore

    def sample_entities(
        self, view: FeatureView, *, at: datetime, size: int, seed: int
    ) -> list[dict[str, Any]]:
        """Up to ``size`` random distinct entities with a source row at or before ``at``."""
        from pyspark.sql import functions as F

        if view.batch_source is None:
            return []
        columns = entity_columns(view)
        source_keys, keys = list(columns.join_keys), list(columns.join_keys.values())
        offline_store = get_offline_store_from_config(self.store.config.offline_store)
        job = offline_store.pull_all_from_table_or_query(
            config=self.store.config,
            data_source=view.batch_source,
            join_key_columns=source_keys,
            feature_name_columns=[],
            timestamp_field=view.batch_source.timestamp_field,
            start_date=_EPOCH,
            end_date=at,
        )
        rows = job.to_spark_df()  # type: ignore[attr-defined]
        entities = (
            rows.select(*[F.col(c).alias(k) for c, k in zip(source_keys, keys, strict=True)])
            .where(" AND ".join(f"`{key}` IS NOT NULL" for key in keys))
            .distinct()
            .withColumn("_rank", F.xxhash64(F.lit(seed), *keys))
            .orderBy("_rank", *keys)
            .limit(size)
            .drop("_rank")
            .collect()
        )
        return [row.asDict() for row in entities]

    def point_in_time_values(
        self,
        entity_rows: pd.DataFrame,
        *,
        service: FeatureService,
        columns: list[str],
        label: str,
    ) -> pd.DataFrame:
        """The service's point-in-time values: the entity rows staged for the executors, the
        joined rows staged by them and read back in bounded batches (only ``columns``).

        Feast's ``to_df()`` would collect the join on the driver and leave its copy in the
        staging location.
        """
        with historical_features(self.store, entity_rows, label=label, features=service) as job:
            return retrieval_to_pandas(self.store, job, columns, label=label)
