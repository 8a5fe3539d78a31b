"""The point-in-time audit: does a training row use a value newer than its label?

Independently of Feast's join, each batch view's source table is read again and every used
feature value is matched with a source row that was available at the label time. The
result is a count, reported on the training run; the pipeline refuses a set that leaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from core.tables import EVENT_TIMESTAMP
from training.config import TrainingError

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore, FeatureView

TIMESTAMP = EVENT_TIMESTAMP  # the labels table is the entity frame (core.tables)
ROW_ID = "training_row_id"  # carried through Feast to check that no label row is lost
# A source row older than the label by more than this is never a candidate in the audit.
_AUDIT_MARGIN = timedelta(days=1)


@dataclass(frozen=True)
class LeakageAudit:
    """Result of the point-in-time audit."""

    leaking_rows: int
    audited: tuple[str, ...]  # feature refs that were checked against their source table


def audit_point_in_time(
    store: FeatureStore,
    joined: pd.DataFrame,
    *,
    service: FeatureService,
) -> LeakageAudit:
    """Count rows that use a feature value not available at their label time.

    Independently of Feast's join, each batch view's source table is read again; a used
    (non-null) value is legitimate only if its entity has a source row with that value,
    an event time at or before the label time (and within the view's ttl) and, when the
    source records it, a created time at or before the label time. On-demand features are
    computed from batch values and the label time: they are covered through their inputs
    when those are in the service too (as in ``churn_v1``); ``audited`` lists exactly which
    refs were checked.

    Args:
        store: The feature store.
        joined: Feast's output with full feature names, ``event_timestamp`` and the row id.
        service: The feature service used.
    """
    from feast.errors import FeatureViewNotFoundException

    leaking: set[int] = set()
    audited: list[str] = []
    for projection in service.feature_view_projections:
        try:
            view = store.get_feature_view(projection.name)
        except FeatureViewNotFoundException:
            continue  # on-demand: derived from audited inputs and the label time
        names = [feature.name for feature in projection.features]
        source = _read_source(store, view, joined[TIMESTAMP])
        keys = [column.name for column in view.entity_columns]
        label_keys = [projection.join_key_map.get(key, key) for key in keys]
        for name in names:
            column = f"{projection.name_to_use()}__{name}"
            if column not in joined:
                continue
            leaking |= _leaking_rows(joined, source, column, name, keys, label_keys, view)
            audited.append(f"{projection.name_to_use()}:{name}")
    return LeakageAudit(leaking_rows=len(leaking), audited=tuple(audited))


def _read_source(store: FeatureStore, view: FeatureView, times: pd.Series) -> pd.DataFrame:
    """All rows of a view's batch source that could serve the label times."""
    job, mapping = source_pull(store, view, label_times=(times.min(), times.max()))
    source = view.batch_source
    assert source is not None  # checked by source_pull
    frame = job.to_df().rename(columns=mapping)
    frame = frame.rename(columns={source.timestamp_field: "_source_time"})
    if source.created_timestamp_column:
        frame = frame.rename(columns={source.created_timestamp_column: "_source_created"})
    return frame


def source_pull(
    store: FeatureStore, view: FeatureView, *, label_times: tuple[pd.Timestamp, pd.Timestamp]
) -> tuple[Any, dict[str, str]]:
    """The offline store's job reading a view's source rows that could serve the label times.

    Returns:
        The retrieval job and the source's field mapping (source column -> feature name).

    Raises:
        TrainingError: The view has no batch source.
    """
    from feast.infra.offline_stores.offline_utils import get_offline_store_from_config

    source = view.batch_source
    if source is None:
        raise TrainingError(f"feature view {view.name!r} has no batch source to audit against")
    mapping = dict(source.field_mapping or {})
    reverse = {target: original for original, target in mapping.items()}
    keys = [column.name for column in view.entity_columns]
    names = [feature.name for feature in view.features]
    ttl = view.ttl or timedelta(0)
    offline = get_offline_store_from_config(store.config.offline_store)
    job = offline.pull_all_from_table_or_query(
        config=store.config,
        data_source=source,
        join_key_columns=[reverse.get(key, key) for key in keys],
        feature_name_columns=[reverse.get(name, name) for name in names],
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column or None,
        start_date=(label_times[0] - ttl - _AUDIT_MARGIN).to_pydatetime(),
        end_date=label_times[1].to_pydatetime(),
    )
    return job, mapping


def _leaking_rows(
    joined: pd.DataFrame,
    source: pd.DataFrame,
    column: str,
    name: str,
    keys: list[str],
    label_keys: list[str],
    view: FeatureView,
) -> set[int]:
    """Row ids whose value of one feature has no source row available at the label time."""
    used = joined.loc[joined[column].notna(), [ROW_ID, TIMESTAMP, *label_keys, column]]
    used = used.rename(columns=dict(zip(label_keys, keys, strict=True)))
    used = used.assign(_value=used[column].astype("float64"))
    candidates = source.loc[source[name].notna()].assign(_value=lambda s: s[name].astype("float64"))
    time_columns = [c for c in ("_source_time", "_source_created") if c in candidates]
    pairs = used.merge(candidates[[*keys, "_value", *time_columns]], on=[*keys, "_value"])
    label_time = pairs[TIMESTAMP]
    valid = pd.to_datetime(pairs["_source_time"], utc=True) <= label_time
    if "_source_created" in pairs:
        valid &= pd.to_datetime(pairs["_source_created"], utc=True) <= label_time
    if view.ttl:
        valid &= pd.to_datetime(pairs["_source_time"], utc=True) >= label_time - view.ttl
    legitimate = set(pairs.loc[valid, ROW_ID].tolist())
    return set(used[ROW_ID].tolist()) - legitimate
