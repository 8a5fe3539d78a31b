"""Stage: load offline features into the online store (``churn materialize``).

Feast drives the run, so the engine is the profile's ``batch_engine`` (our
``materialize.engine.FastEngine``) and Feast records the materialization interval that the
next incremental run starts from, exactly as ``feast materialize[-incremental]`` would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from feast import FeatureStore

from core.errors import InputError, OnlineStoreFullError, OnlineStoreUnavailable
from core.feast_adapter.store import batch_engine_of
from core.feast_store import feature_store_session
from core.settings import FeastSettings
from core.stage_metrics import ViewRun, record_materialization
from materialize.engine.base import MaterializationStats
from materialize.engine.writers import is_out_of_memory


@dataclass(frozen=True)
class MaterializeRequest:
    """What ``churn materialize`` is asked to load.

    Attributes:
        feast: Repo and profile.
        start: Start of the range (inclusive); None: incremental, each view from where its
            last materialization ended.
        end: End of the range (inclusive); None: now.
        views: Feature views to materialize; None: all of them.
    """

    feast: FeastSettings
    start: datetime | None = None
    end: datetime | None = None
    views: tuple[str, ...] | None = None


@dataclass(frozen=True)
class MaterializeResult:
    """What ``materialize_online`` did."""

    start: datetime | None  # None: incremental (each view from its own watermark)
    end: datetime
    engine: str  # the profile's batch engine type
    views: list[MaterializationStats] = field(default_factory=list)
    ttl_seconds: dict[str, float] = field(default_factory=dict)  # per view (0: no ttl)


def parse_time(text: str) -> datetime:
    """An ISO date or date-time; naive means UTC.

    Raises:
        InputError: Not an ISO date or date-time.
    """
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise InputError(
            f"{text!r} is not an ISO date or date-time (e.g. 2026-03-01T12:00:00)"
        ) from error
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _engine_type(config: Any) -> str:
    engine = config.batch_engine_config
    return str(engine.get("type") if isinstance(engine, dict) else engine)


def materialize_online(
    settings: FeastSettings,
    *,
    end: datetime | None = None,
    start: datetime | None = None,
    views: list[str] | None = None,
) -> MaterializeResult:
    """Materialize the range into the profile's online store through Feast.

    Args:
        settings: Repo and profile.
        end: End of the range (inclusive); now when omitted.
        start: Start of the range (inclusive). When omitted the run is incremental: each
            view starts where its last materialization ended (the first time: end minus
            the view's ttl), as ``feast materialize-incremental``.
        views: Feature views to materialize; all of them when omitted.

    Raises:
        InputError: Start after end, nothing registered, or an unknown view.
        ConfigurationError: The profile cannot be used as configured.
        OnlineStoreUnavailable: The online store is unreachable.
        OnlineStoreFullError: The Redis online store is out of memory.
        OfflineSourceError: The offline source cannot be read.
    """
    end = end or datetime.now(UTC)
    if start is not None and start > end:
        raise InputError(f"--start {start.isoformat()} is after --end {end.isoformat()}")
    with feature_store_session(settings) as store:
        _check_views(store, views)
        try:
            if start is None:
                store.materialize_incremental(end_date=end, feature_views=views)
            else:
                store.materialize(start_date=start, end_date=end, feature_views=views)
        # Feast's own engine (when it is configured) raises redis-py's errors, not ours.
        except redis.ConnectionError as error:
            raise OnlineStoreUnavailable(f"cannot reach the Redis online store: {error}") from error
        except redis.ResponseError as error:
            if not is_out_of_memory(error):
                raise
            raise OnlineStoreFullError(
                f"the Redis online store is out of memory: {error}"
            ) from error
        engine = batch_engine_of(store)  # the engine Feast built for this run
        return MaterializeResult(
            start=start,
            end=end,
            engine=_engine_type(store.config),
            views=list(getattr(engine, "results", [])),
            ttl_seconds={
                view.name: view.ttl.total_seconds() if view.ttl else 0.0
                for view in store.list_feature_views()
            },
        )


def _check_views(store: FeatureStore, views: list[str] | None) -> None:
    """Fail when nothing is registered or a requested view is unknown."""
    registered = {view.name for view in store.list_feature_views()}
    if not registered:
        raise InputError(
            f"no feature views registered in project {store.project!r}: run `churn apply` first"
        )
    unknown = sorted(set(views or []) - registered)
    if unknown:
        raise InputError(
            f"unknown feature view(s) {', '.join(unknown)}; "
            f"registered: {', '.join(sorted(registered))}"
        )


def _record_metrics(result: MaterializeResult) -> None:
    """Per view: last successful materialization, rows written, ttl (core.stage_metrics)."""
    record_materialization(
        [
            ViewRun(
                view=stats.view,
                written=stats.written,
                rows_in_range=stats.rows_in_range,
                ttl_seconds=result.ttl_seconds.get(stats.view, 0.0),
                end=stats.end.timestamp(),
            )
            for stats in result.views
        ]
    )


def run_materialize(request: MaterializeRequest) -> MaterializeResult:
    """``churn materialize``: load the range into the online store, then record the metrics.

    Raises:
        InputError: Start after end, nothing registered, an unknown view, or a profile that
            cannot be used as configured.
        OnlineStoreUnavailable: The online store is unreachable.
        OnlineStoreFullError: The Redis online store is out of memory.
        OfflineSourceError: The offline source cannot be read.
    """
    views = list(request.views) if request.views is not None else None
    result = materialize_online(request.feast, start=request.start, end=request.end, views=views)
    _record_metrics(result)
    return result
