"""Exact TreeSHAP contributions for the two model families ``churn train`` produces."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)

from core.explain import TreeExplainer, build_explainer, mean_abs_contributions, top_reasons
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.serving import training_frame

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`

FEATURES = tuple(CHURN_V1_FEATURES)


def _hist(*, with_nan: bool, trees: int = 60, depth: int = 6) -> tuple[Any, np.ndarray]:
    frame, labels = training_frame(3000, seed=4)
    if with_nan:
        frame.loc[frame.index[::17], "feature_2"] = np.nan
    model = HistGradientBoostingClassifier(
        max_iter=trees, max_depth=depth, max_features=0.8, early_stopping=False, random_state=0
    ).fit(frame, labels)
    return model, frame.to_numpy()


def _gradient(*, trees: int = 40, depth: int = 5) -> tuple[Any, np.ndarray]:
    frame, labels = training_frame(3000, seed=5)
    model = GradientBoostingClassifier(
        n_estimators=trees, max_depth=depth, subsample=0.8, random_state=0
    ).fit(frame, labels)
    return model, frame.to_numpy()


def _frame(matrix: np.ndarray) -> Any:
    import pandas as pd

    return pd.DataFrame(matrix, columns=list(FEATURES))


@pytest.mark.parametrize("family", ["hist_gradient_boosting", "gradient_boosting"])
def test_contributions_plus_base_value_equal_the_raw_output(family: str) -> None:
    model, matrix = _hist(with_nan=True) if family == "hist_gradient_boosting" else _gradient()
    explainer = TreeExplainer.from_model(model, FEATURES)
    rows = matrix[:500]
    contributions = explainer.contributions(rows)
    raw = model.decision_function(_frame(rows))
    assert explainer.family == family
    assert contributions.shape == (500, len(FEATURES))
    np.testing.assert_allclose(explainer.base_value + contributions.sum(axis=1), raw, atol=1e-6)
    # One row at a time (the serving path) gives the same numbers as the grouped batch.
    for index in (0, 17, 499):
        single = explainer.contributions(rows[index])
        np.testing.assert_allclose(single[0], contributions[index], atol=1e-12)
    # Rows are not all explained the same way: the features really move the score.
    assert np.ptp(contributions[:, 0]) > 0.1


def _tree_expectation(tree: Any, x: np.ndarray, coalition: set[int], node: int = 0) -> float:
    """Path-dependent E[tree(x) | x_S] by the textbook recursion (sklearn tree)."""
    left, right = tree.children_left[node], tree.children_right[node]
    if left < 0:
        return float(tree.value[node, 0, 0])
    feature = tree.feature[node]
    if feature in coalition:
        child = left if np.float32(x[feature]) <= tree.threshold[node] else right
        return _tree_expectation(tree, x, coalition, child)
    cover = tree.weighted_n_node_samples
    return (
        cover[left] * _tree_expectation(tree, x, coalition, left)
        + cover[right] * _tree_expectation(tree, x, coalition, right)
    ) / cover[node]


def test_contributions_are_the_shapley_values_of_the_tree_game() -> None:
    """Against the definition: every coalition enumerated, Shapley weights applied."""
    model, matrix = _gradient(trees=4, depth=3)
    explainer = TreeExplainer.from_model(model, FEATURES)
    width = len(FEATURES)
    trees = [estimator.tree_ for estimator in model.estimators_[:, 0]]
    for x in matrix[:3]:

        def value(coalition: set[int], x: np.ndarray = x) -> float:
            return model.learning_rate * sum(_tree_expectation(t, x, coalition) for t in trees)

        expected = np.zeros(width)
        for j in range(width):
            others = [k for k in range(width) if k != j]
            for size in range(width):
                weight = math.factorial(size) * math.factorial(width - size - 1)
                weight /= math.factorial(width)
                for subset in itertools.combinations(others, size):
                    expected[j] += weight * (value({*subset, j}) - value(set(subset)))
        np.testing.assert_allclose(explainer.contributions(x)[0], expected, atol=1e-12)


def test_top_reasons_are_sorted_by_absolute_effect() -> None:
    model, matrix = _hist(with_nan=False)
    explainer = TreeExplainer.from_model(model, FEATURES)
    rows = matrix[:50]
    contributions = explainer.contributions(rows)
    order, values, effects = top_reasons(rows, contributions, count=3)
    assert order.shape == values.shape == effects.shape == (50, 3)
    assert (np.diff(np.abs(effects), axis=1) <= 0).all()
    assert (np.abs(effects[:, 2]) >= np.sort(np.abs(contributions), axis=1)[:, -3]).all()
    np.testing.assert_array_equal(values, rows[np.arange(50)[:, None], order])
    reasons = explainer.explain_row(rows[0])
    assert [r.feature for r in reasons[:3]] == [FEATURES[j] for j in order[0]]
    assert sorted(r.feature for r in reasons) == sorted(FEATURES)
    means = mean_abs_contributions(explainer, rows)
    assert set(means) == set(FEATURES)
    assert means["feature_1"] > 0


def test_an_unsupported_family_is_named_not_explained() -> None:
    frame, labels = training_frame(300, seed=1)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(frame, labels)
    explainer, reason = build_explainer(forest, FEATURES)
    assert explainer is None
    assert "RandomForestClassifier" in reason


def test_compiled_paths_give_the_numpy_paths_numbers() -> None:
    """Many rows run compiled (cell tables, leaf path for rows with a missing value)."""
    model, matrix = _hist(with_nan=True)
    explainer = TreeExplainer.from_model(model, FEATURES)
    rows = matrix[:900].copy()
    rows[::2, 3] = np.nan  # 450 rows with a missing value: more than the compiled minimum

    batch = explainer.contributions(rows)
    one_by_one = np.vstack([explainer.contributions(row) for row in rows[::9]])

    np.testing.assert_allclose(batch[::9], one_by_one, rtol=0, atol=1e-12)
    raw = model.decision_function(_frame(rows))
    np.testing.assert_allclose(explainer.base_value + batch.sum(axis=1), raw, atol=1e-6)
