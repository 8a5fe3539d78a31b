"""`churn serve` and `churn score`: predictions online and in batch.

Each command imports the stage inside its body, so `churn --help` loads neither FastAPI nor
MLflow nor Feast.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.errors import exit_on_error
from cli.options import ProfileOption, profile_settings

if TYPE_CHECKING:
    from serving.batch import ScoreOutcome


def serve_command(
    host: Annotated[
        str | None, typer.Option(help="Interface (default: $CHURN_SERVING_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default: $CHURN_SERVING_PORT or 8000).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Worker processes (default: $CHURN_SERVING_WORKERS or one per CPU core).",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn/app log level.")] = "info",
) -> None:
    """Serve churn predictions by user_id (FastAPI): the champion model on online features."""
    from serving import ServeRequest, run_server

    with exit_on_error():
        run_server(ServeRequest(host=host, port=port, workers=workers, log_level=log_level))


def score_command(
    out: Annotated[
        Path | None,
        typer.Option(help="Output Parquet. Default: $CHURN_DATA_DIR/scores/scores-<at>.parquet."),
    ] = None,
    at: Annotated[
        str | None, typer.Option(help="Point in time (ISO, UTC when naive). Default: now.")
    ] = None,
    users: Annotated[
        Path | None,
        typer.Option(
            help="Only these users: Parquet/CSV with a user_id column, or one id per line. "
            "Default: every user with features at --at."
        ),
    ] = None,
    model_version: Annotated[
        str | None, typer.Option(help="Registered version to use. Default: the champion.")
    ] = None,
    reasons: Annotated[
        int | None, typer.Option(min=0, help="Top reasons per user (0: none). Default: 3.")
    ] = None,
    chunk_rows: Annotated[
        int | None, typer.Option(min=1, help="Users per offline retrieval. Default: 100000.")
    ] = None,
    show: Annotated[
        int, typer.Option(min=0, help="Print the N users most at risk with their reasons.")
    ] = 0,
    profile: ProfileOption = None,
) -> None:
    """Score every user (or a list) at one point in time from the offline store, with reasons."""
    # stderr is for the progress lines, not MLflow's download bars.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from serving.batch import ScoreRequest, ScoringSettings, most_at_risk, parse_at, run_score

    overrides: dict[str, Any] = {}
    if reasons is not None:
        overrides["reasons"] = reasons
    if chunk_rows is not None:
        overrides["chunk_rows"] = chunk_rows
    with exit_on_error():
        outcome = run_score(
            ScoreRequest(
                at=parse_at(at),
                out=out,
                users=users,
                model_version=model_version,
                settings=ScoringSettings(**overrides),
                feast=profile_settings(profile),
            )
        )
    typer.echo(_summary(outcome))
    if show:
        typer.echo(most_at_risk(outcome.path, count=show))


def _summary(outcome: ScoreOutcome) -> str:
    """What a scoring run did, where its files are and where its time went."""
    missing = sum(outcome.unscored.values())
    reasons = ", ".join(f"{kind} {count:,}" for kind, count in sorted(outcome.unscored.items()))
    rate = (outcome.scored + missing) / outcome.seconds if outcome.seconds else 0.0
    lines = [
        f"scored {outcome.scored:,} users at {outcome.at.isoformat()} with "
        f"{outcome.model_name} version {outcome.model_version} -> {outcome.path}",
        f"not scored: {missing:,}"
        + (f" ({reasons}) -> {outcome.unscored_path}" if missing else ""),
        f"{outcome.missing_note or 'missing values: -'}; scored with a missing feature: "
        f"{outcome.scored_with_missing:,} (named in the missing_features column)",
        f"{outcome.seconds:.1f} s, {rate:,.0f} users/s (offline retrieval "
        f"{outcome.retrieval_seconds:.1f} s; scoring and reasons {outcome.scoring_seconds:.1f} s "
        f"in the scoring process, waited for {outcome.scoring_wait_seconds:.1f} s)",
        f"start-up {outcome.startup_seconds:.1f} s to the first retrieval (users listed in "
        f"{outcome.listing_seconds:.1f} s; model loaded and prepared in the scoring process "
        f"in {outcome.model_load_seconds:.1f} s)",
        f"model: {outcome.model_description}"
        + (f"; {outcome.engine_note}" if outcome.engine_note else ""),
    ]
    lines += [
        f"  user {user}: {reason} ({detail})"
        for user, reason, detail in outcome.unscored_examples[:10]
    ]
    if outcome.reasons_note:
        lines.append(outcome.reasons_note)
    return "\n".join(lines)


COMMANDS: dict[str, Callable[..., None]] = {"serve": serve_command, "score": score_command}
