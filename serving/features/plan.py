"""A feature service resolved once into a read plan for the online store.

At model load the feature service named by the model's tags is resolved (through
:func:`core.feast_adapter.services.resolve_service_features`, the resolution every stage
uses) into a :class:`FeaturePlan`: which hash fields of which feature view to read, which
on-demand transformations to run, and where each model column comes from. The hash fields
come from :class:`core.feast_adapter.layout.RedisLayout`, the layout the materialization
engine writes with. Before the direct Redis path is allowed, the adapter's self-check
writes a sample row through Feast's own code and checks that the plan's keys and fields
find it and decode it; on any difference the plan takes the SDK path and says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from core.feast_adapter.layout import RedisLayout
from core.feast_adapter.selfcheck import check_reader
from core.feast_adapter.services import (
    FeatureServiceError,
    on_demand_function,
    resolve_service_features,
)
from core.missing_values import MissingValuePolicy, declared_policy
from serving.features.rows import decode_value

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)

__all__ = ["FeaturePlan", "FeatureServiceError", "resolve_feature_plan"]


@dataclass(frozen=True)
class ViewRead:
    """The hash fields of one feature view to read per user."""

    name: str
    features: tuple[str, ...]
    fields: tuple[bytes, ...]  # murmur3 of "view:feature" per feature, then b"_ts:view"
    ttl: timedelta | None


@dataclass(frozen=True)
class Transform:
    """One on-demand view: its Python function and the outputs the plan needs."""

    name: str
    function: Callable[[dict[str, Any]], dict[str, Any]]
    singleton: bool
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class FeaturePlan:
    """A feature service resolved once against the registry.

    Attributes:
        project: Feast project.
        service_name: The feature service.
        features: Model columns, in model order.
        join_key: The single int64 join key every view is keyed by (``user_id``).
        request_field: The request-time field filled with the time of the request.
        fast_path: Whether the direct Redis reader can execute this plan, else why not.
        service: Feast's FeatureService object (for the SDK path).
        missing_policy: The missing-value policy the service declares in its tags (None:
            the default for the model; :mod:`core.missing_values`).
    """

    project: str
    service_name: str
    features: tuple[str, ...]
    join_key: str
    request_field: str | None
    fast_path: bool
    fast_path_gap: str
    service: Any
    missing_policy: MissingValuePolicy | None = None
    views: tuple[ViewRead, ...] = ()
    transforms: tuple[Transform, ...] = ()
    # Per model column: ("view", view index, feature index) or ("transform", output name).
    columns: tuple[tuple[Any, ...], ...] = field(default=())


_NUMERIC_TYPES = ("Float64", "Float32", "Int64", "Int32", "Bool")


def _type_name(dtype: Any) -> str:
    return str(getattr(dtype, "name", dtype)).title().replace("_", "")


def resolve_feature_plan(
    store: FeatureStore,
    *,
    service_name: str,
    features: Sequence[str],
    project: str | None,
    layout: RedisLayout | None = None,
) -> FeaturePlan:
    """Resolve ``service_name`` in the store's registry into a plan for ``features``.

    Args:
        store: An open feature store (its registry is refreshed first).
        service_name: The feature service named by the model version's tags.
        features: The model's columns in model order (``feast.features`` tag).
        project: The Feast project the model was trained on (``feast.project`` tag).
        layout: Feast's Redis layout as the direct reader reads it (default: the one the
            engine writes with); checked against Feast's own writes before use.

    Raises:
        FeatureServiceError: The project differs, the service does not exist, a model column
            is not in the service, a feature is not numeric, the service needs inputs the
            API does not have, or its missing-value tag is unknown; the message names them.
    """
    layout = layout or RedisLayout()
    if project is not None and project != store.project:
        raise FeatureServiceError(
            f"the model was trained on Feast project {project!r}, this store serves "
            f"project {store.project!r}"
        )
    store.refresh_registry()
    service = resolve_service_features(store, service_name).feast_service
    missing_policy = declared_policy(getattr(service, "tags", None), service=service_name)
    batch_views = {view.name: view for view in store.list_feature_views()}
    odfvs = {view.name: view for view in store.list_on_demand_feature_views()}
    offered = _offered_features(service, service_name, features)
    join_key = _join_key(service, service_name, batch_views)
    sources = _Sources()
    for projection in service.feature_view_projections:
        sources.add(projection, batch_views, odfvs)
    request_field = sources.request_field(service_name)
    online = store.config.online_store
    redis_type = getattr(online, "redis_type", None)
    # One Redis or a Redis Cluster (the reader sends each master its keys); not a sentinel.
    if getattr(online, "type", None) != "redis" or getattr(redis_type, "value", None) not in (
        "redis",
        "redis_cluster",
    ):
        sources.gaps.append(
            f"online store {getattr(online, 'type', online)!r} is not Redis or Redis Cluster"
        )
    versioning = bool(
        getattr(store.config.registry, "enable_online_feature_view_versioning", False)
    )
    views = tuple(
        _view_read(batch_views[name], tuple(wanted), versioning, layout)
        for name, wanted in sources.views.items()
    )
    if not sources.gaps:
        sources.gaps.extend(
            _self_check(store, [batch_views[view.name] for view in views], views, layout)
        )
    columns: list[tuple[Any, ...]] = []
    for name in features:
        index = next((i for i, view in enumerate(views) if view.name == offered[name]), None)
        if index is None:
            columns.append(("transform", name))
        else:
            columns.append(("view", index, views[index].features.index(name)))
    return FeaturePlan(
        project=store.project,
        service_name=service_name,
        features=tuple(features),
        join_key=join_key,
        request_field=request_field,
        fast_path=not sources.gaps,
        fast_path_gap="; ".join(sources.gaps),
        service=service,
        missing_policy=missing_policy,
        views=views,
        transforms=tuple(sources.transforms),
        columns=tuple(columns),
    )


def _offered_features(service: Any, service_name: str, features: Sequence[str]) -> dict[str, str]:
    """Feature -> the view of the service offering it; every model feature must be numeric."""
    offered: dict[str, tuple[str, Any]] = {}
    for projection in service.feature_view_projections:
        for feature in projection.features:
            offered[feature.name] = (projection.name, feature.dtype)
    missing = [name for name in features if name not in offered]
    if missing:
        raise FeatureServiceError(
            f"model feature(s) {', '.join(missing)} are not in feature service "
            f"{service_name!r} (it offers {', '.join(offered)})"
        )
    not_numeric = [
        f"{name} ({_type_name(offered[name][1])})"
        for name in features
        if _type_name(offered[name][1]) not in _NUMERIC_TYPES
    ]
    if not_numeric:
        raise FeatureServiceError(f"model feature(s) {', '.join(not_numeric)} are not numeric")
    return {name: view for name, (view, _) in offered.items()}


def _join_key(service: Any, service_name: str, batch_views: dict[str, Any]) -> str:
    """The one integer join key of the service's feature views (the API's user_id)."""
    join_keys: set[str] = set()
    for projection in service.feature_view_projections:
        view = batch_views.get(projection.name)
        if view is None:
            continue
        keys = view.entity_columns
        if len(keys) != 1 or _type_name(keys[0].dtype) not in ("Int64", "Int32"):
            raise FeatureServiceError(
                f"feature view {view.name!r} is not keyed by one integer join key"
            )
        join_keys.add(keys[0].name)
    if len(join_keys) > 1:
        raise FeatureServiceError(
            f"feature service {service_name!r} mixes join keys {sorted(join_keys)}"
        )
    return join_keys.pop() if join_keys else "user_id"


class _Sources:
    """What a service reads: view features, on-demand functions, request fields, gaps."""

    def __init__(self) -> None:
        self.views: dict[str, dict[str, None]] = {}  # view -> features (an ordered set)
        self.transforms: list[Transform] = []
        self.request_fields: dict[str, Any] = {}  # name -> dtype
        self.gaps: list[str] = []  # why the direct Redis path cannot run this service

    def add(self, projection: Any, batch_views: dict[str, Any], odfvs: dict[str, Any]) -> None:
        """Account for one projection of the service."""
        if projection.join_key_map:
            self.gaps.append(f"{projection.name} renames join keys")
        if projection.name in batch_views:
            self._read(projection.name, projection.features)
            return
        odfv = odfvs.get(projection.name)
        if odfv is None:
            raise FeatureServiceError(f"view {projection.name!r} of the service is unknown")
        for request_source in odfv.source_request_sources.values():
            self.request_fields.update({f.name: f.dtype for f in request_source.schema})
        for source_name, source in odfv.source_feature_view_projections.items():
            if source_name in batch_views:
                self._read(source_name, source.features)
            else:
                self.gaps.append(f"{odfv.name} reads on-demand view {source_name}")
        if odfv.mode != "python" or odfv.aggregations or odfv.write_to_online_store:
            self.gaps.append(f"{odfv.name} is not a plain python-mode view")
        elif (function := on_demand_function(odfv)) is not None:
            self.transforms.append(
                Transform(
                    name=odfv.name,
                    function=function,
                    singleton=bool(odfv.singleton),
                    outputs=tuple(f.name for f in projection.features),
                )
            )

    def request_field(self, service_name: str) -> str | None:
        """The single request field, which must take the request time."""
        if not self.request_fields:
            return None
        if len(self.request_fields) == 1:
            [(name, dtype)] = self.request_fields.items()
            if _type_name(dtype) in ("UnixTimestamp", "Int64"):
                return name
        raise FeatureServiceError(
            f"feature service {service_name!r} needs request field(s) "
            f"{', '.join(sorted(self.request_fields))}; the API supplies only the request "
            "time (one timestamp field)"
        )

    def _read(self, view: str, fields: Sequence[Any]) -> None:
        self.views.setdefault(view, {}).update(dict.fromkeys(f.name for f in fields))


def _view_read(
    view: Any, features: tuple[str, ...], versioning: bool, layout: RedisLayout
) -> ViewRead:
    """The hash fields Feast's Redis store uses for these features of ``view``."""
    return ViewRead(
        name=view.name,
        features=features,
        fields=layout.view_fields(layout.view_name(view, versioning=versioning), features),
        ttl=view.ttl if view.ttl else None,
    )


