"""The model wrapper: numpy scoring equal to sklearn's DataFrame scoring, or a refusal."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from core.errors import ModelRefused
from core.models import ModelVersion
from serving.model import NumpyPredictor, model_lineage
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.serving import training_frame

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`

FEATURES = tuple(CHURN_V1_FEATURES)


def _fitted(model):
    frame, labels = training_frame(seed=1)
    return model.fit(frame[list(FEATURES)], labels), frame


@pytest.mark.parametrize(
    "model",
    [
        GradientBoostingClassifier(n_estimators=10, random_state=0),
        HistGradientBoostingClassifier(max_iter=10, random_state=0),
        make_pipeline(StandardScaler(), LogisticRegression()),
    ],
    ids=["gbm", "hist-gbm", "scaler-pipeline"],
)
def test_numpy_path_gives_sklearn_probabilities_without_a_warning(model) -> None:
    model, frame = _fitted(model)
    expected = model.predict_proba(frame[list(FEATURES)])[:, 1]
    predictor = NumpyPredictor(model, FEATURES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = predictor.predict(frame[list(FEATURES)].to_numpy())
    assert predictor.uses_numpy
    np.testing.assert_allclose(got, expected)


def test_a_model_that_selects_columns_by_name_keeps_the_dataframe_path() -> None:
    selector = ColumnTransformer([("scale", StandardScaler(), ["feature_1", "feature_log"])])
    model, frame = _fitted(make_pipeline(selector, LogisticRegression()))
    predictor = NumpyPredictor(model, FEATURES)
    got = predictor.predict(frame[list(FEATURES)].to_numpy())
    assert not predictor.uses_numpy
    np.testing.assert_allclose(got, model.predict_proba(frame[list(FEATURES)])[:, 1])


def test_columns_in_another_order_than_the_tag_are_refused() -> None:
    model, _ = _fitted(GradientBoostingClassifier(n_estimators=5))
    with pytest.raises(ModelRefused, match=r"differ from its feast\.features tag"):
        NumpyPredictor(model, tuple(reversed(FEATURES)))


def test_a_non_binary_classifier_is_refused() -> None:
    frame, labels = training_frame(seed=1)
    three_classes = np.arange(len(labels)) % 3
    model = GradientBoostingClassifier(n_estimators=5).fit(frame[list(FEATURES)], three_classes)
    with pytest.raises(ModelRefused, match="not the binary 0/1 labels"):
        NumpyPredictor(model, FEATURES)


def test_feature_tags_are_read_in_model_order_and_required() -> None:
    tags = {
        "feast.feature_service": "churn_v1",
        "feast.features": "feature_2, feature_1",
        "feast.project": "churn",
    }
    info = ModelVersion(name="m", version="3", run_id=None, tags=tags)
    lineage = model_lineage(info)
    assert (lineage.feature_service, lineage.features, lineage.project) == (
        "churn_v1",
        ("feature_2", "feature_1"),
        "churn",
    )
    missing = ModelVersion(name="m", version="4", run_id=None, tags={"feast.features": "a"})
    with pytest.raises(ModelRefused, match=r"m version 4 lacks tag\(s\) feast\.feature_service"):
        model_lineage(missing)
