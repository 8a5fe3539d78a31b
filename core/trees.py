"""The trees of a fitted gradient-boosting classifier, read once into plain numpy arrays.

Serving's flat-forest engine and the exact explainer both evaluate the same trees; this is
the one place that reads scikit-learn's fitted internals for them (HistGradientBoosting's
``_predictors`` node records, GradientBoosting's ``estimators_`` trees).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from core.errors import ModelUnsupported

TreeFamily = Literal["hist_gradient_boosting", "gradient_boosting"]


@dataclass(frozen=True)
class TreeArrays:
    """One regression tree, node-indexed; leaf values already on the raw (log-odds) scale.

    Attributes:
        left: Left child per node (-1 or unused at leaves).
        right: Right child per node.
        feature: Column tested per node.
        threshold: A row goes left when its value is at or below this.
        missing_left: Whether a missing value goes left, per node.
        cover: Training rows (or weight) reaching each node.
        value: Leaf value per node, multiplied by the learning rate where the model does.
        is_leaf: Whether each node is a leaf.
    """

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    cover: np.ndarray
    value: np.ndarray
    is_leaf: np.ndarray


@dataclass(frozen=True)
class FittedTrees:
    """A binary ensemble's trees and how its raw output is formed from them.

    Attributes:
        trees: The trees in the model's order.
        family: Which estimator they came from.
        float32_inputs: Whether the model compares features as float32 (sklearn trees do).
    """

    trees: list[TreeArrays]
    family: TreeFamily
    float32_inputs: bool


def read_trees(model: Any) -> FittedTrees:
    """Read the trees of a fitted binary HistGradientBoosting or GradientBoosting classifier.

    Raises:
        ModelUnsupported: Another estimator, not fitted, more than two classes, or
            categorical splits.
    """
    from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier

    if len(getattr(model, "classes_", [])) != 2:
        raise ModelUnsupported(f"{type(model).__name__} is not a fitted binary classifier")
    if isinstance(model, HistGradientBoostingClassifier):
        return FittedTrees(_hist_trees(model), "hist_gradient_boosting", float32_inputs=False)
    if isinstance(model, GradientBoostingClassifier):
        return FittedTrees(_gb_trees(model), "gradient_boosting", float32_inputs=True)
    raise ModelUnsupported(f"{type(model).__name__} is not a gradient-boosted tree ensemble")


def _hist_trees(model: Any) -> list[TreeArrays]:
    if getattr(model, "_predictors", None) is None:
        raise ModelUnsupported("the HistGradientBoostingClassifier is not fitted")
    trees = []
    for iteration in model._predictors:
        if len(iteration) != 1:
            raise ModelUnsupported("more than one tree per iteration (not binary)")
        nodes = iteration[0].nodes
        if nodes["is_categorical"].any():
            raise ModelUnsupported("categorical splits are not supported")
        trees.append(
            TreeArrays(
                left=nodes["left"].astype(np.int64),
                right=nodes["right"].astype(np.int64),
                feature=nodes["feature_idx"].astype(np.int64),
                threshold=nodes["num_threshold"].astype(np.float64),
                missing_left=nodes["missing_go_to_left"].astype(bool),
                cover=nodes["count"].astype(np.float64),
                value=nodes["value"].astype(np.float64),
                is_leaf=nodes["is_leaf"].astype(bool),
            )
        )
    return trees


def _gb_trees(model: Any) -> list[TreeArrays]:
    if getattr(model, "estimators_", None) is None:
        raise ModelUnsupported("the GradientBoostingClassifier is not fitted")
    if model.estimators_.shape[1] != 1:
        raise ModelUnsupported("more than one tree per stage (not binary)")
    rate = float(model.learning_rate)
    trees = []
    for estimator in model.estimators_[:, 0]:
        tree = estimator.tree_
        missing = getattr(tree, "missing_go_to_left", None)
        trees.append(
            TreeArrays(
                left=tree.children_left.astype(np.int64),
                right=tree.children_right.astype(np.int64),
                feature=tree.feature.astype(np.int64),
                threshold=tree.threshold.astype(np.float64),
                missing_left=(
                    np.zeros(tree.node_count, bool)
                    if missing is None
                    else np.asarray(missing).astype(bool)
                ),
                cover=tree.weighted_n_node_samples.astype(np.float64),
                # sklearn adds learning_rate * value per stage: the same product, taken once.
                value=rate * tree.value[:, 0, 0].astype(np.float64),
                is_leaf=tree.children_left < 0,
            )
        )
    return trees
