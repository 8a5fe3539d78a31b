"""The point-in-time audit: does a training row use a value newer than its label?

Independently of Feast's join, each batch view's source table is read again and every used
feature value is matched with a source row that was available at the label time. The
result is a count, reported on the training run; the pipeline refuses a set that leaks.

What is audited (every batch feature of the service, over the source rows that could serve
the label times) is decided here, once; the backend that holds the joined rows does the
matching (:meth:`core.compute.retrieval.JoinedRows.count_rows_without_source`), in this
process or on the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pandas as pd
from feast import FeatureService, FeatureStore
from feast.errors import FeatureViewNotFoundException

from core.compute.retrieval import JoinedRows, SourceCheck
from core.tables import EVENT_TIMESTAMP

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
    joined: JoinedRows,
    *,
    service: FeatureService,
    label_times: pd.Series,
) -> LeakageAudit:
    """Count rows that use a feature value not available at their label time.

    A used (non-null) value is legitimate only if its entity has a source row with that
    value, an event time at or before the label time (and within the view's ttl) and, when
    the source records it, a created time at or before the label time. On-demand features
    are computed from batch values and the label time: they are covered through their
    inputs when those are in the service too (as in ``churn_v1``); ``audited`` lists
    exactly which refs were checked.

    Args:
        store: The feature store.
        joined: Feast's joined rows (full feature names, ``event_timestamp``, the row id).
        service: The feature service used.
        label_times: The label rows' times (they bound the source rows read).
    """
    first, last = pd.Timestamp(label_times.min()), pd.Timestamp(label_times.max())
    checks: list[SourceCheck] = []
    audited: list[str] = []
    for projection in service.feature_view_projections:
        try:
            view = store.get_feature_view(projection.name)
        except FeatureViewNotFoundException:
            continue  # on-demand: derived from audited inputs and the label time
        keys = [column.name for column in view.entity_columns]
        label_keys = tuple(projection.join_key_map.get(key, key) for key in keys)
        start = (first - (view.ttl or timedelta(0)) - _AUDIT_MARGIN).to_pydatetime()
        for feature in projection.features:
            column = f"{projection.name_to_use()}__{feature.name}"
            if column not in joined.columns:
                continue
            audited.append(f"{projection.name_to_use()}:{feature.name}")
            checks.append(
                SourceCheck(
                    column=column,
                    view=view,
                    feature=feature.name,
                    label_keys=label_keys,
                    start=start,
                    end=last.to_pydatetime(),
                )
            )
    leaking = joined.count_rows_without_source(checks, row_id=ROW_ID, time_column=TIMESTAMP)
    return LeakageAudit(leaking_rows=leaking, audited=tuple(audited))
