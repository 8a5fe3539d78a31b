"""Promotion and rollback by hand: people's control over the champion.

Both move the ``champion`` alias of a registered model (``models:/<name>@champion``) and
keep the registered model's ``champion.history`` tag, so a rollback returns to whichever
version was champion before, whether it got there by training or by hand.
"""

from __future__ import annotations

from core.models import ModelRegistry
from core.settings import MlflowSettings
from core.stage_metrics import record_champion_from_registry
from training.config import PromoteOutcome, PromoteRequest, RollbackOutcome, RollbackRequest
from training.registry import CHAMPION, alias_version, rollback_champion, set_champion
from training.tracking import champion_lock, initialize_store


def promote_version(
    request: PromoteRequest, *, mlflow_settings: MlflowSettings | None = None
) -> PromoteOutcome:
    """Make the version the champion; the outcome names the version it replaced.

    Raises:
        ModelNotFoundError: Unknown model or version.
        UntrustedModelError: The version's files fail the model checkpoint: serving would
            refuse it, so it does not become champion.
    """
    settings = mlflow_settings or MlflowSettings()
    registry = _registry(settings)
    name = request.model_name
    registry.verify(registry.resolve(name, version=request.version))
    # Read, decide and move the alias as one step: a training or rollback finishing at
    # the same time waits instead of interleaving.
    with champion_lock(name, settings):
        previous = alias_version(registry.client, name, CHAMPION)
        previous_version = str(previous.version) if previous is not None else None
        if previous_version != request.version:
            set_champion(
                registry.client,
                name,
                request.version,
                reason="promoted by hand",
                expected=previous_version,
            )
    record_champion_from_registry(name, tracking_uri=registry.tracking_uri)
    return PromoteOutcome(model_name=name, version=request.version, previous=previous_version)


def rollback_version(
    request: RollbackRequest, *, mlflow_settings: MlflowSettings | None = None
) -> RollbackOutcome:
    """Give ``champion`` back to the previous champion.

    Raises:
        RegistryError: No champion or no previous champion.
        UntrustedModelError: The previous champion's files fail the model checkpoint.
    """
    settings = mlflow_settings or MlflowSettings()
    registry = _registry(settings)
    name = request.model_name
    with champion_lock(name, settings):
        old, new = rollback_champion(
            registry.client,
            name,
            accept=lambda version: registry.verify(registry.resolve(name, version=version)),
        )
    record_champion_from_registry(name, tracking_uri=registry.tracking_uri)
    return RollbackOutcome(model_name=name, old=old, new=new)


def _registry(settings: MlflowSettings) -> ModelRegistry:
    """The registry the settings name, its store created if new."""
    uri = settings.prepare()
    initialize_store(uri)
    return ModelRegistry(uri)
