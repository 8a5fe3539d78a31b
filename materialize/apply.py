"""Stage: register the Feast definitions of ``feature_repo/`` (``feast apply``)."""

from __future__ import annotations

import subprocess

import typer

from cli.errors import exit_on_error
from cli.options import ProfileOption, profile_settings
from core.exits import ExitCode
from core.feast_store import run_feast_cli
from core.settings import FeastSettings


def apply_feature_repo(settings: FeastSettings) -> str:
    """Run ``feast apply`` for the repo and profile; return Feast's output.

    Raises:
        ConfigurationError: The profile cannot be used as configured.
        subprocess.CalledProcessError: feast apply failed.
    """
    completed = run_feast_cli(settings, "apply")
    return completed.stdout


def apply_command(
    profile: ProfileOption = None,
) -> None:
    """Register the feature definitions in the Feast registry (feast apply)."""
    settings = profile_settings(profile)
    try:
        with exit_on_error():
            output = apply_feature_repo(settings)
    except subprocess.CalledProcessError as error:
        typer.echo(f"error: feast apply failed:\n{error.stdout}{error.stderr}", err=True)
        raise typer.Exit(ExitCode.FAILURE) from error
    typer.echo(output.strip())
    typer.echo(f"applied {settings.repo_path} with profile {settings.profile}")
