"""Loading models from the registry without running whatever the registry holds.

MLflow's own loaders follow the artifact: a ``pickle`` or ``cloudpickle`` flavour runs code
on load (MLflow 3.17 allows pickle by default), and for skops the trusted types are read
from the artifact's own ``MLmodel`` file, so whoever can write the artifact store chooses
what is trusted. Here instead:

- only the ``sklearn`` flavour in ``skops`` format is accepted;
- the types skops may build beyond its safe defaults are :data:`TRUSTED_TYPES`, listed in
  this code (the tree structures of the model families ``churn train`` produces);
- training records a SHA-256 of every file of the logged model on the registered version
  (tag :data:`HASH_TAG`), and the files are checked against it before anything is read.

Anything else is refused with :class:`UntrustedModelError`, naming the reason.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from core.errors import UntrustedModelError

HASH_TAG = "artifact.sha256"

# skops refuses to build any type outside its safe defaults unless trusted by name. These
# are the only extra types of the model families `churn train` fits (checked by
# tests/core/test_model_trust.py against fitted models of each family).
TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",  # hist_gradient_boosting
    "sklearn.tree._tree.Tree",  # gradient_boosting
    # The calibrator around either family (core.calibration): one calibrated copy holding
    # the frozen model and a Platt (sigmoid) or isotonic calibrator.
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
)


def artifact_sha256(model_dir: Path) -> str:
    """SHA-256 of what a loader reads: the ``MLmodel`` file and the model file it names.

    Other files of the directory (environment files, and ``registered_model_meta``, which
    MLflow adds when the model is registered) are never read when loading.

    Raises:
        UntrustedModelError: Not an MLflow sklearn model directory.
    """
    digest = hashlib.sha256()
    model_file = str(_mlmodel_flavours(model_dir).get("sklearn", {}).get("pickled_model") or "")
    for name in ("MLmodel", model_file):
        path = model_dir / name
        if not name or not path.is_file():
            continue
        digest.update(name.encode() + b"\0")
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def _mlmodel_flavours(model_dir: Path) -> dict[str, Any]:
    import yaml

    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        raise UntrustedModelError(f"{model_dir} is not an MLflow model (no MLmodel file)")
    try:
        flavours = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors") or {}
    except (yaml.YAMLError, AttributeError) as error:
        raise UntrustedModelError(f"{mlmodel} is not a readable MLmodel file") from error
    return flavours if isinstance(flavours, dict) else {}


def untrusted_types_of(model: Any) -> list[str]:
    """Types of a fitted model that skops would need trusted beyond :data:`TRUSTED_TYPES`."""
    import skops.io

    needed = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    return sorted(set(needed) - set(TRUSTED_TYPES))


def _sklearn_flavour(model_dir: Path) -> dict[str, Any]:
    flavours = _mlmodel_flavours(model_dir)
    sklearn = flavours.get("sklearn")
    if not isinstance(sklearn, dict):
        raise UntrustedModelError(
            f"model flavour(s) {sorted(flavours)} refused: only the sklearn flavour in skops "
            "format is loaded"
        )
    fmt = sklearn.get("serialization_format")
    if fmt != "skops":
        raise UntrustedModelError(
            f"sklearn model serialized as {fmt!r} refused: only skops is loaded (pickle "
            "and cloudpickle run code when loaded)"
        )
    return sklearn


def verify_trusted_model(model_dir: Path, *, expected_sha256: str | None) -> Path:
    """Check a downloaded model directory without building anything; return its skops file.

    Args:
        model_dir: The model's files (``MLmodel`` and the skops file).
        expected_sha256: The hash recorded at training (the version's ``artifact.sha256``
            tag); None refuses the model.

    Raises:
        UntrustedModelError: No or another hash, another flavour or format, or types
            outside :data:`TRUSTED_TYPES`.
    """
    import skops.io

    if not expected_sha256:
        raise UntrustedModelError(
            f"no {HASH_TAG} tag on the registered version: it was not registered by "
            "`churn train` (or before artifact hashing); retrain or re-register it"
        )
    actual = artifact_sha256(model_dir)
    if actual != expected_sha256:
        raise UntrustedModelError(
            f"model files changed since training: sha256 {actual[:12]}... differs from the "
            f"recorded {HASH_TAG} {expected_sha256[:12]}..."
        )
    flavour = _sklearn_flavour(model_dir)
    path = model_dir / str(flavour.get("pickled_model", "model.skops"))
    if not path.is_file() or path.resolve().parent != model_dir.resolve():
        raise UntrustedModelError(f"skops file {path.name} missing from {model_dir}")
    try:
        unknown = sorted(set(skops.io.get_untrusted_types(file=path)) - set(TRUSTED_TYPES))
    except Exception as error:  # a damaged or foreign file: skops raises various types
        raise UntrustedModelError(f"{path.name} is not a readable skops file: {error}") from error
    if unknown:
        raise UntrustedModelError(
            f"model needs types that are not trusted: {', '.join(unknown)} (trusted: "
            f"{', '.join(TRUSTED_TYPES)})"
        )
    return path


def load_trusted_model(model_dir: Path, *, expected_sha256: str | None) -> Any:
    """Load a downloaded model directory if, and only if, :func:`verify_trusted_model` passes.

    Raises:
        UntrustedModelError: As :func:`verify_trusted_model`.
    """
    import skops.io

    path = verify_trusted_model(model_dir, expected_sha256=expected_sha256)
    return skops.io.load(path, trusted=list(TRUSTED_TYPES))


def logged_model_sha256(model_uri: str, tracking_uri: str) -> str:
    """The :func:`artifact_sha256` of a logged model (``models:/...`` or ``runs:/...``).

    MLflow resolves a ``models:/`` URI through the process's global tracking URI: call it
    where that is set (as during training).
    """
    import mlflow.artifacts

    with tempfile.TemporaryDirectory(prefix="churn-model-") as folder:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=model_uri, dst_path=folder, tracking_uri=tracking_uri
        )
        return artifact_sha256(Path(local))
