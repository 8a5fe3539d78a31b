"""The one checkpoint for registered models: find a version, download it, verify it, load it.

Every stage that needs a model (serving, batch scoring, drift, promotion, training's
champion re-score) goes through :class:`ModelRegistry`, and nothing else in the project
loads a model or builds an MLflow client: ``tests/core/test_checkpoints.py`` (run by
``make lint``) fails on any other call of an MLflow ``load_model``, ``skops.io.load`` or
``MlflowClient(``. Loading always checks the artifact against the SHA-256 recorded at
training and builds only the trusted types (:mod:`core.model_trust`).

The client is built from an explicit tracking URI, never from MLflow's process-global one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ModelNotFoundError
from core.model_trust import HASH_TAG, load_trusted_model, verify_trusted_model

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from core.settings import MlflowSettings

# MLflow's error codes for a model, version or alias that does not exist.
_MISSING_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version, as the registry describes it."""

    name: str
    version: str
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``name version N``, for messages."""
        return f"model {self.name} version {self.version}"


def mlflow_client(tracking_uri: str) -> MlflowClient:
    """An MLflow client on one tracking and registry URI (the only place one is built)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


class ModelRegistry:
    """The MLflow model registry at one URI: resolves versions and loads trusted models.

    Args:
        tracking_uri: MLflow tracking and registry URI (explicit; the process-global URI
            is never read).
    """

    def __init__(self, tracking_uri: str):
        self.tracking_uri = tracking_uri
        self.client = mlflow_client(tracking_uri)

    @classmethod
    def from_settings(cls, settings: MlflowSettings | None = None) -> ModelRegistry:
        """The registry the settings name (default: the local store under the data folder)."""
        from core.settings import MlflowSettings

        return cls((settings or MlflowSettings()).prepare())

    def find(
        self, name: str, *, alias: str | None = None, version: str | None = None
    ) -> ModelVersion | None:
        """The version (or the alias's version) of a registered model, or None when absent.

        Exactly one of ``alias`` and ``version`` is given.
        """
        from mlflow.exceptions import MlflowException

        if (alias is None) == (version is None):
            raise ValueError("give exactly one of alias and version")
        try:
            found = (
                self.client.get_model_version(name, version)
                if version is not None
                else self.client.get_model_version_by_alias(name, str(alias))
            )
        except MlflowException as error:
            if error.error_code in _MISSING_CODES:
                return None
            raise
        return ModelVersion(
            name=name,
            version=str(found.version),
            run_id=found.run_id,
            tags=dict(found.tags or {}),
            aliases=tuple(getattr(found, "aliases", None) or ()),
        )

    def resolve(
        self, name: str, *, alias: str | None = None, version: str | None = None
    ) -> ModelVersion:
        """Like :meth:`find`, but a missing model, version or alias is an error.

        Raises:
            ModelNotFoundError: No such model, version or alias (the message says which and
                where, and how to get one).
        """
        found = self.find(name, alias=alias, version=version)
        if found is None:
            wanted = f"version {version}" if version is not None else f"alias {alias!r}"
            raise ModelNotFoundError(
                f"model {name!r} has no {wanted} in {self.tracking_uri}: train one first "
                "(`churn train`)"
            )
        return found

    def load(self, version: ModelVersion) -> Any:
        """Download a version's model and load it, if and only if it is trusted.

        Raises:
            UntrustedModelError: No recorded hash or other files, another flavour or
                format, or types outside the trusted list.
        """
        with self._downloaded(version) as local:
            return load_trusted_model(local, expected_sha256=version.tags.get(HASH_TAG))

    def verify(self, version: ModelVersion) -> None:
        """Check a version's files as :meth:`load` does, without building the model.

        For the paths that make a version the champion by hand (``churn promote``,
        ``churn rollback``): what they point serving at must load.

        Raises:
            UntrustedModelError: As :meth:`load`.
        """
        with self._downloaded(version) as local:
            verify_trusted_model(local, expected_sha256=version.tags.get(HASH_TAG))

    @contextmanager
    def _downloaded(self, version: ModelVersion) -> Iterator[Path]:
        import mlflow.artifacts

        uri = self.client.get_model_version_download_uri(version.name, version.version)
        with tempfile.TemporaryDirectory(prefix="churn-model-") as folder:
            yield Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=uri, dst_path=folder, tracking_uri=self.tracking_uri
                )
            )

    def load_version(
        self, name: str, *, alias: str | None = None, version: str | None = None
    ) -> tuple[ModelVersion, Any]:
        """:meth:`resolve` then :meth:`load`: the version and its trusted model."""
        found = self.resolve(name, alias=alias, version=version)
        return found, self.load(found)
