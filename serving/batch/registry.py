"""The registered version ``churn score`` uses: its lineage, then its model (trusted loads only).

Both go through the model checkpoint (:class:`core.models.ModelRegistry`), so a version whose
files changed since training, or that needs types outside the trusted list, is refused
here as it is by ``churn serve``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import InputError
from core.explain import TreeExplainer, build_explainer
from core.lineage import LineageError, ModelLineage
from core.models import ModelRegistry, ModelVersion


@dataclass(frozen=True)
class RegisteredVersion:
    """A registered model version's lineage, before its model loads.

    Attributes:
        name: Registered model name.
        version: Its version.
        service: The feature service it was trained on.
        features: Its columns (Feast feature names), in model order.
        project: The Feast project it was trained on (None: not recorded).
        fill_values: Its training medians per feature (None: not recorded).
    """

    name: str
    version: str
    service: str
    features: tuple[str, ...]
    project: str | None
    fill_values: Mapping[str, float] | None = field(default=None, hash=False)


@dataclass(frozen=True)
class LoadedModel(RegisteredVersion):
    """A registered model version ready to score, with its explainer when reasons are wanted."""

    model: Any = None
    explainer: TreeExplainer | None = None
    reasons_note: str = "reasons off (--reasons 0)"


def _registered(found: ModelVersion) -> RegisteredVersion:
    try:
        lineage = ModelLineage.from_tags(found.tags, owner=found.label)
    except LineageError as error:
        raise InputError(f"{error}: it cannot be scored through Feast") from error
    return RegisteredVersion(
        name=found.name,
        version=found.version,
        service=lineage.feature_service,
        features=lineage.features,
        project=lineage.project,
        fill_values=lineage.fill_values,
    )


def find_model_version(
    tracking_uri: str, *, name: str, alias: str, version: str | None
) -> RegisteredVersion:
    """The version (or the alias's version) of a registered model: its lineage, not the model.

    Raises:
        ModelNotFoundError: No such model, version or alias.
        InputError: The version lacks the training tags (feature service, features).
    """
    registry = ModelRegistry(tracking_uri)
    return _registered(_resolve(registry, name=name, alias=alias, version=version))


def load_model_version(
    tracking_uri: str, *, name: str, alias: str, version: str | None, reasons: int = 0
) -> LoadedModel:
    """Find the version as :func:`find_model_version` does, then load its trusted model.

    With ``reasons``, the explainer is built too, its cell tables included (0.5 s of work
    that, in the scoring process, stays off the cores the retrieval uses).

    Raises:
        ModelNotFoundError: As :func:`find_model_version`.
        InputError: As :func:`find_model_version`.
        UntrustedModelError: The model's files changed since training, or it needs types
            outside the trusted list.
    """
    registry = ModelRegistry(tracking_uri)
    found = _resolve(registry, name=name, alias=alias, version=version)
    registered = _registered(found)
    model = registry.load(found)
    if not reasons:
        return LoadedModel(**vars(registered), model=model)
    explainer, why = build_explainer(model, registered.features)
    if explainer is None:
        return LoadedModel(
            **vars(registered), model=model, reasons_note=f"reasons not written: {why}"
        )
    explainer.prepare_batches()
    return LoadedModel(**vars(registered), model=model, explainer=explainer, reasons_note="")


def _resolve(
    registry: ModelRegistry, *, name: str, alias: str, version: str | None
) -> ModelVersion:
    """The version asked for, else the alias's."""
    if version is not None:
        return registry.resolve(name, version=version)
    return registry.resolve(name, alias=alias)
