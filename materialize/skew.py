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
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.errors import exit_on_error
from cli.options import ProfileOption, profile_settings
from core.compute import uses_spark
from core.compute.spark.io import historical_features, retrieval_to_pandas
from core.errors import InputError
from core.exits import ExitCode
from core.feast_store import feature_store_session
from core.settings import FeastSettings
from materialize.online import parse_time

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore, FeatureView

# Floats equal to this relative tolerance agree (both sides compute the same expressions).
RELATIVE_TOLERANCE = 1e-9
ONLINE_BATCH = 1_000
EXAMPLES_PER_FEATURE = 3


class SkewInputError(InputError):
    """The check cannot run as asked (message says why)."""


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
        SkewInputError: No batch view, or views with different join keys.
    """
    names = {projection.name for projection in service.feature_view_projections}
    batch_names = {view.name for view in store.list_feature_views()}
    views = [store.get_feature_view(name) for name in sorted(names & batch_names)]
    if not views:
        raise SkewInputError(f"feature service {service.name!r} reads no batch feature view")
    join_keys = {tuple(sorted(column.name for column in view.entity_columns)) for view in views}
    if len(join_keys) != 1:
        raise SkewInputError(
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
        raise SkewInputError(
            f"feature view(s) {', '.join(never)} never materialized: run `churn materialize`"
        )
    # The earliest end is the latest time every view is materialized up to.
    return min(end.astimezone(UTC) for end in ends.values() if end is not None)


def _sample(view: FeatureView, *, at: datetime, size: int, seed: int) -> list[dict[str, Any]]:
    from feast.feature_view import DUMMY_ENTITY_ID

    from materialize.engine.reader import parquet_path, sample_entities

    source = view.batch_source
    path = parquet_path(source)
    if source is None or path is None:
        raise SkewInputError(f"feature view {view.name}: its source is not a local Parquet file")
    reverse = {mapped: column for column, mapped in (source.field_mapping or {}).items()}
    join_keys = {
        reverse.get(column.name, column.name): column.name
        for column in view.entity_columns
        if column.name != DUMMY_ENTITY_ID
    }
    timestamp = reverse.get(source.timestamp_field, source.timestamp_field)
    table = sample_entities(path, join_keys, timestamp=timestamp, at=at, size=size, seed=seed)
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


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
        SkewInputError: Bad sample size, unknown service, nothing materialized, or views
            with different join keys.
        ConfigurationError: The profile cannot be used as configured.
    """
    if sample < 1:
        raise SkewInputError(f"--sample must be at least 1, got {sample}")
    with feature_store_session(settings) as store:
        feature_service = _feature_service(store, service)
        views = _service_views(store, feature_service)
        at = at.astimezone(UTC) if at is not None else _materialized_at(views)
        seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        if uses_spark(store):
            from materialize.spark_sample import sample_entities_on_spark

            entities = sample_entities_on_spark(store, views[0], at=at, size=sample, seed=seed)
        else:
            entities = _sample(views[0], at=at, size=sample, seed=seed)
        features = [
            feature.name
            for projection in feature_service.feature_view_projections
            for feature in projection.features
        ]
        if not entities:
            return SkewReport(service, at, 0, [FeatureSkew(name, 0) for name in features])
        requests = {name: at for name in _request_fields(store, feature_service)}
        online = _online_values(store, feature_service, entities, requests)
        offline = _offline_values(store, feature_service, entities, requests, at)
    report = []
    for name in features:
        mismatches = [
            Mismatch(entity, online[name][index], offline[name][index])
            for index, entity in enumerate(entities)
            if not values_agree(online[name][index], offline[name][index])
        ]
        report.append(FeatureSkew(name, len(mismatches), mismatches[:EXAMPLES_PER_FEATURE]))
    return SkewReport(service, at, len(entities), report)


def _feature_service(store: FeatureStore, name: str) -> FeatureService:
    """Feast's service of that name, resolved as every stage resolves it."""
    from core.feast_adapter.services import FeatureServiceError, get_feature_service

    try:
        service: FeatureService = get_feature_service(store, name)
    except FeatureServiceError as error:
        raise SkewInputError(str(error)) from error
    return service


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
    store: FeatureStore,
    service: FeatureService,
    entities: list[dict[str, Any]],
    requests: dict[str, datetime],
    at: datetime,
) -> dict[str, list[Any]]:
    """The service's point-in-time values at ``at`` per feature, in the order of ``entities``."""
    import pandas as pd

    entity_df = pd.DataFrame(entities)
    for name in [*requests, "event_timestamp"]:
        entity_df[name] = pd.Timestamp(at)
    keys = list(entities[0])
    names = [feature.name for view in service.feature_view_projections for feature in view.features]
    with historical_features(store, entity_df, label="skew", features=service) as job:
        # On the spark profile Feast's to_df() would leave its copy in the staging location.
        joined = retrieval_to_pandas(store, job, [*keys, *names], label="skew")
    # The join returns rows in its own order: line them up with the entities.
    ordered = entity_df[keys].merge(joined, on=keys, how="left", validate="one_to_one")
    return {
        name: [None if pd.isna(value) else value for value in ordered[name].tolist()]
        for name in joined.columns
        if name not in entity_df.columns
    }


def skew_check_command(
    sample: Annotated[int, typer.Option(help="Number of random entities to compare.")] = 1000,
    service: Annotated[str, typer.Option(help="Feature service to compare.")] = "churn_v1",
    at: Annotated[
        str | None,
        typer.Option(
            help="Time to compare at (ISO, UTC when naive). Default: the end of the "
            "last materialization."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the sample (default: random).")] = None,
    profile: ProfileOption = None,
) -> None:
    """Compare online and offline feature values of random users; exit 1 on any mismatch."""
    settings = profile_settings(profile)
    with exit_on_error():
        report = check_skew(
            settings,
            sample=sample,
            service=service,
            at=parse_time(at) if at else None,
            seed=seed,
        )
    typer.echo(
        f"skew check of {report.service} at {report.at.isoformat()} on {report.entities:,} "
        f"entities (profile {settings.profile})"
    )
    width = max(len(feature.feature) for feature in report.features)
    typer.echo(f"{'feature':<{width}}  mismatches")
    for feature in report.features:
        typer.echo(f"{feature.feature:<{width}}  {feature.mismatches:>10,}")
    for feature in report.features:
        for example in feature.examples:
            typer.echo(
                f"  {feature.feature}: {example.entity} online={example.online!r} "
                f"offline={example.offline!r}"
            )
    from core.stage_metrics import record_skew_check

    record_skew_check(
        service=report.service, entities=report.entities, mismatches=report.mismatches
    )
    if report.mismatches:
        typer.echo(f"FAIL: {report.mismatches:,} mismatching values", err=True)
        raise typer.Exit(ExitCode.FAILURE)
    typer.echo("OK: online and offline agree on every sampled value")
