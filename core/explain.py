"""Exact per-feature contributions (TreeSHAP values) of the tree ensembles we train.

The two families ``churn train`` produces (``HistGradientBoostingClassifier`` and
``GradientBoostingClassifier``) are read into one flat table of leaves. For a row ``x`` the
path-dependent TreeSHAP game of a leaf is a product over features: a feature in the
coalition contributes ``a`` (1 when ``x`` satisfies every split of the leaf's path on that
feature, else 0), a feature outside it the product ``b`` of the path's cover ratios on that
feature. The Shapley value of such a product game has a closed form: the Shapley weight
``s!(M-s-1)!/M!`` is the Beta integral of ``t^s (1-t)^(M-1-s)`` over [0, 1], so

    phi_j = sum over leaves of v * (a_j - b_j) * integral_0^1 prod_{k != j} (b_k + (a_k - b_k) t) dt

and the integrand is a polynomial of degree < M, which Gauss-Legendre quadrature with
ceil(M/2) nodes integrates exactly. Every row is then a few numpy operations over the
(leaf, path feature) entries of the whole model: no per-tree Python loop, no recursion,
the same numbers as the TreeSHAP algorithm (Lundberg et al. 2020) up to rounding.

Contributions are in the model's raw output (log-odds of churn): ``base_value`` plus the
row's contributions equals ``decision_function`` of the row.

For many rows the explanation depends on ``x`` only through which side of each split
threshold every feature falls: rows are grouped by that bin vector and each group is
explained once (exact, and far cheaper on real data where many users share bins).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from core.calibration import split_calibrated
from core.errors import ModelUnsupported
from core.trees import TreeArrays, read_trees

# Rows explained together on the leaf path: bounds the (rows, entries) working arrays.
_ROW_BLOCK = 16
# From this many rows on, per-tree cell tables are built (once) and used.
_TABLE_MIN_ROWS = 256
# Cells tabled in all (float64 x features each: 4M cells x 7 features = 224 MB at most); the
# trees with the fewest cells are tabled first, the others stay on the leaf path.
_TABLE_BUDGET_CELLS = 4_000_000
# Working-array budget (elements) of one block of rows on the leaf path.
_BLOCK_ELEMENTS = 1 << 18
# From this many rows on, the leaf path runs compiled (numba); fewer rows (a /predict
# explanation) stay on numpy, which needs no compiled code loaded.
_COMPILED_MIN_ROWS = 256


@dataclass(frozen=True)
class Reason:
    """One feature's part in a prediction.

    Attributes:
        feature: Feature name.
        value: The feature's value in the row (None: missing, and the model took it so).
        contribution: Its TreeSHAP value, in log-odds of churn (positive raises the risk).
    """

    feature: str
    value: float | None
    contribution: float


@dataclass(frozen=True)
class _Leaves:
    """The model's leaves as (leaf, feature) entries sorted by leaf."""

    values: np.ndarray  # per entry: its leaf's value (raw-output units)
    feature: np.ndarray  # per entry: feature index
    low: np.ndarray  # per entry: x must be > low ...
    high: np.ndarray  # ... and <= high to follow the path
    nan_follows: np.ndarray  # per entry: whether a missing value follows the path
    cover: np.ndarray  # per entry: product of the path's cover ratios on this feature
    starts: np.ndarray  # first entry of each leaf
    leaf_of_entry: np.ndarray  # per entry: position of its leaf in ``starts``
    expected: float  # sum over trees of the cover-weighted mean of the leaves
    bit: np.ndarray  # per entry: 2 ** (its position among its leaf's entries)
    width: np.ndarray  # per entry: the number of entries of its leaf
    table_offset: np.ndarray  # per entry: where its leaf's table starts, plus its position
    table: np.ndarray  # per leaf, per pattern of followed features, per entry: its share
    tree_leaves: np.ndarray  # per tree (and one past the last): its first leaf in ``starts``


