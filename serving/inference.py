"""Model inference for serving: the engine is chosen per model, by exactness and by speed.

Two engines answer ``predict(matrix) -> probabilities``:

- ``sklearn``: the model's own ``predict_proba`` on numpy, in a thread whose native
  (OpenMP/BLAS) thread pools are limited to ``threads``. HistGradientBoosting otherwise
  opens an OpenMP parallel region per tree, which oversubscribes two cores shared with the
  event loop (17 ms per single-row request instead of about 2 ms).
- ``flat_forest``: the fitted trees of a gradient-boosting model (HistGradientBoosting or
  GradientBoosting, binary) flattened into a few numpy arrays and evaluated for all trees
  and rows at once, one array step per tree level. No per-tree Python loop, no OpenMP.

At load, :func:`choose_engine` builds every engine the model allows, refuses any whose
probabilities differ from ``predict_proba`` by more than 1e-9 on the check rows (the
training run's test rows, plus probes at every split threshold, and probes with missing
values for a model that takes them), times the rest on one row
and on a micro-batch, and keeps the fastest. The reasons are logged and shown by ``/model``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from core.calibration import probability_from_raw, split_calibrated
from core.errors import ModelUnsupported
from core.missing_values import model_takes_missing
from core.trees import TreeArrays, read_trees

logger = logging.getLogger(__name__)

EXACTNESS_TOLERANCE = 1e-9
_TIMING_BATCH_ROWS = 32
_TIMING_REPEATS = 25


EngineName = Literal["sklearn", "flat_forest", "compiled_forest"]


class Predictor(Protocol):
    """Positive-class probabilities from a float64 matrix (columns in model order)."""

    @property
    def engine(self) -> EngineName:
        """The engine's name."""
        ...

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """One probability per row."""
        ...


@contextmanager
def native_threads(threads: int) -> Iterator[None]:
    """Limit OpenMP and BLAS thread pools of the calling thread to ``threads``."""
    with threadpool_limits(limits=threads):
        yield


def limit_native_threads(threads: int) -> None:
    """Limit native thread pools for the rest of the calling thread's life.

    Used as a thread-pool initializer: OpenMP's thread count is a per-thread setting, so it
    must be applied inside the thread that predicts, not only where the model was loaded.
    """
    threadpool_limits(limits=threads)


def observed_native_threads() -> int:
    """The largest thread count of any loaded OpenMP/BLAS pool, as the calling thread sees it."""
    return max((int(pool["num_threads"]) for pool in threadpool_info()), default=1)


@dataclass(frozen=True)
class FlatForest:
    """A binary gradient-boosted tree ensemble as flat arrays, children side by side.

    Nodes of all trees share one index space. An internal node sends a row to ``left`` when
    its value is at or below ``threshold`` and to ``left + 1`` otherwise; a missing value
    goes right where ``nan_right`` is set. Leaves point at themselves with an infinite
    threshold, so every row can take exactly ``depth`` steps.

    Attributes:
        feature: Column tested by each node.
        threshold: Split threshold per node (+inf at leaves).
        left: Index of the left child (the right child is next to it).
        nan_right: Whether a missing value goes right, per node.
        value: Leaf value per node, already multiplied by the learning rate.
        roots: Root node of each tree.
        depth: Longest root-to-leaf path.
        base: Raw score before any tree (the model's baseline log-odds).
        float32_inputs: Whether the model compares features as float32 (sklearn trees).
        family: Which estimator it came from.
        calibrator: Maps the raw score to the calibrated probability (None: the logistic
            of the raw score, an uncalibrated model).
    """

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    nan_right: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    depth: int
    base: float
    float32_inputs: bool
    family: str
    calibrator: Any = None

    @property
    def trees(self) -> int:
        """Number of trees."""
        return len(self.roots)

    def raw(self, matrix: np.ndarray) -> np.ndarray:
        """Raw score (log-odds) per row."""
        data = np.ascontiguousarray(matrix, dtype=np.float64)
        if self.float32_inputs:
            data = data.astype(np.float32).astype(np.float64)
        rows, columns = data.shape
        flat = data.ravel()
        node = np.broadcast_to(self.roots, (rows, len(self.roots)))
        offsets = (np.arange(rows, dtype=np.int64) * columns)[:, None]
        has_nan = bool(np.isnan(flat).any())
        for _ in range(self.depth):
            x = flat[self.feature[node] + offsets]
            go_right = x > self.threshold[node]
            if has_nan:
                go_right |= np.isnan(x) & self.nan_right[node]
            node = self.left[node] + go_right
        return self.base + self.value[node].sum(axis=1)

    def probability(self, raw: np.ndarray) -> np.ndarray:
        """The model's churn probability from raw scores (calibrated when the model is)."""
        return probability_from_raw(raw, self.calibrator)


