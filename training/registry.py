"""Model registry: versions, the ``champion`` / ``challenger`` aliases and their history.

Aliases, never stages (deprecated in MLflow 3). ``challenger`` names the latest registered
version that did not become champion. Every change of champion is appended to the
registered model's tag ``champion.history`` (a JSON list of versions, oldest first), which
is what ``rollback`` walks back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from core.errors import ChampionChanged, ModelNotFoundError, RegistryError

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "champion.history"
_HISTORY_LIMIT = 100  # keeps the tag far below MLflow's 5000-character limit


_UNCHECKED = object()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _is_missing(error: Exception) -> bool:
    return getattr(error, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def get_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    """A model version, or a clear error when it does not exist.

    Raises:
        ModelNotFoundError: No such model or version.
    """
    try:
        return client.get_model_version(name, version)
    except MlflowException as error:
        if _is_missing(error):
            raise ModelNotFoundError(f"model {name!r} has no version {version}") from error
        raise


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version holding an alias, or None (also when the model is not registered)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if _is_missing(error) or getattr(error, "error_code", "") == "INVALID_PARAMETER_VALUE":
            return None
        raise


def champion_history(client: MlflowClient, name: str) -> list[str]:
    """Versions that were champion, oldest first."""
    model = client.get_registered_model(name)
    return list(json.loads(model.tags.get(HISTORY_TAG, "[]")))


def _write_history(client: MlflowClient, name: str, history: list[str]) -> None:
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-_HISTORY_LIMIT:]))


def register_version(
    client: MlflowClient,
    *,
    name: str,
    model_uri: str,
    run_id: str,
    tags: dict[str, str],
    description: str = "",
) -> ModelVersion:
    """Register a logged model as a new version of ``name`` (created if needed)."""
    try:
        client.get_registered_model(name)
    except MlflowException as error:
        if not _is_missing(error):
            raise
        client.create_registered_model(name, description=description or None)
    version = client.create_model_version(name, model_uri, run_id=run_id, tags=tags)
    return version


def set_challenger(client: MlflowClient, name: str, version: str) -> None:
    """Give the alias ``challenger`` to a version."""
    client.set_registered_model_alias(name, CHALLENGER, version)


def check_champion(client: MlflowClient, name: str, expected: str | None) -> None:
    """Compare-and-set guard: the champion must still be the version the decision read.

    Raises:
        ChampionChanged: Another job moved the alias since.
    """
    current = alias_version(client, name, CHAMPION)
    found = str(current.version) if current is not None else None
    if found != expected:
        raise ChampionChanged(
            f"model {name!r}: champion is v{found} now, the decision was made against "
            f"v{expected}; nothing changed (run it again)"
        )


def set_champion(
    client: MlflowClient,
    name: str,
    version: str,
    *,
    reason: str,
    expected: str | object | None = _UNCHECKED,
) -> None:
    """Make a version the champion and record it in the history.

    Call it inside ``training.tracking.champion_lock`` with the decision that led to it.
    The ``challenger`` alias is removed when it pointed at this version.

    Args:
        client: Registry client.
        name: Registered model.
        version: The new champion.
        reason: Why, recorded on the version.
        expected: The champion version (None: no champion) the decision was made
            against; re-read first and the change refused when it moved.

    Raises:
        ChampionChanged: The champion is no longer ``expected``.
    """
    get_version(client, name, version)
    if expected is not _UNCHECKED:
        check_champion(client, name, expected)  # type: ignore[arg-type]
    client.set_registered_model_alias(name, CHAMPION, version)
    challenger = alias_version(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == str(version):
        client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, version, "champion.since", _now())
    client.set_model_version_tag(name, version, "champion.reason", reason)
    _write_history(client, name, [*champion_history(client, name), str(version)])


def rollback_champion(
    client: MlflowClient, name: str, *, accept: Callable[[str], None] | None = None
) -> tuple[str, str]:
    """Give ``champion`` back to the previous champion; return (old, new) versions.

    Versions deleted since they were champion are skipped.

    Args:
        client: Registry client.
        name: Registered model.
        accept: Called with the version about to become champion; raising refuses it
            (the alias does not move).

    Raises:
        RegistryError: No champion, or no earlier champion that still exists.
    """
    current = alias_version(client, name, CHAMPION)
    if current is None:
        raise RegistryError(f"model {name!r} has no champion to roll back")
    current_version = str(current.version)
    history = champion_history(client, name)
    while history and history[-1] == current_version:
        history.pop()
    while history:
        candidate = history[-1]
        try:
            get_version(client, name, candidate)
        except RegistryError:
            history.pop()
            continue
        if accept is not None:
            accept(candidate)
        client.set_registered_model_alias(name, CHAMPION, candidate)
        client.set_model_version_tag(name, current_version, "champion.rolled_back_at", _now())
        client.set_model_version_tag(name, candidate, "champion.since", _now())
        client.set_model_version_tag(name, candidate, "champion.reason", "rollback")
        _write_history(client, name, history)
        return current_version, candidate
    raise RegistryError(
        f"model {name!r}: version {current_version} is the only champion on record; "
        "nothing to roll back to (use `churn promote --version N`)"
    )
