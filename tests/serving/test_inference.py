"""Inference engines: the flat forest reproduces predict_proba, or predict_proba is used."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from serving.inference import (
    EXACTNESS_TOLERANCE,
    CompiledForestPredictor,
    ForestPredictor,
    choose_batch_engine,
    choose_engine,
    flatten_forest,
    native_threads,
    observed_native_threads,
)
from serving.model import NumpyPredictor
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.serving import training_frame

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`

FEATURES = tuple(CHURN_V1_FEATURES)


def _data(rows: int = 3000, *, missing: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    frame, labels = training_frame(rows, seed=5)
    matrix = frame[list(FEATURES)].to_numpy().copy()
    if missing:
        holes = np.random.default_rng(1).random(matrix.shape) < missing
        matrix[holes] = np.nan
    return matrix, labels


def _frame(matrix: np.ndarray) -> pd.DataFrame:
    # Training fits on DataFrames; serving then scores numpy in the same column order.
    return pd.DataFrame(matrix, columns=list(FEATURES))


@pytest.mark.parametrize(
    ("model", "missing"),
    [
        (HistGradientBoostingClassifier(max_iter=60, max_depth=6, random_state=0), 0.05),
        (HistGradientBoostingClassifier(max_iter=40, max_leaf_nodes=63, random_state=0), 0.0),
        (GradientBoostingClassifier(n_estimators=40, max_depth=5, random_state=0), 0.0),
    ],
    ids=["hist-gbm-with-missing-values", "hist-gbm-deep", "gbm"],
)
def test_the_flat_forest_equals_predict_proba(model, missing: float) -> None:
    matrix, labels = _data(missing=missing)
    model.fit(matrix, labels)
    fresh, _ = _data(2000, missing=missing)
    fresh = fresh * 1.1 + 0.01  # values the trees were not fitted on

    forest = flatten_forest(model)
    got = ForestPredictor(forest).predict(fresh)

    assert forest.trees == (model.n_iter_ if hasattr(model, "n_iter_") else model.n_estimators)
    np.testing.assert_allclose(got, model.predict_proba(fresh)[:, 1], rtol=0, atol=1e-12)
    # One row at a time gives the same as the batch.
    assert ForestPredictor(forest).predict(fresh[:1])[0] == got[0]
    # The compiled loop (churn score) adds the trees in predict_proba's order: equal bits.
    compiled = CompiledForestPredictor(forest).predict(fresh)
    np.testing.assert_array_equal(compiled, model.predict_proba(fresh)[:, 1])


def test_the_fastest_exact_engine_is_chosen_and_explained() -> None:
    matrix, labels = _data()
    model = HistGradientBoostingClassifier(max_iter=80, random_state=0)

    model.fit(_frame(matrix), labels)
    choice = choose_engine(model, NumpyPredictor(model, FEATURES), matrix[:500])

    assert choice.predictor.engine == "flat_forest"
    assert choice.max_difference["flat_forest"] <= EXACTNESS_TOLERANCE
    assert set(choice.timings_ms) == {"sklearn", "flat_forest"}
    assert choice.reason.startswith("flat_forest chosen (sklearn ")
    assert choice.check_rows == 500


class _Drifting(HistGradientBoostingClassifier):
    """A model whose predict_proba is not what its trees say (a custom subclass)."""

    def predict_proba(self, X):
        probabilities = super().predict_proba(X)
        probabilities[:, 1] = np.clip(probabilities[:, 1] + 1e-6, 0, 1)
        probabilities[:, 0] = 1 - probabilities[:, 1]
        return probabilities


def test_an_engine_that_differs_from_predict_proba_is_not_used() -> None:
    matrix, labels = _data()
    model = _Drifting(max_iter=20, random_state=0).fit(_frame(matrix), labels)
    expected = model.predict_proba(_frame(matrix[:5]))[:, 1]

    choice = choose_engine(model, NumpyPredictor(model, FEATURES), matrix[:200])

    assert choice.predictor.engine == "sklearn"
    assert "flat_forest not used: differs from predict_proba by 1e-06" in choice.reason
    np.testing.assert_array_equal(choice.predictor.predict(matrix[:5]), expected)


def test_a_model_that_is_not_a_tree_ensemble_keeps_predict_proba() -> None:
    matrix, labels = _data()
    model = LogisticRegression(max_iter=5000).fit(_frame(matrix), labels)

    choice = choose_engine(model, NumpyPredictor(model, FEATURES), matrix[:100])

    assert choice.predictor.engine == "sklearn"
    assert "LogisticRegression is not a gradient-boosted tree ensemble" in choice.reason


def test_native_threads_are_limited_inside_the_block() -> None:
    import sklearn.ensemble  # noqa: F401  (loads the OpenMP runtime)

    with native_threads(1):
        inside = observed_native_threads()
    with native_threads(2):
        two = observed_native_threads()
    assert (inside, two) == (1, 2)


def test_batches_use_the_compiled_forest_only_when_it_equals_predict_proba() -> None:
    matrix, labels = _data()
    exact = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(_frame(matrix), labels)
    drifting = _Drifting(max_iter=20, random_state=0).fit(_frame(matrix), labels)

    chosen = choose_batch_engine(exact, NumpyPredictor(exact, FEATURES), matrix[:300])
    refused = choose_batch_engine(drifting, NumpyPredictor(drifting, FEATURES), matrix[:300])

    assert chosen.predictor.engine == "compiled_forest"
    assert chosen.reason.startswith("compiled_forest (30 trees, largest difference")
    assert chosen.check_rows > 300  # the threshold probes are checked too
    assert refused.predictor.engine == "sklearn"
    assert "differs from predict_proba by 1e-06" in refused.reason


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_a_calibrated_model_is_flattened_with_its_calibrator_and_explained(method: str) -> None:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    from core.explain import TreeExplainer

    matrix, labels = _data()
    inner = HistGradientBoostingClassifier(max_iter=40, random_state=0)
    inner.fit(_frame(matrix[:2000]), labels[:2000])
    model = CalibratedClassifierCV(FrozenEstimator(inner), method=method)
    model.fit(_frame(matrix[2000:]), labels[2000:])
    fresh = matrix[:700] * 1.1 + 0.01

    forest = flatten_forest(model)
    expected = model.predict_proba(_frame(fresh))[:, 1]

    assert forest.calibrator is not None
    np.testing.assert_allclose(ForestPredictor(forest).predict(fresh), expected, atol=1e-12)
    np.testing.assert_allclose(CompiledForestPredictor(forest).predict(fresh), expected, atol=1e-12)
    # Not the uncalibrated probability: the calibrator is applied.
    assert np.max(np.abs(expected - inner.predict_proba(_frame(fresh))[:, 1])) > 1e-3
    raw = inner.decision_function(_frame(fresh[:20]))
    # The reasons explain the model inside: base value plus contributions is its log-odds.
    explainer = TreeExplainer.from_model(model, FEATURES)
    total = explainer.base_value + explainer.contributions(fresh[:20]).sum(axis=1)
    np.testing.assert_allclose(total, raw, atol=1e-9)
    # Serving scores numpy (the names forgotten inside too, no warning) with the flat forest.
    reference = NumpyPredictor(model, FEATURES)
    assert reference.uses_numpy
    np.testing.assert_allclose(reference.predict(fresh), expected, atol=1e-12)
    choice = choose_engine(model, reference, matrix[:300])
    assert choice.predictor.engine == "flat_forest"
