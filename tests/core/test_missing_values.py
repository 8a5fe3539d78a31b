"""The missing-value policy: what a service declares, what a model accepts, what it does."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier

from core.calibration import calibrate
from core.errors import FeatureServiceError, LineageError, ModelRefused
from core.lineage import ModelLineage
from core.missing_values import (
    FILL_VALUES_TAG,
    POLICY_TAG,
    MissingValues,
    declared_policy,
    model_takes_missing,
    read_fill_values,
)

pytestmark = pytest.mark.unit

FEATURES = ("a", "b", "c")


@pytest.fixture(scope="module")
def models() -> dict[str, object]:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 3)), rng.integers(0, 2, size=200)
    hist = HistGradientBoostingClassifier(max_iter=5).fit(x, y)
    gradient = GradientBoostingClassifier(n_estimators=5).fit(x, y)
    return {
        "hist": hist,
        "gradient": gradient,
        # As `churn train` registers them: the model inside its calibrator.
        "calibrated hist": calibrate(hist, x, y, seed=0)[0],
        "calibrated gradient": calibrate(gradient, x, y, seed=0)[0],
    }


def test_a_service_declares_a_policy_in_its_tags_or_none() -> None:
    assert declared_policy({POLICY_TAG: " Fill "}, service="s") == "fill"
    assert declared_policy({"model": "churn"}, service="s") is None
    assert declared_policy(None, service="s") is None
    with pytest.raises(FeatureServiceError, match="'drop' is not one of reject, model, fill"):
        declared_policy({POLICY_TAG: "drop"}, service="s")


def test_a_calibrated_model_takes_missing_values_as_its_inner_model_does(
    models: dict[str, object],
) -> None:
    # The calibrator reads the inner model's score, never a feature: only the inner model
    # meets a missing value (scikit-learn's calibrated wrapper does not pass its tag on).
    assert model_takes_missing(models["calibrated hist"])
    assert not model_takes_missing(models["calibrated gradient"])
    policy = MissingValues.for_model(
        models["calibrated hist"], FEATURES, declared=None, fill_values=None, owner="v1"
    )
    assert policy.policy == "model"


def test_the_default_follows_the_model(models: dict[str, object]) -> None:
    assert model_takes_missing(models["hist"]) and not model_takes_missing(models["gradient"])
    hist = MissingValues.for_model(
        models["hist"], FEATURES, declared=None, fill_values=None, owner="v1"
    )
    gradient = MissingValues.for_model(
        models["gradient"], FEATURES, declared=None, fill_values=None, owner="v1"
    )
    assert (hist.policy, hist.declared) == ("model", False)
    assert gradient.policy == "reject"
    assert hist.describe() == "missing values: model (default)"


def test_a_declared_policy_the_version_cannot_follow_is_refused(
    models: dict[str, object],
) -> None:
    with pytest.raises(ModelRefused, match="GradientBoostingClassifier does not handle"):
        MissingValues.for_model(
            models["gradient"], FEATURES, declared="model", fill_values=None, owner="v1"
        )
    with pytest.raises(ModelRefused, match="no training median for b, c"):
        MissingValues.for_model(
            models["gradient"], FEATURES, declared="fill", fill_values={"a": 1.0}, owner="v1"
        )


def test_each_policy_on_a_matrix(models: dict[str, object]) -> None:
    matrix = np.array([[1.0, 2.0, 3.0], [np.nan, 2.0, np.nan]])
    built = {
        policy: MissingValues.for_model(
            models["hist"],
            FEATURES,
            declared=policy,
            fill_values={"a": 10.0, "b": 20.0, "c": 30.0},
            owner="v1",
        )
        for policy in ("reject", "model", "fill")
    }

    rejected = built["reject"].apply(matrix)
    taken = built["model"].apply(matrix)
    filled = built["fill"].apply(matrix)
    complete = built["reject"].apply(matrix[:1])

    assert rejected.rejected.tolist() == [False, True] and rejected.names(1) == ("a", "c")
    assert taken.rejected.tolist() == [False, False] and np.isnan(taken.matrix[1, 0])
    assert filled.matrix[1].tolist() == [10.0, 2.0, 30.0] and filled.names(1) == ("a", "c")
    assert filled.names(0) == ()
    assert complete.missing is None and not complete.rejected.any()


def test_training_medians_travel_with_the_lineage() -> None:
    lineage = ModelLineage("churn_v1", FEATURES, fill_values={"a": 0.1, "b": math.nan})
    tags = lineage.to_tags()

    assert ModelLineage.from_tags(tags).fill_values == {"a": 0.1}  # finite values only
    assert read_fill_values({}, owner="v1") is None
    with pytest.raises(LineageError, match=FILL_VALUES_TAG):
        read_fill_values({FILL_VALUES_TAG: "[1, 2]"}, owner="v1")