class TreeExplainer:
    """TreeSHAP values of one fitted binary tree ensemble.

    Build with :func:`build_explainer` (or :meth:`from_model`).

    Attributes:
        features: Column names, model order.
        family: ``hist_gradient_boosting`` or ``gradient_boosting``.
        base_value: Expected raw output (log-odds) over the training data's covers.
    """

    def __init__(
        self,
        *,
        features: tuple[str, ...],
        family: str,
        leaves: _Leaves,
        intercept: float,
        float32_inputs: bool,
        trees: list[TreeArrays] | None = None,
    ):
        self.features = features
        self._trees = trees
        self._cells: _CellTables | None = None
        self.family = family
        self._leaves = leaves
        self._float32 = float32_inputs
        self.base_value = float(intercept + leaves.expected)
        # Sorted distinct thresholds per feature, for grouping rows that share every bin.
        self._thresholds = [
            np.unique(
                np.concatenate([leaves.low[leaves.feature == j], leaves.high[leaves.feature == j]])
            )
            for j in range(len(features))
        ]
        self._thresholds = [t[np.isfinite(t)] for t in self._thresholds]

    @classmethod
    def from_model(cls, model: Any, features: tuple[str, ...]) -> TreeExplainer:
        """Read a fitted model's trees.

        Raises:
            ModelUnsupported: Not a binary (Hist)GradientBoostingClassifier on numeric
                features, or its trees cannot be read.
        """
        try:
            # A calibrated model is explained by the model inside: contributions stay in
            # its log-odds, which the calibrator maps monotonically to the probability.
            model, _ = split_calibrated(model)
            fitted = read_trees(model)
        except ModelUnsupported as error:
            raise ModelUnsupported(
                f"no exact explanation for {type(model).__name__}: {error} (supported: binary "
                "HistGradientBoostingClassifier, GradientBoostingClassifier)"
            ) from error
        trees, family, float32 = fitted.trees, fitted.family, fitted.float32_inputs
        leaves = _flatten(trees, len(features))
        probe = np.linspace(0.5, 1.5, len(features)).reshape(1, -1)
        # The intercept (the prior's log-odds) from the public raw output: raw(x) minus
        # the trees' part of it.
        explainer = cls(
            features=features, family=family, leaves=leaves, intercept=0.0, float32_inputs=float32
        )
        raw = _decision(model, probe, features)
        trees_part = explainer.base_value + explainer.contributions(probe).sum(axis=1)
        intercept = float(raw[0] - trees_part[0])
        return cls(
            features=features,
            family=family,
            leaves=leaves,
            intercept=intercept,
            float32_inputs=float32,
            trees=trees,
        )

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """TreeSHAP values, one row per input row, one column per feature (log-odds)."""
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim == 1:
            matrix = matrix.reshape(1, -1)
        if self._float32:  # sklearn's trees compare float32 inputs with their thresholds
            matrix = matrix.astype(np.float32).astype(np.float64)
        if len(matrix) <= 1:
            return self._explain(matrix)
        groups, inverse = self._group(matrix)
        unique = self._explain(matrix[groups])
        return unique[inverse]

    def prepare_batches(self) -> _CellTables | None:
        """Build the cell tables now (they are otherwise built by the first large batch).

        ``churn score`` calls this in a worker thread while it reads the offline store:
        the work is mostly compiled code that releases the GIL.
        """
        if self._trees is not None and self._cells is None:
            self._cells = _CellTables(self._trees, self._leaves, len(self.features))
        return self._cells

    def explain_row(self, row: np.ndarray) -> list[Reason]:
        """Every feature's value and contribution for one row, largest effect first."""
        contributions = self.contributions(np.asarray(row).reshape(1, -1))[0]
        order = np.argsort(-np.abs(contributions), kind="stable")
        return [Reason(self.features[j], float(row[j]), float(contributions[j])) for j in order]

    def _group(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows with the same bin on every feature: first row of each group, row -> group."""
        codes = np.empty(matrix.shape, dtype=np.int64)
        radix = 1
        for j, thresholds in enumerate(self._thresholds):
            column = matrix[:, j]
            code = np.searchsorted(thresholds, column, side="left")
            code[np.isnan(column)] = thresholds.size + 1
            codes[:, j] = code
            radix *= thresholds.size + 2
        if radix < 2**62:
            scale = np.cumprod([1] + [t.size + 2 for t in self._thresholds[:-1]])
            keys = codes @ scale.astype(np.int64)
            _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        else:
            _, first, inverse = np.unique(codes, axis=0, return_index=True, return_inverse=True)
        return first, inverse.reshape(-1)

    def _explain(self, matrix: np.ndarray) -> np.ndarray:
        cells = self.prepare_batches() if len(matrix) >= _TABLE_MIN_ROWS else None
        if cells is not None:
            finite = np.isfinite(matrix).all(axis=1)
            if finite.all():
                return cells.contributions(matrix)
            out = np.empty(matrix.shape)
            out[finite] = cells.contributions(matrix[finite])
            out[~finite] = _leaf_contributions(self._leaves, matrix[~finite], len(self.features))
            return out
        return _leaf_contributions(self._leaves, matrix, len(self.features))


def _leaf_contributions(leaves: _Leaves, matrix: np.ndarray, width: int) -> np.ndarray:
    """Contributions through the leaf tables: every (leaf, feature) entry per row."""
    if len(matrix) >= _COMPILED_MIN_ROWS:
        return _compiled_leaf_contributions(leaves, matrix, width)
    if len(matrix) == 1:
        values = _entry_values(leaves, matrix)[0]
        return np.bincount(leaves.feature, weights=values, minlength=width)[None, :]
    out = np.empty((len(matrix), width))
    block = max(_ROW_BLOCK, _BLOCK_ELEMENTS // max(1, leaves.feature.size))
    for start in range(0, len(matrix), block):
        values = _entry_values(leaves, matrix[start : start + block])
        bins = leaves.feature + width * np.arange(len(values))[:, None]
        out[start : start + len(values)] = np.bincount(
            bins.ravel(), weights=values.ravel(), minlength=values.shape[0] * width
        ).reshape(-1, width)
    return out


def _compiled_leaf_contributions(
    leaves: _Leaves, matrix: np.ndarray, width: int, *, tree: int | None = None
) -> np.ndarray:
    """The same sums as the numpy leaf path, compiled (numba), rows spread over threads.

    With ``tree``, only that tree's leaves of the model-wide table are read.
    """
    from core.forest_kernels import leaf_contributions_parallel

    out = np.zeros((len(matrix), width))
    first, last = (0, leaves.starts.size) if tree is None else leaves.tree_leaves[tree : tree + 2]
    if first == last:  # a single-leaf tree: no feature moves it
        return out
    stop = leaves.starts[last] if last < leaves.starts.size else leaves.feature.size
    leaf_contributions_parallel(
        np.ascontiguousarray(matrix, dtype=np.float64),
        leaves.feature,
        leaves.low,
        leaves.high,
        leaves.nan_follows,
        leaves.starts[first:last],
        stop,
        leaves.table_offset,
        leaves.table,
        out,
    )
    return out


def _entry_values(leaves: _Leaves, rows: np.ndarray) -> np.ndarray:
    """Each (leaf, feature) entry's share of its feature's contribution, per row."""
    x = rows[:, leaves.feature]  # (rows, entries)
    follows = ((x > leaves.low) & (x <= leaves.high)) | (np.isnan(x) & leaves.nan_follows)
    # The leaf's pattern: which of its path features the row follows, as bits.
    pattern = np.add.reduceat(follows * leaves.bit, leaves.starts, axis=1)
    index = leaves.table_offset + pattern[:, leaves.leaf_of_entry] * leaves.width
    return leaves.table[index]


class _CellTables:
    """Many rows fast: per tree, the contributions of every cell of its split grid.

    A tree's contributions depend on ``x`` only through which side of each of its
    thresholds every feature falls (its cell). Each tree's table holds the contributions
    of all its cells, computed once through the leaf tables at a point inside each cell;
    a row then costs one lookup per tree. Trees beyond the ``_TABLE_BUDGET_CELLS`` budget
    (largest grids first), and rows with missing values, stay on the leaf path.
    """

    def __init__(self, trees: list[TreeArrays], leaves: _Leaves, width: int):
        self.width = width
        tables: list[np.ndarray] = []
        per_tree: list[tuple[dict[int, np.ndarray], int]] = []
        rest: list[TreeArrays] = []
        offset = 0
        grids = []
        for tree in trees:
            internal = ~tree.is_leaf
            grid = {
                int(j): np.unique(tree.threshold[internal & (tree.feature == j)])
                for j in np.unique(tree.feature[internal])
            }
            grids.append((int(np.prod([t.size + 1 for t in grid.values()])), grid))
        budget = _TABLE_BUDGET_CELLS
        tabled = set()
        for index in np.argsort([cells for cells, _ in grids], kind="stable"):
            if grids[index][0] > budget:
                break
            budget -= grids[index][0]
            tabled.add(int(index))
        for index, tree in enumerate(trees):
            cells, grid = grids[index]
            if index not in tabled:
                rest.append(tree)
                continue
            # A point in every cell: bin b of a feature is (t[b-1], t[b]], the last (t[-1], inf).
            axes = [np.append(t, np.inf) for t in grid.values()]
            points = np.zeros((cells, width))
            if grid:
                mesh = np.meshgrid(*axes, indexing="ij")
                for j, values in zip(grid, mesh, strict=True):
                    points[:, j] = values.ravel()
            tables.append(_compiled_leaf_contributions(leaves, points, width, tree=index))
            per_tree.append((grid, offset))
            offset += cells
        self.table = np.concatenate(tables) if tables else np.zeros((1, width))
        self.rest = _flatten(rest, width) if rest else None
        # Per feature: the sorted thresholds of every tabled tree, and for each tree the
        # stride-weighted local bin of every global bin, packed flat for the compiled loop.
        unions: list[np.ndarray] = []
        steps: list[np.ndarray] = []
        for j in range(width):
            union = np.unique(
                np.concatenate([g[j] for g, _ in per_tree if j in g] or [np.empty(0)])
            )
            unions.append(union)
            local_steps = np.zeros((union.size + 1, len(per_tree)), dtype=np.int64)
            for t, (g, _) in enumerate(per_tree):
                if j not in g:
                    continue
                later = [g[k].size + 1 for k in g if k > j]
                stride = int(np.prod(later)) if later else 1
                local = np.concatenate(([0], np.searchsorted(g[j], union, side="right")))
                local_steps[:, t] = local * stride
            steps.append(local_steps.ravel())
        self.grid = np.concatenate(unions)
        self.grid_start = np.cumsum([0] + [u.size for u in unions]).astype(np.int64)
        self.steps = np.concatenate(steps)
        self.steps_start = np.cumsum([0] + [s.size for s in steps[:-1]]).astype(np.int64)
        self.offsets = np.array([o for _, o in per_tree], dtype=np.int64)

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """Contributions of finite rows: one table row per tabled tree, plus the rest."""
        from core.forest_kernels import cell_contributions_parallel

        matrix = np.ascontiguousarray(matrix, dtype=np.float64)
        out = np.zeros(matrix.shape)
        if self.offsets.size:
            cell_contributions_parallel(
                matrix,
                self.grid,
                self.grid_start,
                self.steps,
                self.steps_start,
                self.offsets,
                self.table,
                out,
            )
        if self.rest is not None:
            out += _leaf_contributions(self.rest, matrix, self.width)
        return out


def build_explainer(model: Any, features: tuple[str, ...]) -> tuple[TreeExplainer | None, str]:
    """An explainer for the model, or None and why it cannot be explained."""
    try:
        return TreeExplainer.from_model(model, features), ""
    except ModelUnsupported as error:
        return None, str(error)


def top_reasons(
    matrix: np.ndarray, contributions: np.ndarray, *, count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``count`` largest effects per row: feature indices, values, contributions."""
    count = min(count, contributions.shape[1])
    order = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :count]
    rows = np.arange(len(matrix))[:, None]
    return order, matrix[rows, order], contributions[rows, order]


