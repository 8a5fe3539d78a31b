"""Stage: load offline features into the online store (``churn materialize``).

Feast drives the run, so the engine is the profile's ``batch_engine`` (our
``materialize.engine.FastEngine``) and Feast records the materialization interval that the
next incremental run starts from, exactly as ``feast materialize[-incremental]`` would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.errors import exit_on_error
from cli.options import ProfileOption, profile_settings
from core.errors import InputError
from core.feast_adapter.store import batch_engine_of
from core.feast_store import feature_store_session
from core.settings import FeastSettings

if TYPE_CHECKING:
    from feast import FeatureStore

    from materialize.engine import MaterializationStats


class MaterializeInputError(InputError):
    """The requested range or views cannot be materialized (message says why)."""


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
        MaterializeInputError: Not an ISO date or date-time.
    """
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise MaterializeInputError(
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
        MaterializeInputError: Start after end, nothing registered, or an unknown view.
        ConfigurationError: The profile cannot be used as configured.
        materialize.engine.OnlineStoreUnavailableError: The online store is unreachable.
        materialize.engine.OfflineSourceError: The offline source cannot be read.
    """
    end = end or datetime.now(UTC)
    if start is not None and start > end:
        raise MaterializeInputError(f"--start {start.isoformat()} is after --end {end.isoformat()}")
    with feature_store_session(settings) as store:
        _check_views(store, views)
        if start is None:
            store.materialize_incremental(end_date=end, feature_views=views)
        else:
            store.materialize(start_date=start, end_date=end, feature_views=views)
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
        raise MaterializeInputError(
            f"no feature views registered in project {store.project!r}: run `churn apply` first"
        )
    unknown = sorted(set(views or []) - registered)
    if unknown:
        raise MaterializeInputError(
            f"unknown feature view(s) {', '.join(unknown)}; "
            f"registered: {', '.join(sorted(registered))}"
        )


def _summary(stats: MaterializationStats) -> str:
    if stats.engine != "fast":
        return (
            f"{stats.view}: materialized by Feast's {stats.engine} engine in {stats.seconds:.1f} s"
        )
    expired = f", {stats.expired:,} expired (older than key_ttl_seconds)" if stats.expired else ""
    return (
        f"{stats.view}: {stats.written:,} entities written ({stats.skipped:,} not newer than "
        f"online), {stats.rows_in_range:,} rows in range, {stats.rejected_rows:,} rejected "
        f"without a join key{expired}, {stats.seconds:.1f} s"
    )


def _record_metrics(result: MaterializeResult) -> None:
    """Per view: last successful materialization, rows written, ttl (core.stage_metrics)."""
    from core.stage_metrics import ViewRun, record_materialization

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


def materialize_command(
    start: Annotated[
        str | None,
        typer.Option(
            help="Start of the range (ISO, UTC when naive). Default: incremental, from where "
            "the last run ended (first run: end minus the view's ttl)."
        ),
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="End of the range (ISO, UTC when naive). Default: now.")
    ] = None,
    view: Annotated[
        list[str] | None,
        typer.Option("--view", help="Only this feature view (repeatable). Default: all."),
    ] = None,
    profile: ProfileOption = None,
) -> None:
    """Load the latest offline feature values into the online store (Feast-driven).

    Exit 0: done. Exit 1: online store unreachable or offline table unreadable. Exit 2: bad
    input or profile. Exit 3: the Redis online store is out of memory (re-run after making
    room: it resumes where it stopped).
    """
    import redis

    from materialize.engine import OnlineStoreFullError, OnlineStoreUnavailableError
    from materialize.engine.writers import is_out_of_memory

    settings = profile_settings(profile)
    with exit_on_error():
        try:
            result = materialize_online(
                settings,
                start=parse_time(start) if start else None,
                end=parse_time(end) if end else None,
                views=view,
            )
        # Feast's own engine (when it is configured) raises redis-py's errors, not ours.
        except redis.ConnectionError as error:
            raise OnlineStoreUnavailableError(
                f"cannot reach the Redis online store: {error}"
            ) from error
        except redis.ResponseError as error:
            if not is_out_of_memory(error):
                raise
            raise OnlineStoreFullError(
                f"the Redis online store is out of memory: {error}"
            ) from error
    for stats in result.views:
        typer.echo(_summary(stats))
    _record_metrics(result)
    scope = (
        f"{result.start.isoformat()} .. {result.end.isoformat()}"
        if result.start
        else f"incrementally up to {result.end.isoformat()}"
    )
    typer.echo(f"materialized {scope} with profile {settings.profile} (engine {result.engine})")
