"""The served model: found by alias in the MLflow registry, checked, and scored on numpy.

Versions are found and loaded through the model checkpoint (:class:`core.models.ModelRegistry`:
artifact hash and trusted types). A model version must carry the lineage training writes
(core.lineage: feature service, features, project); its sklearn columns must be exactly its
features. Anything else is refused with a message naming the problem.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import mlflow.artifacts
import numpy as np
import pandas as pd
import sklearn
from mlflow.exceptions import MlflowException
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from core.calibration import split_calibrated
from core.errors import ModelRefused
from core.explain import TreeExplainer, build_explainer
from core.lineage import LineageError, ModelLineage
from core.missing_values import MissingValues
from core.model_checks import CHECK_ROWS_ARTIFACT, read_check_rows
from core.models import ModelRegistry, ModelVersion
from serving.features import FeaturePlan
from serving.inference import EngineChoice, EngineName, Predictor, choose_engine, native_threads

logger = logging.getLogger(__name__)


class MlflowModelSource:
    """Finds the version behind an alias and loads it through the model checkpoint.

    Args:
        registry: The MLflow registry (explicit URI; trusted loads only).
        name: Registered model name.
        alias: Alias of the version to serve.
    """

    def __init__(self, *, registry: ModelRegistry, name: str, alias: str):
        self.name = name
        self.alias = alias
        self._registry = registry

    def current_version(self) -> ModelVersion | None:
        """The version holding the alias, or None when there is none (blocking)."""
        return self._registry.find(self.name, alias=self.alias)

    def load(self, info: ModelVersion) -> Any:
        """The version's model, if its files match their hash and its types are trusted.

        Raises:
            UntrustedModelError: The artifact fails a trust check (blocking).
        """
        return self._registry.load(info)

    def check_rows(self, info: ModelVersion) -> np.ndarray | None:
        """The training run's test rows (model columns), or None when it logged none."""
        if info.run_id is None:
            return None
        with tempfile.TemporaryDirectory(prefix="churn-check-") as folder:
            try:
                local = mlflow.artifacts.download_artifacts(
                    run_id=info.run_id,
                    artifact_path=CHECK_ROWS_ARTIFACT,
                    dst_path=folder,
                    tracking_uri=self._registry.tracking_uri,
                )
            except (MlflowException, OSError):
                return None
            return read_check_rows(local, features=model_lineage(info).features)


def model_lineage(info: ModelVersion) -> ModelLineage:
    """The feature service, ordered features and project a version was trained with.

    Raises:
        ModelRefused: A required tag is missing, empty or malformed.
    """
    try:
        return ModelLineage.from_tags(info.tags, owner=info.label)
    except LineageError as error:
        raise ModelRefused(str(error)) from error