class ForestPredictor:
    """Probabilities from a :class:`FlatForest` (its raw score through its calibrator)."""

    engine: EngineName = "flat_forest"

    def __init__(self, forest: FlatForest):
        self.forest = forest

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Positive-class probability per row."""
        return self.forest.probability(self.forest.raw(matrix))


class CompiledForestPredictor:
    """Probabilities from a :class:`FlatForest` through a compiled loop (numba), for batches.

    Each row adds its trees' leaf values in the model's order, as ``predict_proba`` does,
    so on the models tested the probabilities are equal to the last bit; rows are spread
    over numba's threads and the GIL is released meanwhile. Serving's per-request path
    does not use it (a single row costs the numpy engine less than loading numba).
    """

    engine: EngineName = "compiled_forest"

    def __init__(self, forest: FlatForest):
        self.forest = forest

    def raw(self, matrix: np.ndarray) -> np.ndarray:
        """Raw score (log-odds) per row."""
        from core.forest_kernels import forest_raw_parallel

        forest = self.forest
        data = np.ascontiguousarray(matrix, dtype=np.float64)
        if forest.float32_inputs:
            data = data.astype(np.float32).astype(np.float64)
        out = np.empty(len(data))
        forest_raw_parallel(
            data,
            forest.feature,
            forest.threshold,
            forest.left,
            forest.nan_right,
            forest.value,
            forest.roots,
            forest.base,
            out,
        )
        return out

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Positive-class probability per row."""
        return self.forest.probability(self.raw(matrix))


def choose_batch_engine(
    model: Any, reference: Predictor, check_rows: np.ndarray, *, forest: FlatForest | None = None
) -> EngineChoice:
    """For scoring many rows: the compiled forest if it equals ``predict_proba`` to 1e-9.

    The same exactness check as :func:`choose_engine` (the check rows plus probes at every
    split threshold); no timing race, since on batches the compiled loop is far faster
    (see the README's batch-scoring figures). ``forest``: the model already flattened.
    """
    try:
        forest = forest or flatten_forest(model)
    except ModelUnsupported as error:
        return EngineChoice(
            predictor=reference,
            reason=f"sklearn (compiled_forest not used: {error})",
            timings_ms={},
            max_difference={},
            check_rows=len(check_rows),
        )
    rows = np.vstack(
        [check_rows, _threshold_probes(forest, check_rows, missing=model_takes_missing(model))]
    )
    compiled = CompiledForestPredictor(forest)
    difference = float(np.max(np.abs(compiled.predict(rows) - reference.predict(rows))))
    exact = difference <= EXACTNESS_TOLERANCE
    reason = (
        f"compiled_forest ({forest.trees} trees, largest difference from predict_proba "
        f"{difference:.3g} on {len(rows)} rows)"
        if exact
        else f"sklearn (compiled_forest differs from predict_proba by {difference:.3g} "
        f"> {EXACTNESS_TOLERANCE:g} on {len(rows)} rows)"
    )
    if not exact:
        logger.warning(reason)
    return EngineChoice(
        predictor=compiled if exact else reference,
        reason=reason,
        timings_ms={},
        max_difference={compiled.engine: difference},
        check_rows=len(rows),
    )


def flatten_forest(model: Any) -> FlatForest:
    """Flatten a fitted binary HistGradientBoosting or GradientBoosting classifier.

    A calibrated model (:mod:`core.calibration`) is flattened from the model inside, its
    calibrator kept for the probabilities.

    Raises:
        ModelUnsupported: Another estimator, more than two classes, categorical splits, or
            a loss other than log-loss (its probability is not the logistic of the raw score).
    """
    model, calibrator = split_calibrated(model)
    fitted = read_trees(model)
    loss = type(getattr(model, "_loss", None)).__name__
    if loss != "HalfBinomialLoss":
        raise ModelUnsupported(f"loss {loss} is not log-loss")
    if fitted.family == "hist_gradient_boosting":
        base = float(np.asarray(model._baseline_prediction).ravel()[0])
    else:
        probe = np.zeros((1, model.n_features_in_), dtype=np.float32)
        base = float(np.asarray(model._raw_predict_init(probe)).ravel()[0])
    forest = _pack(
        fitted.trees, base=base, float32_inputs=fitted.float32_inputs, family=fitted.family
    )
    return replace(forest, calibrator=calibrator)


def _pack(trees: list[TreeArrays], *, base: float, float32_inputs: bool, family: str) -> FlatForest:
    """Renumber every tree breadth-first so that siblings sit next to each other."""
    feature: list[int] = []
    threshold: list[float] = []
    left: list[int] = []
    nan_right: list[bool] = []
    value: list[float] = []
    roots: list[int] = []
    depth = 0
    for tree in trees:
        root = len(feature)
        roots.append(root)
        # (original node, new index, depth); new slots are allocated in pairs.
        order = [(0, root, 0)]
        feature.append(0)
        threshold.append(np.inf)
        left.append(root)
        nan_right.append(False)
        value.append(0.0)
        while order:
            node, index, level = order.pop()
            if tree.is_leaf[node]:
                value[index] = float(tree.value[node])
                left[index] = index
                depth = max(depth, level)
                continue
            first = len(feature)
            for _ in range(2):
                feature.append(0)
                threshold.append(np.inf)
                left.append(0)
                nan_right.append(False)
                value.append(0.0)
            feature[index] = int(tree.feature[node])
            threshold[index] = float(tree.threshold[node])
            left[index] = first
            nan_right[index] = not bool(tree.missing_left[node])
            order.append((int(tree.left[node]), first, level + 1))
            order.append((int(tree.right[node]), first + 1, level + 1))
    return FlatForest(
        feature=np.asarray(feature, dtype=np.int64),
        threshold=np.asarray(threshold, dtype=np.float64),
        left=np.asarray(left, dtype=np.int64),
        nan_right=np.asarray(nan_right, dtype=bool),
        value=np.asarray(value, dtype=np.float64),
        roots=np.asarray(roots, dtype=np.int64),
        depth=depth,
        base=base,
        float32_inputs=float32_inputs,
        family=family,
    )


