"""The offline side of ``churn score``: who is scored, and their features at ``--at``.

Both go through the store's offline store, on whichever backend the profile chose
(:func:`core.compute.offline_compute`): the users are read with the offline store's own
``pull_all_from_table_or_query``, so any offline store Feast supports works, and the
features with ``get_historical_features`` through the model's own feature service, so a
score is what ``/predict`` would have answered at that moment.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from feast import FeatureService, FeatureStore
from feast.infra.offline_stores.offline_utils import get_offline_store_from_config

from core.compute import OfflineCompute
from core.errors import FeatureServiceError, OfflineSourceError
from core.feast_adapter.services import ServiceFeatures
from serving.batch.inputs import USER_ID

TIMESTAMP = "event_timestamp"


def list_population(
    store: FeatureStore, compute: OfflineCompute, features: ServiceFeatures, at: datetime
) -> tuple[np.ndarray, datetime]:
    """Users with a row in one of the service's batch sources within its TTL before ``at``.

    Returns:
        The sorted ids, and the start of the earliest window read.

    Raises:
        FeatureServiceError: A view is not keyed by ``user_id``, has no batch source, or
            the service reads no batch source.
    """
    offline = get_offline_store_from_config(store.config.offline_store)
    on_demand = {view.name for view in store.list_on_demand_feature_views()}
    service = store.get_feature_service(features.service)
    ids: list[np.ndarray] = []
    earliest = at
    for projection in service.feature_view_projections:
        if projection.name in on_demand:
            continue
        view = store.get_feature_view(projection.name)
        keys = [projection.join_key_map.get(c.name, c.name) for c in view.entity_columns]
        if keys != [USER_ID]:
            raise FeatureServiceError(
                f"feature view {view.name} is keyed by {keys}; churn score needs {USER_ID!r}"
            )
        ttl = view.ttl if view.ttl and view.ttl > timedelta(0) else None
        start = at - ttl if ttl else datetime(1970, 1, 1, tzinfo=UTC)
        earliest = min(earliest, start)
        source = view.batch_source
        if source is None:
            raise FeatureServiceError(f"feature view {view.name} has no batch source")
        key = source.field_mapping.get(USER_ID, USER_ID)
        job = offline.pull_all_from_table_or_query(
            config=store.config,
            data_source=source,
            join_key_columns=[key],
            feature_name_columns=[],
            timestamp_field=source.timestamp_field,
            start_date=start - timedelta(seconds=1),
            end_date=at + timedelta(seconds=1),
        )
        table = compute.retrieval_to_pandas(job, [key, source.timestamp_field], label="score")
        stamps = pd.to_datetime(table[source.timestamp_field], utc=True)
        inside = (stamps >= pd.Timestamp(start)) & (stamps <= pd.Timestamp(at))
        column = table.columns[0] if USER_ID not in table.columns else USER_ID
        ids.append(table.loc[inside, column].to_numpy(dtype=np.int64))
    if not ids:
        raise FeatureServiceError(f"feature service {features.service} reads no batch source")
    return _sorted_unique(np.concatenate(ids)), earliest


def _sorted_unique(ids: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting: numpy 2's hash-based unique took 0.5 s on 2M ids, this 0.1 s."""
    ordered = np.sort(ids)
    keep = np.empty(len(ordered), dtype=bool)
    keep[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def retrieve_chunk(
    compute: OfflineCompute,
    service: FeatureService,
    features: ServiceFeatures,
    users: np.ndarray,
    at: datetime,
) -> pd.DataFrame:
    """Point-in-time features of ``users`` at ``at``, one row per user, sorted by user.

    Raises:
        OfflineSourceError: The retrieval failed or lost rows.
    """
    entity = pd.DataFrame({USER_ID: users, TIMESTAMP: pd.Timestamp(at)})
    try:
        with compute.historical_features(
            entity,
            label="score",
            features=service,
            full_feature_names=True,
            filter_by_created_timestamp=True,  # no value created after --at (as in training)
        ) as job:
            joined = compute.retrieval_to_pandas(
                job, [USER_ID, TIMESTAMP, *features.columns], label="score"
            )
    except Exception as error:
        raise OfflineSourceError(f"offline retrieval failed: {error}") from error
    if len(joined) != len(users):
        raise OfflineSourceError(
            f"the offline store returned {len(joined)} rows for {len(users)} users"
        )
    renamed = joined.rename(columns=dict(zip(features.columns, features.names, strict=True)))
    return renamed.sort_values(USER_ID, kind="stable").reset_index(drop=True)