def mean_abs_contributions(explainer: TreeExplainer, matrix: np.ndarray) -> dict[str, float]:
    """Mean absolute contribution per feature over the rows (the model's global view)."""
    contributions = explainer.contributions(matrix)
    means = np.abs(contributions).mean(axis=0)
    return {name: float(value) for name, value in zip(explainer.features, means, strict=True)}


def _decision(model: Any, matrix: np.ndarray, features: tuple[str, ...]) -> np.ndarray:
    import pandas as pd

    data: Any = matrix
    if getattr(model, "feature_names_in_", None) is not None:
        data = pd.DataFrame(matrix, columns=list(features))
    return np.asarray(model.decision_function(data), dtype=np.float64).reshape(-1)


def _flatten(trees: list[TreeArrays], width: int) -> _Leaves:
    """Every leaf of every tree as (leaf, path feature) entries."""
    values: list[float] = []
    features: list[int] = []
    lows: list[float] = []
    highs: list[float] = []
    nan_follows: list[bool] = []
    covers: list[float] = []
    starts: list[int] = []
    tree_leaves: list[int] = []
    expected = 0.0
    for tree in trees:
        tree_leaves.append(len(starts))
        if tree.cover[0] <= 0:
            raise ModelUnsupported("a tree with no cover")
        # Depth-first: (node, {feature: (low, high, nan follows, cover ratio)}).
        stack: list[tuple[int, dict[int, tuple[float, float, bool, float]]]] = [(0, {})]
        while stack:
            node, path = stack.pop()
            if tree.is_leaf[node]:
                weight = float(np.prod([entry[3] for entry in path.values()]))
                expected += float(tree.value[node]) * weight
                if path:
                    starts.append(len(values))
                    for feature, (low, high, nan_ok, ratio) in sorted(path.items()):
                        values.append(float(tree.value[node]))
                        features.append(feature)
                        lows.append(low)
                        highs.append(high)
                        nan_follows.append(nan_ok)
                        covers.append(ratio)
                continue
            feature = int(tree.feature[node])
            if not 0 <= feature < width:
                raise ModelUnsupported(f"a split on feature {feature} of {width}")
            threshold = float(tree.threshold[node])
            low, high, nan_ok, ratio = path.get(feature, (-np.inf, np.inf, True, 1.0))
            for child, goes_left in ((int(tree.left[node]), True), (int(tree.right[node]), False)):
                share = float(tree.cover[child]) / float(tree.cover[node])
                if share <= 0:
                    raise ModelUnsupported("a node with no cover")
                bounds = (low, min(high, threshold)) if goes_left else (max(low, threshold), high)
                nan_here = nan_ok and bool(tree.missing_left[node]) == goes_left
                stack.append((child, {**path, feature: (*bounds, nan_here, ratio * share)}))
    tree_leaves.append(len(starts))
    if not values:  # every tree is a single leaf: nothing depends on the features
        starts = [0]
        values, features, lows, highs, nan_follows, covers = (
            [0.0],
            [0],
            [-np.inf],
            [np.inf],
            [True],
            [1.0],
        )
    start_array = np.asarray(starts, dtype=np.int64)
    leaf_of_entry = np.zeros(len(values), dtype=np.int64)
    leaf_of_entry[start_array[1:]] = 1
    leaf_of_entry = np.cumsum(leaf_of_entry)
    values_array = np.asarray(values)
    cover_array = np.asarray(covers)
    counts = np.diff(np.append(start_array, len(values)))
    position = np.arange(len(values)) - start_array[leaf_of_entry]
    table, leaf_offset = _pattern_tables(
        values_array[start_array], cover_array, start_array, counts
    )
    return _Leaves(
        values=values_array,
        feature=np.asarray(features, dtype=np.int64),
        low=np.asarray(lows),
        high=np.asarray(highs),
        nan_follows=np.asarray(nan_follows),
        cover=cover_array,
        starts=start_array,
        leaf_of_entry=leaf_of_entry,
        expected=expected,
        bit=(1 << position).astype(np.int64),
        width=counts[leaf_of_entry],
        table_offset=leaf_offset[leaf_of_entry] + position,
        table=table,
        tree_leaves=np.asarray(tree_leaves, dtype=np.int64),
    )