@dataclass(frozen=True)
class EngineChoice:
    """The engine serving a model, and why.

    Attributes:
        predictor: The chosen engine.
        reason: One line: exactness and timings of each candidate.
        timings_ms: Per engine, median milliseconds for one row and for a micro-batch.
        max_difference: Per engine checked, the largest difference from ``predict_proba``.
        check_rows: How many rows the exactness check used.
    """

    predictor: Predictor
    reason: str
    timings_ms: dict[str, tuple[float, float]]
    max_difference: dict[str, float]
    check_rows: int


def choose_engine(model: Any, reference: Predictor, check_rows: np.ndarray) -> EngineChoice:
    """Pick the fastest engine whose probabilities equal ``predict_proba`` to 1e-9.

    Args:
        model: The fitted estimator (for flattening).
        reference: Its ``predict_proba`` engine, which is always a valid answer.
        check_rows: Rows to compare engines on (float64, model column order); probes at
            every split threshold are added here.
    """
    candidates: list[Predictor] = [reference]
    differences: dict[str, float] = {}
    notes: list[str] = []
    try:
        forest = flatten_forest(model)
    except ModelUnsupported as error:
        notes.append(f"flat_forest not used: {error}")
    else:
        rows = np.vstack(
            [check_rows, _threshold_probes(forest, check_rows, missing=model_takes_missing(model))]
        )
        expected = reference.predict(rows)
        flat = ForestPredictor(forest)
        difference = float(np.max(np.abs(flat.predict(rows) - expected)))
        differences[flat.engine] = difference
        if difference <= EXACTNESS_TOLERANCE:
            candidates.append(flat)
        else:
            notes.append(
                f"flat_forest not used: differs from predict_proba by {difference:.3g} "
                f"(> {EXACTNESS_TOLERANCE:g}) on {len(rows)} rows"
            )
            logger.warning(notes[-1])
    sample = check_rows if len(check_rows) else np.zeros((1, check_rows.shape[1]))
    timings: dict[str, tuple[float, float]] = {
        engine.engine: _time_engine(engine, sample) for engine in candidates
    }
    chosen = min(candidates, key=lambda engine: sum(timings[engine.engine]))
    described = ", ".join(
        f"{name} {one:.3f} ms/row, {batch:.3f} ms/{_TIMING_BATCH_ROWS} rows"
        for name, (one, batch) in timings.items()
    )
    reason = f"{chosen.engine} chosen ({described})"
    if notes:
        reason += "; " + "; ".join(notes)
    return EngineChoice(
        predictor=chosen,
        reason=reason,
        timings_ms=timings,
        max_difference=differences,
        check_rows=len(check_rows),
    )


def _threshold_probes(
    forest: FlatForest, rows: np.ndarray, count: int = 512, *, missing: bool = False
) -> np.ndarray:
    """Rows whose values sit exactly at, just below and just above split thresholds.

    With ``missing`` (a model that takes NaN), as many again with about a third of their
    values missing: the engine must send a missing value the way ``predict_proba`` does.
    """
    rng = np.random.default_rng(0)
    internal = np.flatnonzero(np.isfinite(forest.threshold))
    probes = np.empty((count, rows.shape[1]))
    for column in range(rows.shape[1]):
        cuts = forest.threshold[internal[forest.feature[internal] == column]]
        if cuts.size == 0:
            cuts = np.array([0.0])
        picked = rng.choice(cuts, size=count)
        nudge = rng.choice([-1.0, 0.0, 1.0], size=count)
        probes[:, column] = np.nextafter(picked, picked + nudge)
    if not missing:
        return probes
    holes = probes.copy()
    holes[rng.random(holes.shape) < 1 / 3] = np.nan
    return np.vstack([probes, holes])


def _time_engine(engine: Predictor, sample: np.ndarray) -> tuple[float, float]:
    """Median milliseconds for one row and for a micro-batch."""
    one = np.ascontiguousarray(sample[:1])
    batch = np.ascontiguousarray(np.resize(sample, (_TIMING_BATCH_ROWS, sample.shape[1])))
    figures = []
    for rows in (one, batch):
        engine.predict(rows)  # warm-up
        times = []
        for _ in range(_TIMING_REPEATS):
            started = time.perf_counter()
            engine.predict(rows)
            times.append(time.perf_counter() - started)
        figures.append(float(np.median(times)) * 1000)
    return figures[0], figures[1]