def _self_check(
    store: FeatureStore, feast_views: Sequence[Any], views: Sequence[ViewRead], layout: RedisLayout
) -> list[str]:
    """Why the direct reader must not read these views (empty when it may).

    Each view's sample row is written through Feast's own code (recorded, not sent); the
    reader's key and fields must find it and decode it to the same values.
    """
    config = store.config
    gaps = []
    for feast_view, view in zip(feast_views, views, strict=True):
        check = check_reader(
            feast_view,
            view.features,
            project=store.project,
            key_version=int(config.entity_key_serialization_version),
            versioning=bool(
                getattr(config.registry, "enable_online_feature_view_versioning", False)
            ),
            layout=layout,
            decode=decode_value,
        )
        if not check.ok:
            # Loud: the direct path would read nothing or the wrong bytes.
            logger.error(
                "feature view %s: the direct Redis reader disagrees with Feast's layout (%s); "
                "serving reads it through the Feast SDK instead. Check the Feast version "
                "against core/feast_adapter.",
                view.name,
                check.describe(),
            )
            gaps.append(f"self-check failed: {check.describe()}")
    return gaps


def replace_fast_path(plan: FeaturePlan, gap: str) -> FeaturePlan:
    """The plan, sent to the SDK path for the reason ``gap``."""
    return replace(plan, fast_path=False, fast_path_gap=gap)
