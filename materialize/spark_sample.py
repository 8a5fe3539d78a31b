"""Random entities of a feature view's source on the spark profile (for ``churn skew-check``).

The source is read through Feast's Spark offline store; the sample is the ``size`` distinct
entities with the smallest seeded hash, a top-k the executors compute in parallel, so the
same seed gives the same entities and only those reach the driver.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def sample_entities_on_spark(
    store: FeatureStore, view: FeatureView, *, at: datetime, size: int, seed: int
) -> list[dict[str, Any]]:
    """Up to ``size`` random distinct entities with a source row at or before ``at``."""
    from feast.feature_view import DUMMY_ENTITY_ID
    from feast.infra.offline_stores.offline_utils import get_offline_store_from_config
    from pyspark.sql import functions as F

    source = view.batch_source
    if source is None:
        return []
    reverse = {mapped: column for column, mapped in (source.field_mapping or {}).items()}
    keys = [column.name for column in view.entity_columns if column.name != DUMMY_ENTITY_ID]
    source_keys = [reverse.get(key, key) for key in keys]
    job = get_offline_store_from_config(store.config.offline_store).pull_all_from_table_or_query(
        config=store.config,
        data_source=source,
        join_key_columns=source_keys,
        feature_name_columns=[],
        timestamp_field=source.timestamp_field,
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
