"""Command-line options shared by the stage commands."""

from __future__ import annotations

from typing import Annotated

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
