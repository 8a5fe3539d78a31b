"""The data engineer's commands: generate, ingest, apply, materialize, skew-check.

Each command turns its options into the stage's request, calls the stage's entry point
(:mod:`materialize`), prints the outcome and ends with its exit code. The stage is imported
inside each command, so ``churn --help`` loads none of it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.errors import exit_on_error
from cli.options import ProfileOption, profile_settings
from core.exits import ExitCode

if TYPE_CHECKING:
    import pandas as pd

    from materialize.engine import MaterializationStats

# The default of `churn generate --null-rate` (materialize.generate.DEFAULT_NULL_RATE, which
# the command may not import at load time); a test keeps the two equal.
DEFAULT_NULL_RATE = 0.01


def _moment(value: str, option: str) -> pd.Timestamp:
    """A date or ISO date-time option as a UTC timestamp, or a usage error naming it."""
    from materialize import to_utc

    try:
        return to_utc(value)
    except ValueError as error:
        raise typer.BadParameter(f"not a date or datetime: {value!r}", param_hint=option) from error


def generate_command(
    users: Annotated[int, typer.Option(min=1, help="Number of users.")] = 2000,
    days: Annotated[int, typer.Option(min=1, help="Days of history before --end.")] = 60,
    end: Annotated[
        str | None,
        typer.Option(
            help="Exclusive end of the window, a date or ISO datetime (UTC when naive). "
            "Default: today 00:00 UTC, so no row lies in the future."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Random seed (same seed, same users).")] = 42,
    out: Annotated[
        Path | None,
        typer.Option(help="Output Parquet file. Default: <data_dir>/raw/events.parquet."),
    ] = None,
    null_rate: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Share of missing feature_1 and feature_2 values."),
    ] = DEFAULT_NULL_RATE,
    shift: Annotated[
        list[str] | None,
        typer.Option(
            help="FEATURE=SD: add SD standard deviations to a feature (feature_1 or "
            "feature_2) from --shift-start on. Repeatable."
        ),
    ] = None,
    shift_start: Annotated[
        str | None,
        typer.Option(help="First shifted timestamp (date or ISO datetime). Default: all rows."),
    ] = None,
    events: Annotated[
        bool,
        typer.Option(
            "--events",
            help="Also write the users' activity events (<data_dir>/raw/activity.parquet); "
            "churners' activity fades in the two days before their label.",
        ),
    ] = False,
    events_per_hour: Annotated[
        float, typer.Option(min=0.0, help="Mean activity events per user and hour.")
    ] = 0.3,
    publish: Annotated[
        bool,
        typer.Option("--publish", help="XADD the activity events to the stream (with --events)."),
    ] = False,
    rate: Annotated[
        float, typer.Option(min=0.0, help="Events per second when publishing (0: no limit).")
    ] = 0.0,
) -> None:
    """Generate a seeded, deterministic raw events table (Parquet), and activity events."""
    from materialize import GenerateRequest, parse_shifts, run_generate

    if publish and not events:
        raise typer.BadParameter("--publish needs --events", param_hint="--publish")
    try:
        shifts = parse_shifts(shift or [])
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--shift") from error
    start_of_shift = _moment(shift_start, "--shift-start") if shift_start is not None else None
    request = GenerateRequest(
        users=users,
        days=days,
        end=_moment(end, "--end") if end is not None else None,
        seed=seed,
        out=out,
        null_rate=null_rate,
        shifts=shifts,
        shift_start=start_of_shift,
    )
    outcome = run_generate(request)
    batch = outcome.batch
    window = f"{outcome.window_start:%Y-%m-%d %H:%M} to {outcome.window_end:%Y-%m-%d %H:%M} UTC"
    typer.echo(
        f"wrote {batch.rows} rows of {batch.users} users ({window}, "
        f"first {batch.start}, last {batch.end}, churn rate {outcome.churn_rate:.3f}) "
        f"to {batch.path}"
    )
    if shifts:
        described = ", ".join(f"{name} {amount:+g} SD" for name, amount in shifts.items())
        since = f"from {start_of_shift}" if start_of_shift is not None else "on every row"
        typer.echo(f"shifted {described} {since}")
    if events:
        _generate_events(outcome, users, days, seed, events_per_hour, publish, rate)


def _generate_events(
    outcome: object,
    users: int,
    days: int,
    seed: int,
    per_hour: float,
    publish: bool,
    rate: float,
) -> None:
    from core.settings import DataSettings, FeastSettings
    from materialize.stream.activity import EventsRequest, run_generate_events
    from materialize.stream.settings import StreamSettings

    stream = StreamSettings()
    result = run_generate_events(
        EventsRequest(
            users=users,
            days=days,
            end=outcome.window_end,  # type: ignore[attr-defined]
            seed=seed,
            out=DataSettings().raw_dir / "activity.parquet",
            rate_per_hour=per_hour,
            publish=publish,
            publish_rate=rate,
            redis_url=FeastSettings().redis_url,
            stream_key=stream.key,
        )
    )
    typer.echo(f"wrote {result.events} activity events to {result.path}")
    if result.published is not None:
        seconds = max(result.published.seconds, 1e-9)
        typer.echo(
            f"published {result.published.events} events to {stream.key} in "
            f"{seconds:.1f} s ({result.published.events / seconds:,.0f}/s)"
        )


def ingest_command(
    raw_path: Annotated[Path, typer.Argument(help="Raw events file (.parquet, .pq or .csv).")],
    backfill: Annotated[
        bool,
        typer.Option(
            "--backfill",
            help="Historical load: declare new rows available at their event time "
            "(created = event_timestamp). Default: available from their arrival (now).",
        ),
    ] = False,
) -> None:
    """Validate raw events and merge them into the offline feature and label tables.

    Unusable rows go to a Parquet file under $CHURN_DATA_DIR/quarantine with a reason.

    Reasons: null user_id or event_date, user_id beyond int64 (or a float above 2**53),
    timestamp at or before 1970 or from 2200 on, future timestamp, infinite feature,
    repeated key.

    Each row records its arrival (ingested_at). New rows are available to training from
    their arrival (created = now) unless --backfill declares them available at their event
    time.

    A null or non-0/1 label keeps the row's features but writes no label.

    A column more than 20% null is warned about. Re-running on the same file changes nothing.

    Exit 0: ingested (quarantined rows and warnings included).

    Exit 1: unreadable file or damaged offline table; nothing written.

    Exit 2: missing or mistyped columns; nothing written.
    """
    with exit_on_error():
        from materialize import IngestRequest, run_ingest

        report = run_ingest(IngestRequest(raw_path=raw_path, backfill=backfill))
    for line in report.summary_lines():
        typer.echo(line)


def apply_command(
    profile: ProfileOption = None,
) -> None:
    """Register the feature definitions in the Feast registry (feast apply)."""
    settings = profile_settings(profile)
    with exit_on_error():
        from materialize import ApplyRequest, run_apply

        outcome = run_apply(ApplyRequest(feast=settings))
    typer.echo(outcome.output.strip())
    typer.echo(f"applied {outcome.repo_path} with profile {outcome.profile}")


def _view_summary(stats: MaterializationStats) -> str:
    """One line on what a view's materialization did."""
    if stats.by_feast:
        return (
            f"{stats.view}: materialized by Feast's {stats.engine} engine in {stats.seconds:.1f} s"
        )
    expired = f", {stats.expired:,} expired (older than key_ttl_seconds)" if stats.expired else ""
    return (
        f"{stats.view}: {stats.written:,} entities written ({stats.skipped:,} not newer than "
        f"online), {stats.rows_in_range:,} rows in range, {stats.rejected_rows:,} rejected "
        f"without a join key{expired}, {stats.seconds:.1f} s"
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
    settings = profile_settings(profile)
    with exit_on_error():
        from materialize import MaterializeRequest, parse_time, run_materialize

        request = MaterializeRequest(
            feast=settings,
            start=parse_time(start) if start else None,
            end=parse_time(end) if end else None,
            views=tuple(view) if view else None,
        )
        result = run_materialize(request)
    for stats in result.views:
        typer.echo(_view_summary(stats))
    scope = (
        f"{result.start.isoformat()} .. {result.end.isoformat()}"
        if result.start
        else f"incrementally up to {result.end.isoformat()}"
    )
    typer.echo(f"materialized {scope} with profile {settings.profile} (engine {result.engine})")


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
        from materialize import SkewRequest, parse_time, run_skew_check

        request = SkewRequest(
            feast=settings,
            sample=sample,
            service=service,
            at=parse_time(at) if at else None,
            seed=seed,
        )
        report = run_skew_check(request)
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
    if report.mismatches:
        typer.echo(f"FAIL: {report.mismatches:,} mismatching values", err=True)
        raise typer.Exit(ExitCode.FAILURE)
    typer.echo("OK: online and offline agree on every sampled value")


def stream_command(
    until_idle: Annotated[
        bool,
        typer.Option("--until-idle", help="Drain the stream, then exit (tests, back-fills)."),
    ] = False,
    max_seconds: Annotated[
        float | None, typer.Option(min=0.0, help="Stop after this many seconds.")
    ] = None,
    consumer: Annotated[
        str | None,
        typer.Option(
            help="Name in the consumer group (default $CHURN_STREAM_CONSUMER or host-pid)."
        ),
    ] = None,
    profile: ProfileOption = None,
) -> None:
    """Consume activity events into the user_activity view, online and offline.

    Reads $CHURN_STREAM_KEY (default churn:events) in consumer group $CHURN_STREAM_GROUP,
    keeps per-user minute tiles, writes them online (Feast's Redis layout) and offline
    (Parquet parts of the push source's batch source). Idempotent by event_id; malformed
    events go to $CHURN_STREAM_DEAD_LETTER_KEY with a reason. SIGTERM stops it cleanly.

    Exit 0: stopped or drained. Exit 2: the push source or profile does not fit.
    """
    settings = profile_settings(profile)
    with exit_on_error():
        from materialize.stream.settings import StreamSettings
        from materialize.stream.worker import StreamRequest, run_stream

        stream = StreamSettings(consumer=consumer) if consumer else StreamSettings()
        outcome = run_stream(
            StreamRequest(
                feast=settings, stream=stream, until_idle=until_idle, max_seconds=max_seconds
            )
        )
    typer.echo(outcome.summary())


COMMANDS: dict[str, Callable[..., None]] = {
    "generate": generate_command,
    "ingest": ingest_command,
    "apply": apply_command,
    "materialize": materialize_command,
    "skew-check": skew_check_command,
    "stream": stream_command,
}
