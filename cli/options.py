"""Command-line options shared by the `churn` commands."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from core.settings import FeastProfile, FeastSettings

# The --profile option of every command that opens the feature store.
ProfileOption = Annotated[
    FeastProfile | None,
    typer.Option(help="Feast profile (default: $CHURN_FEAST_PROFILE or production)."),
]


def profile_settings(profile: FeastProfile | None) -> FeastSettings:
    """Feast settings from the environment, with the profile overridden when given."""
    return FeastSettings() if profile is None else FeastSettings(profile=profile)


def given_options(
    context: typer.Context, *, rename: dict[str, str] | None = None
) -> dict[str, Any]:
    """The options of the running command that the user gave on the command line.

    Commands build their settings from these only, so a setting's environment variable
    (``CHURN_TRAIN_TRIALS``...) is not overridden by the option's default.

    Args:
        context: The command's Typer context.
        rename: Option (parameter) name to settings field name, where they differ.
    """
    rename = rename or {}
    given = {}
    for name, value in context.params.items():
        source = context.get_parameter_source(name)
        # By name: Typer may carry its own copy of click's ParameterSource enum.
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            given[rename.get(name, name)] = value
    return given
