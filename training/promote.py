"""Stage: ``churn promote`` and ``churn rollback``, people's control over the champion.

Both move the ``champion`` alias of a registered model (``models:/<name>@champion``) and
keep the registered model's ``champion.history`` tag, so a rollback returns to whichever
version was champion before, whether it got there by training or by hand.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cli.errors import exit_on_error
from core.settings import DEFAULT_MODEL_NAME, MlflowSettings


def promote_version(model_name: str, version: str) -> str | None:
    """Make ``version`` the champion; return the version it replaced (None if none).

    Raises:
        training.registry.RegistryError: Unknown model or version.
    """
    import mlflow

    from training.registry import CHAMPION, alias_version, get_version, set_champion
    from training.tracking import champion_lock, configure_mlflow

    configure_mlflow()
    client = mlflow.MlflowClient()
    get_version(client, model_name, version)
    # Read, decide and move the alias as one step: a training or rollback finishing at
    # the same time waits instead of interleaving.
    with champion_lock(model_name):
        previous = alias_version(client, model_name, CHAMPION)
        previous_version = str(previous.version) if previous is not None else None
        if previous_version == version:
            return previous_version
        set_champion(
            client, model_name, version, reason="promoted by hand", expected=previous_version
        )
    return previous_version


def rollback_version(model_name: str) -> tuple[str, str]:
    """Give ``champion`` back to the previous champion; return (old, new).

    Raises:
        training.registry.RegistryError: No champion or no previous champion.
    """
    import mlflow

    from training.registry import rollback_champion
    from training.tracking import champion_lock, configure_mlflow

    configure_mlflow()
    with champion_lock(model_name):
        return rollback_champion(mlflow.MlflowClient(), model_name)


def promote_command(
    version: Annotated[str, typer.Option(help="Model version to make champion.")],
    model_name: Annotated[str, typer.Option(help="Registered model name.")] = DEFAULT_MODEL_NAME,
) -> None:
    """Make a registered model version the champion (alias), keeping the history."""
    with exit_on_error():
        previous = promote_version(model_name, version)
    if previous == version:
        typer.echo(f"{model_name} v{version} is already champion")
    else:
        was = f" (was v{previous})" if previous else ""
        typer.echo(f"{model_name}@champion -> v{version}{was}")
    from core.stage_metrics import record_champion_from_registry

    record_champion_from_registry(model_name, tracking_uri=MlflowSettings().resolved_tracking_uri())


def rollback_command(
    model_name: Annotated[str, typer.Option(help="Registered model name.")] = DEFAULT_MODEL_NAME,
) -> None:
    """Give the champion alias back to the previous champion."""
    with exit_on_error():
        old, new = rollback_version(model_name)
    typer.echo(f"{model_name}@champion -> v{new} (rolled back from v{old})")
    from core.stage_metrics import record_champion_from_registry

    record_champion_from_registry(model_name, tracking_uri=MlflowSettings().resolved_tracking_uri())
