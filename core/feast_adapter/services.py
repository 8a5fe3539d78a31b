"""Feature services resolved against the registry, and on-demand views' functions.

One resolution for every stage: training joins the service's refs, serving builds its read
plan from it, monitoring rebuilds windows through it and batch scoring checks the model's
columns against it. Each stage turns :class:`FeatureServiceError` into its own error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import FeatureServiceError

if TYPE_CHECKING:
    from feast import FeatureStore

# The entity frame's time column: a request field of that name is filled by Feast itself.
TIMESTAMP = "event_timestamp"


@dataclass(frozen=True)
class ServiceFeatures:
    """What a feature service asks for, resolved against the registry.

    Attributes:
        service: The feature service's name.
        refs: ``"view:feature"`` in the service's order.
        columns: The column of each ref with full feature names (``"view__feature"``).
        names: Short feature names: the model's columns.
        join_keys: Entity columns the entity rows must carry.
        request_fields: Request-time fields the entity rows must carry (besides
            ``event_timestamp``).
        feast_service: Feast's ``FeatureService`` object (for retrievals and read plans).
    """

    service: str
    refs: list[str]
    columns: list[str]
    names: list[str]
    join_keys: list[str]
    request_fields: list[str]
    feast_service: Any = field(default=None, compare=False, repr=False)


def get_feature_service(store: FeatureStore, service_name: str) -> Any:
    """Feast's ``FeatureService`` of that name.

    Raises:
        FeatureServiceError: No such service in the store's project (known ones listed).
    """
    from feast.errors import FeatureServiceNotFoundException

    try:
        return store.get_feature_service(service_name)
    except FeatureServiceNotFoundException as error:
        known = sorted(s.name for s in store.list_feature_services())
        raise FeatureServiceError(
            f"feature service {service_name!r} not found in Feast project {store.project!r} "
            f"(known: {', '.join(known) or 'none'})"
        ) from error


def resolve_service_features(store: FeatureStore, service_name: str) -> ServiceFeatures:
    """Read a feature service's features, entity keys and request fields from the registry.

    Raises:
        FeatureServiceError: The service does not exist, or two features share a short name.
    """
    service = get_feature_service(store, service_name)
    refs, columns, names = [], [], []
    join_keys: dict[str, None] = {}
    request_fields: dict[str, None] = {}
    for projection in service.feature_view_projections:
        view_name = projection.name_to_use()
        for feature in projection.features:
            refs.append(f"{view_name}:{feature.name}")
            columns.append(f"{view_name}__{feature.name}")
            names.append(feature.name)
        keys, fields = _projection_inputs(store, projection.name, projection.join_key_map)
        join_keys.update(dict.fromkeys(keys))
        request_fields.update(dict.fromkeys(fields))
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise FeatureServiceError(
            f"feature service {service_name!r} has several features named "
            f"{', '.join(duplicated)}: the model needs distinct column names"
        )
    return ServiceFeatures(
        service=service_name,
        refs=refs,
        columns=columns,
        names=names,
        join_keys=list(join_keys),
        request_fields=[name for name in request_fields if name != TIMESTAMP],
        feast_service=service,
    )


def _projection_inputs(
    store: FeatureStore, view_name: str, join_key_map: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Entity columns and request fields one projection needs in the entity frame."""
    from feast.errors import FeatureViewNotFoundException

    try:
        view = store.get_feature_view(view_name)
    except FeatureViewNotFoundException:
        odfv = store.get_on_demand_feature_view(view_name)
        keys: list[str] = []
        for source in odfv.source_feature_view_projections.values():
            source_keys, _ = _projection_inputs(store, source.name, source.join_key_map)
            keys.extend(source_keys)
        return keys, list(odfv.get_request_data_schema())
    keys = [join_key_map.get(column.name, column.name) for column in view.entity_columns]
    return keys, []


def on_demand_function(view: Any) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
    """The Python function Feast runs for an on-demand view (None when it has none).

    It is the function Feast rehydrated from the registry's source text; call
    ``core.feast_trust.check_on_demand_sources`` first so that text is the repo's.
    """
    transformation = getattr(view, "feature_transformation", None)
    if transformation is None:
        return None
    function: Callable[[dict[str, Any]], dict[str, Any]] = transformation.udf
    return function
