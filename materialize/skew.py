"""Stage: prove training/serving parity (``churn skew-check --sample N``).

For N random entities of the offline source, the online vector of a feature service
(``get_online_features`` with the request time set to the materialization time) is
compared with the offline point-in-time value at that same time
(``get_historical_features``): same feature service, same on-demand transforms. Any
difference is skew: a value materialized wrongly, a range never materialized, late data, or
an online value kept past the view's ttl.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from feast import FeatureService, FeatureStore, FeatureView

from core.compute import OfflineCompute, offline_compute
from core.errors import InputError
from core.feast_adapter.services import get_feature_service
from core.feast_store import feature_store_session
from core.settings import FeastSettings
from core.stage_metrics import record_skew_check

# Floats equal to this relative tolerance agree (both sides compute the same expressions).
RELATIVE_TOLERANCE = 1e-9
ONLINE_BATCH = 1_000
EXAMPLES_PER_FEATURE = 3


@dataclass(frozen=True)
class SkewRequest:
    """What ``churn skew-check`` is asked to compare.

    Attributes:
        feast: Repo and profile.
        sample: Number of random entities (fewer when the source has fewer).
        service: Feature service to compare.
        at: Time to compare at; None: the end of the last materialization (the earliest
            among the service's views).
        seed: Seed of the sample; None: random.
    """

    feast: FeastSettings
    sample: int
    service: str
    at: datetime | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Mismatch:
    """One entity whose online and offline values of a feature differ."""

    entity: dict[str, Any]
    online: Any
    offline: Any


@dataclass(frozen=True)
class FeatureSkew:
    """Mismatches of one feature."""

    feature: str
    mismatches: int
    examples: list[Mismatch] = field(default_factory=list)


@dataclass(frozen=True)
class SkewReport:
    """Result of a skew check."""

    service: str
    at: datetime
    entities: int
    features: list[FeatureSkew]

    @property
    def mismatches(self) -> int:
        """Mismatching values over all features."""
        return sum(feature.mismatches for feature in self.features)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def values_agree(online: Any, offline: Any) -> bool:
    """Whether two feature values agree: both missing, close floats, or equal."""
    if _missing(online) or _missing(offline):
        return _missing(online) and _missing(offline)
    if isinstance(online, int | float) and isinstance(offline, int | float):
        return math.isclose(float(online), float(offline), rel_tol=RELATIVE_TOLERANCE, abs_tol=0.0)
    return bool(online == offline)


def _service_views(store: FeatureStore, service: FeatureService) -> list[FeatureView]:
    """The batch feature views behind a service (on-demand views are computed, not stored).

    Raises:
        InputError: No batch view, or views with different join keys.
    """
    names = {projection.name for projection in service.feature_view_projections}
    batch_names = {view.name for view in store.list_feature_views()}
    views = [store.get_feature_view(name) for name in sorted(names & batch_names)]
    if not views:
        raise InputError(f"feature service {service.name!r} reads no batch feature view")
    join_keys = {tuple(sorted(column.name for column in view.entity_columns)) for view in views}
    if len(join_keys) != 1:
        raise InputError(
            f"the views of {service.name!r} have different join keys: {sorted(join_keys)}"
        )
    return views


def _request_fields(store: FeatureStore, service: FeatureService) -> list[str]:
    """Request-time fields the service's on-demand views need."""
    names = {projection.name for projection in service.feature_view_projections}
    fields: set[str] = set()
    for odfv in store.list_on_demand_feature_views():
        if odfv.name in names:
            for request in odfv.source_request_sources.values():
                fields.update(schema_field.name for schema_field in request.schema)
    return sorted(fields)


def _materialized_at(views: list[FeatureView]) -> datetime:
    ends = {view.name: view.most_recent_end_time for view in views}
    never = sorted(name for name, end in ends.items() if end is None)
    if never:
        raise InputError(
            f"feature view(s) {', '.join(never)} never materialized: run `churn materialize`"
        )
    # The earliest end is the latest time every view is materialized up to.
    return min(end.astimezone(UTC) for end in ends.values() if end is not None)


def check_skew(
    settings: FeastSettings,
    *,
    sample: int,
    service: str = "churn_v1",
    at: datetime | None = None,
    seed: int | None = None,
) -> SkewReport:
    """Compare online and offline values of a feature service for random entities.

    Args:
        settings: Repo and profile.
        sample: Number of random entities (fewer when the source has fewer).
        service: Feature service to compare.
        at: Time to compare at; by default the end of the last materialization (the
            earliest among the service's views).
        seed: Seed of the sample; random when omitted.

    Raises:
        InputError: Bad sample size, unknown service, nothing materialized, or views
            with different join keys.
        ConfigurationError: The profile cannot be used as configured.
        OnDemandSourceMismatch: The registry's on-demand view code is not the repo's
            (checked before anything runs it).
    """
    if sample < 1:
        raise InputError(f"--sample must be at least 1, got {sample}")
    with feature_store_session(settings) as store:
        feature_service: FeatureService = get_feature_service(store, service)
        views = _service_views(store, feature_service)
        at = at.astimezone(UTC) if at is not None else _materialized_at(views)
        seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        compute = offline_compute(store)
        entities = compute.sample_entities(views[0], at=at, size=sample, seed=seed)
        features = [
            feature.name
            for projection in feature_service.feature_view_projections
            for feature in projection.features
        ]
        if not entities:
            return SkewReport(service, at, 0, [FeatureSkew(name, 0) for name in features])
        requests = {name: at for name in _request_fields(store, feature_service)}
        online = _online_values(store, feature_service, entities, requests)
        offline = _offline_values(compute, feature_service, entities, requests, at)
    report = []
    for name in features:
        mismatches = [
            Mismatch(entity, online[name][index], offline[name][index])
            for index, entity in enumerate(entities)
            if not values_agree(online[name][index], offline[name][index])
        ]
        report.append(FeatureSkew(name, len(mismatches), mismatches[:EXAMPLES_PER_FEATURE]))
    return SkewReport(service, at, len(entities), report)


def _online_values(
    store: FeatureStore,
    service: FeatureService,
    entities: list[dict[str, Any]],
    requests: dict[str, datetime],
) -> dict[str, list[Any]]:
    """The service's online values per feature, in the order of ``entities``."""
    values: dict[str, list[Any]] = {}
    for low in range(0, len(entities), ONLINE_BATCH):
        rows = [{**entity, **requests} for entity in entities[low : low + ONLINE_BATCH]]
        found = store.get_online_features(features=service, entity_rows=rows).to_dict()
        for name, column in found.items():
            values.setdefault(name, []).extend(column)
    return values


def _offline_values(
    compute: OfflineCompute,
    service: FeatureService,
    entities: list[dict[str, Any]],
    requests: dict[str, datetime],
    at: datetime,
) -> dict[str, list[Any]]:
    """The service's point-in-time values at ``at`` per feature, in the order of ``entities``."""
    entity_df = pd.DataFrame(entities)
    for name in [*requests, "event_timestamp"]:
        entity_df[name] = pd.Timestamp(at)
    keys = list(entities[0])
    names = [feature.name for view in service.feature_view_projections for feature in view.features]
    joined = compute.point_in_time_values(
        entity_df, service=service, columns=[*keys, *names], label="skew"
    )
    # The join returns rows in its own order: line them up with the entities.
    ordered = entity_df[keys].merge(joined, on=keys, how="left", validate="one_to_one")
    return {
        name: [None if pd.isna(value) else value for value in ordered[name].tolist()]
        for name in joined.columns
        if name not in entity_df.columns
    }


def run_skew_check(request: SkewRequest) -> SkewReport:
    """``churn skew-check``: compare online and offline values, then record the metrics.

    Raises:
        InputError: Bad sample size, unknown service, nothing materialized, views with
            different join keys, a profile that cannot be used as configured, or
            on-demand view code in the registry that is not the repo's.
    """
    report = check_skew(
        request.feast,
        sample=request.sample,
        service=request.service,
        at=request.at,
        seed=request.seed,
    )
    record_skew_check(
        service=report.service, entities=report.entities, mismatches=report.mismatches
    )
    return report