class NumpyPredictor:
    """Churn probabilities from a numpy matrix, with no DataFrame per call (engine ``sklearn``).

    The model was fitted on a DataFrame, so sklearn would check (and warn about) column
    names on every call. The names are checked once here against the Feast feature list;
    then the estimator that performs that check forgets them, on this private copy only,
    and a probe confirms numpy and DataFrame input give the same probabilities. Models
    that select columns by name (a ColumnTransformer first) keep the DataFrame path.

    Raises:
        ModelRefused: Columns differ from the features, or the model is not a binary
            classifier with predict_proba.
    """

    engine: EngineName = "sklearn"

    def __init__(self, model: Any, features: tuple[str, ...]):
        if not hasattr(model, "predict_proba"):
            raise ModelRefused(f"{type(model).__name__} has no predict_proba")
        fitted = getattr(model, "feature_names_in_", None)
        if fitted is not None and list(fitted) != list(features):
            raise ModelRefused(
                f"model columns {list(fitted)} differ from its feast.features tag {list(features)}"
            )
        classes = [int(c) if isinstance(c, int | np.integer) else c for c in model.classes_]
        if sorted(classes) != [0, 1]:
            raise ModelRefused(f"model classes {classes} are not the binary 0/1 labels")
        self.features = features
        self._model = model
        self._positive = classes.index(1)
        probe = np.linspace(0.5, 1.5, len(features)).reshape(1, -1)
        expected = model.predict_proba(self._frame(probe))[:, self._positive]
        self._numpy = fitted is None or _forget_feature_names(model)
        if not np.allclose(self.predict(probe), expected):
            raise ModelRefused("model gives different probabilities on numpy input")

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Positive-class probability per row of ``matrix`` (columns in feature order)."""
        data = matrix if self._numpy else self._frame(matrix)
        # Infinite values never reach the model (they are refused before), and NaN only
        # reaches one that handles it (core.missing_values): skip sklearn's scan.
        with sklearn.config_context(assume_finite=True):
            probabilities = self._model.predict_proba(data)
        return np.asarray(probabilities[:, self._positive], dtype=np.float64)

    @property
    def uses_numpy(self) -> bool:
        """Whether calls go straight to numpy (False: a DataFrame is built per call)."""
        return self._numpy

    def _frame(self, matrix: np.ndarray) -> Any:
        return pd.DataFrame(matrix, columns=list(self.features))


def _estimators(model: Any) -> list[Any]:
    """The estimators data flows through, in order (pipelines flattened)."""
    if isinstance(model, Pipeline):
        return [
            inner
            for _, step in model.steps
            if step not in (None, "passthrough")
            for inner in _estimators(step)
        ]
    return [model]


def _forget_feature_names(model: Any) -> bool:
    """Drop the column names where sklearn checks them; False when names are needed.

    Only the first estimator sees the caller's columns. When it selects columns by name
    (ColumnTransformer) or a later step was fitted on named columns (pandas output),
    numpy input is not equivalent and nothing is changed.
    """
    inner, calibrator = split_calibrated(model)
    if calibrator is not None:  # the calibrator sees raw scores; the model inside, columns
        if not _forget_feature_names(inner):
            return False
        vars(model).pop("feature_names_in_", None)
        return True
    first, *rest = _estimators(model)
    if isinstance(first, ColumnTransformer) or any(
        "feature_names_in_" in vars(step) for step in rest
    ):
        return False
    vars(first).pop("feature_names_in_", None)
    return True


@dataclass(frozen=True)
class ServingModel:
    """Everything one model version needs to answer, swapped in as a whole.

    Attributes:
        name: Registered model name.
        version: Registered version.
        run_id: Training run.
        features: Model columns (Feast feature names), model order.
        plan: Its feature service, resolved against the Feast registry.
        predictor: The inference engine chosen for it.
        engine: Why that engine (exactness and timings of the candidates).
        loaded_at: When it was loaded.
        explainer: Exact per-feature contributions (None: the family cannot be explained).
        explain_problem: Why there is no explainer.
        missing: Its missing-value policy, checked against the model.
    """

    name: str
    version: str
    run_id: str | None
    features: tuple[str, ...]
    plan: FeaturePlan
    predictor: Predictor
    engine: EngineChoice
    loaded_at: datetime
    missing: MissingValues
    explainer: TreeExplainer | None = None
    explain_problem: str = ""


def build_serving_model(
    info: ModelVersion,
    model: Any,
    plan: FeaturePlan,
    *,
    check_rows: np.ndarray | None,
    threads: int,
) -> ServingModel:
    """Check a loaded model against its plan, choose its inference engine, wrap it (blocking).

    Args:
        info: The registered version.
        model: Its fitted estimator.
        plan: Its feature service, resolved.
        check_rows: The training run's test rows (model column order), or None; the engine
            chosen must reproduce ``predict_proba`` on them to 1e-9.
        threads: Native threads allowed while checking and timing engines.

    Raises:
        ModelRefused: The model does not fit its columns, classes or the missing-value
            policy its feature service declares.
    """
    missing = MissingValues.for_model(
        model,
        plan.features,
        declared=plan.missing_policy,
        fill_values=model_lineage(info).fill_values,
        owner=info.label,
    )
    reference = NumpyPredictor(model, plan.features)
    rows = np.empty((0, len(plan.features))) if check_rows is None else check_rows
    with native_threads(threads):
        engine = choose_engine(model, reference, rows)
    explainer, problem = build_explainer(model, plan.features)
    if explainer is None:
        logger.warning(
            "%s version %s: predictions are served without reasons (%s)",
            info.name,
            info.version,
            problem,
        )
    return ServingModel(
        name=info.name,
        version=info.version,
        run_id=info.run_id,
        features=plan.features,
        plan=plan,
        predictor=engine.predictor,
        engine=engine,
        loaded_at=datetime.now(UTC),
        missing=missing,
        explainer=explainer,
        explain_problem=problem,
    )
