"""Trusted model loading: skops with our types and the training-time hash, nothing else."""

from __future__ import annotations

import contextlib
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from core.errors import UntrustedModelError
from core.model_trust import (
    HASH_TAG,
    logged_model_sha256,
)
from core.models import ModelRegistry
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.serving import fit_model, register_model, tracking_uri_in, training_frame

pytestmark = pytest.mark.filterwarnings(
    # MLflow 3.17's SQLite tracking store uses a loader option that SQLAlchemy 2.1 deprecates.
    "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
)


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return tracking_uri_in(tmp_path / "mlflow")


def _log_other(uri: str, model: object, **log_options: object) -> str:
    """Register a model logged some other way, with a correct hash tag (so only the
    format or the types can be what is refused)."""
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    with contextlib.suppress(Exception):
        client.create_registered_model("m")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run() as run:
            info = mlflow.sklearn.log_model(model, name="model", **log_options)
        sha = logged_model_sha256(info.model_uri, uri)
        version = client.create_model_version(
            "m", info.model_uri, run_id=run.info.run_id, tags={HASH_TAG: sha}
        )
    finally:
        mlflow.set_tracking_uri(previous)
    return str(version.version)


def double(values: np.ndarray) -> np.ndarray:
    """Any function of ours: skops would have to import and call it to load the model."""
    return values * 2


def test_a_model_registered_with_its_hash_loads(uri: str) -> None:
    model = fit_model()
    version = register_model(uri, project="p", name="m", model=model)
    loaded = ModelRegistry(uri).load_version("m", version=version)[1]
    frame, _ = training_frame(rows=20, seed=2)
    np.testing.assert_allclose(
        loaded.predict_proba(frame[CHURN_V1_FEATURES]), model.predict_proba(frame)
    )


def test_pickle_formats_are_refused(uri: str) -> None:
    version = _log_other(uri, fit_model(), serialization_format="cloudpickle")
    with pytest.raises(UntrustedModelError, match="serialized as 'cloudpickle' refused"):
        ModelRegistry(uri).load_version("m", version=version)[1]


def test_types_outside_our_list_are_refused_even_if_the_artifact_trusts_them(uri: str) -> None:
    frame, labels = training_frame(rows=200, seed=1)
    model = make_pipeline(FunctionTransformer(double), LogisticRegression(max_iter=5000)).fit(
        frame, labels
    )
    import skops.io

    trusted_by_artifact = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    version = _log_other(
        uri, model, serialization_format="skops", skops_trusted_types=trusted_by_artifact
    )
    with pytest.raises(
        UntrustedModelError,
        match=r"needs types that are not trusted: tests\.core\.test_model_trust\.double",
    ):
        ModelRegistry(uri).load_version("m", version=version)[1]


def test_changed_files_and_a_missing_hash_are_refused(uri: str) -> None:
    version = register_model(uri, project="p", name="m")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    source = client.get_model_version_download_uri("m", version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=uri))
    # The artifact store is local here: find the stored copy of the skops file and alter it.
    [stored] = [
        path
        for path in (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").rglob("*.skops")
    ]
    stored.write_bytes(stored.read_bytes() + b"\0")
    with pytest.raises(UntrustedModelError, match="model files changed since training"):
        ModelRegistry(uri).load_version("m", version=version)[1]
    assert local.is_dir()

    unhashed = register_model(uri, project="p", name="m", tags={HASH_TAG: ""})
    with pytest.raises(UntrustedModelError, match=f"no {HASH_TAG} tag"):
        ModelRegistry(uri).load_version("m", version=unhashed)[1]
