"""Scoring one retrieved chunk: probabilities, the decision, the top reasons, as Arrow.

Scores come from the model's trees through a compiled loop
(:class:`serving.inference.CompiledForestPredictor`) once it has been checked equal to
``predict_proba`` (1e-9) on the first rows and at every split threshold, else from
``predict_proba``; reasons from the explainer's cell tables. A row with a null feature goes
through the feature service's missing-value policy (:mod:`core.missing_values`), as in
serving: listed as unscored with the features that were null (``reject``), or scored with
them missing (``model``) or filled with the training medians (``fill``), the features
named in the ``missing_features`` column.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.calibration import split_calibrated
from core.errors import UnavailableError
from core.explain import TreeExplainer, top_reasons
from core.missing_values import MissingValues
from serving.batch.inputs import USER_ID
from serving.batch.registry import LoadedModel
from serving.inference import EngineName, FlatForest, Predictor, choose_batch_engine

# Rows of the first chunk on which the compiled trees must equal predict_proba (to 1e-9),
# besides probes at every split threshold.
_ENGINE_CHECK_ROWS = 2000


def output_schema(features: tuple[str, ...], reasons: int) -> pa.Schema:
    """The scores file's columns: one row per scored user, ``reasons`` top reasons each."""
    columns = [
        pa.field(USER_ID, pa.int64()),
        pa.field("churn_probability", pa.float64()),
        pa.field("churn_predicted", pa.bool_()),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("scored_at", pa.timestamp("us", tz="UTC")),
        # The features that were null at --at (null when none was), comma-separated.
        pa.field("missing_features", pa.string()),
    ]
    for rank in range(1, reasons + 1):
        columns += [
            pa.field(f"reason_{rank}_feature", pa.string()),
            pa.field(f"reason_{rank}_value", pa.float64()),
            pa.field(f"reason_{rank}_contribution", pa.float64()),
        ]
    return pa.schema(columns, metadata={"features": ",".join(features)})


def describe_model(model: Any) -> str:
    """The estimator's class and, for tree ensembles, how many trees it adds up (a
    calibrated model: the model inside and its calibrator)."""
    inner, calibrator = split_calibrated(model)
    trees = getattr(inner, "n_iter_", None) or getattr(inner, "n_estimators_", None)
    described = type(inner).__name__ + (f", {int(trees)} trees" if trees else "")
    if calibrator is not None:
        described += f", calibrated ({type(calibrator).__name__.strip('_')})"
    return described


class ChunkScorer:
    """Scores and reasons of retrieved chunks, with the engine chosen on the first rows.

    Args:
        loaded: The model version and its explainer.
        reasons: Top reasons per user (0: none).
        at: The scoring time written on every row.
        forest: The model already flattened (None: it cannot be).
    """

    def __init__(
        self, loaded: LoadedModel, *, reasons: int, at: datetime, forest: FlatForest | None
    ):
        self.loaded = loaded
        # Set by the scoring process once the feature service's policy is known.
        self.missing: MissingValues | None = None
        self._explainer: TreeExplainer | None = loaded.explainer
        self.reasons = reasons if loaded.explainer is not None else 0
        self._at = pd.Timestamp(at)
        self._forest = forest
        self._predictor: Predictor | None = None
        self.engine_note = ""

    @property
    def features(self) -> tuple[str, ...]:
        """The model's features, in its column order."""
        return self.loaded.features

    def _predict(self, matrix: np.ndarray) -> np.ndarray:
        if self._predictor is None:
            choice = choose_batch_engine(
                self.loaded.model,
                FramePredictor(self.loaded.model, self.loaded.features),
                matrix[:_ENGINE_CHECK_ROWS],
                forest=self._forest,
            )
            self._predictor = choice.predictor
            self.engine_note = f"engine: {choice.reason}"
        return self._predictor.predict(matrix)

    def score(
        self, frame: pd.DataFrame, threshold: float, schema: pa.Schema
    ) -> tuple[pa.Table, pd.DataFrame]:
        """Scores of the rows the missing-value policy accepts, and the list of the others."""
        if self.missing is None:
            raise UnavailableError("the scoring process has no missing-value policy")
        names = list(self.loaded.features)
        handled = self.missing.apply(
            np.ascontiguousarray(frame[names].to_numpy(dtype=np.float64, na_value=np.nan))
        )
        rejected = handled.rejected
        users = frame[USER_ID].to_numpy(dtype=np.int64)
        unscored = pd.DataFrame(
            {
                USER_ID: users[rejected],
                "reason": "missing_features",
                "detail": [
                    "null at --at: " + ", ".join(handled.names(int(row)))
                    for row in np.flatnonzero(rejected)
                ],
            }
        )
        scored = ~rejected
        matrix = np.ascontiguousarray(handled.matrix[scored])
        missing_names = (
            [", ".join(handled.names(int(row))) or None for row in np.flatnonzero(scored)]
            if handled.missing is not None
            else None
        )
        probability = self._predict(matrix) if len(matrix) else np.empty(0)
        rows = len(probability)
        # Arrow arrays straight from numpy: pandas' object columns of repeated strings cost
        # 50-80 ms a chunk to convert, on the thread the retrieval needs.
        columns: dict[str, Any] = {
            USER_ID: pa.array(users[scored]),
            "churn_probability": pa.array(probability.astype(np.float64)),
            "churn_predicted": pa.array(probability >= threshold),
            "model_name": pa.repeat(pa.scalar(self.loaded.name, pa.string()), rows),
            "model_version": pa.repeat(pa.scalar(self.loaded.version, pa.string()), rows),
            "scored_at": pa.repeat(pa.scalar(self._at, pa.timestamp("us", tz="UTC")), rows),
            "missing_features": pa.array(missing_names, pa.string())
            if missing_names is not None
            else pa.nulls(rows, pa.string()),
        }
        if self._explainer is not None and self.reasons:
            contributions = self._explainer.contributions(matrix)
            order, picked, effects = top_reasons(matrix, contributions, count=self.reasons)
            feature_names = pa.array(names, pa.string())
            for rank in range(order.shape[1]):
                columns[f"reason_{rank + 1}_feature"] = feature_names.take(order[:, rank])
                # A missing value the model took is null here, as in /predict's reasons.
                columns[f"reason_{rank + 1}_value"] = pa.array(picked[:, rank], from_pandas=True)
                columns[f"reason_{rank + 1}_contribution"] = pa.array(effects[:, rank])
        return pa.table(columns).cast(schema), unscored


class FramePredictor:
    """``predict_proba`` on a DataFrame with the training columns (the reference engine)."""

    engine: EngineName = "sklearn"

    def __init__(self, model: Any, features: tuple[str, ...]):
        self._model = model
        self._features = list(features)
        self._positive = list(model.classes_).index(1)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Positive-class probability per row of ``matrix`` (columns in feature order)."""
        frame = pd.DataFrame(matrix, columns=self._features)
        return np.asarray(self._model.predict_proba(frame)[:, self._positive], dtype=np.float64)