def _pattern_tables(
    leaf_values: np.ndarray, covers: np.ndarray, starts: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every leaf's Shapley shares for every pattern of followed path features.

    A leaf with d path features has 2**d patterns (bit i: the row follows the path on the
    leaf's i-th feature); for each, entry i's share is
    ``v (a_i - b_i) * integral_0^1 prod_{k != i} (b_k + (a_k - b_k) t) dt``, integrated
    exactly by Gauss-Legendre quadrature (the integrand has degree d - 1).

    Returns:
        The flat table (leaf by leaf, pattern-major) and each leaf's offset in it.
    """
    sizes = counts * (1 << counts)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    table = np.empty(int(sizes.sum()))
    for d in np.unique(counts):
        d = int(d)
        points, weights = np.polynomial.legendre.leggauss(max(1, (d + 1) // 2))
        t = (points + 1.0) / 2.0
        w = weights / 2.0
        bits = ((np.arange(1 << d)[:, None] >> np.arange(d)) & 1).astype(np.float64)
        leaves = np.flatnonzero(counts == d)
        for chunk in np.array_split(leaves, max(1, len(leaves) * (1 << d) * d // 2_000_000)):
            b = covers[starts[chunk][:, None] + np.arange(d)][:, None, None, :]  # (n,1,1,d)
            delta = bits[None, :, None, :] - b  # (n, patterns, 1, d)
            factor = b + delta * t[None, None, :, None]  # (n, patterns, nodes, d)
            others = np.prod(factor, axis=3, keepdims=True) / factor
            integral = np.einsum("npqd,q->npd", others, w)
            shares = leaf_values[chunk][:, None, None] * delta[:, :, 0, :] * integral
            index = offsets[chunk][:, None] + np.arange((1 << d) * d)
            table[index] = shares.reshape(len(chunk), -1)
    return table, offsets
