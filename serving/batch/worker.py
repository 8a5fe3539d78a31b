"""The scoring process: loads the model, then scores and writes each chunk it is sent.

It runs beside the process that retrieves the chunks (``serving.batch.run``), spawned with
this module as its only import of the package: Feast never loads here. Its tasks are plain
functions (``ProcessPoolExecutor``), so the model and the open scores file are kept in
this process's own state between them; it runs one scoring run's tasks, in order, then
exits.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import ModelUnsupported, UnavailableError
from core.missing_values import MissingValuePolicy, MissingValues
from serving.batch.registry import load_model_version
from serving.batch.scorer import ChunkScorer, describe_model, output_schema
from serving.inference import flatten_forest


@dataclass(frozen=True)
class LoadedInWorker:
    """What the scoring process reports once its model is ready."""

    version: str
    description: str
    reasons_note: str
    seconds: float


@dataclass(frozen=True)
class ChunkScores:
    """What the scoring process reports for one chunk it has scored and written."""

    scored: int
    unscored: pd.DataFrame
    seconds: float
    scored_with_missing: int = 0


@dataclass(frozen=True)
class _ScoresFile:
    """The scores file being written, and its schema."""

    writer: pq.ParquetWriter
    schema: pa.Schema


@dataclass
class _WorkerState:
    """The scoring process's model and open scores file, between its tasks."""

    scorer: ChunkScorer
    threshold: float
    scores: _ScoresFile | None = None  # opened by the first chunk


# This process's one scoring run (see the module docstring).
_IN_WORKER: dict[str, _WorkerState] = {}


def start_scoring_process() -> None:
    """(First, in the scoring process) Yield the CPU to the retrieval; exit without teardown.

    The retrieval is the critical path; the scoring process keeps up with it at a lower
    priority. Its interpreter teardown took about 1 s (MLflow, scikit-learn and numba
    imported) after the last chunk, and nothing in it is needed once the scores file is
    closed: registered first, this exit runs after every other exit handler.
    """
    os.nice(5)
    atexit.register(_exit_without_teardown)


def _exit_without_teardown() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def load_into_worker(
    tracking_uri: str,
    *,
    name: str,
    alias: str,
    version: str | None,
    reasons: int,
    at: datetime,
    threshold: float,
) -> LoadedInWorker:
    """Load the model (trusted only) and its explainer; keep them for the chunks."""
    clock = time.monotonic()
    loaded = load_model_version(
        tracking_uri, name=name, alias=alias, version=version, reasons=reasons
    )
    try:
        forest = flatten_forest(loaded.model)
    except ModelUnsupported:
        forest = None  # the engine choice says why at the first chunk
    scorer = ChunkScorer(loaded, reasons=reasons, at=at, forest=forest)
    _IN_WORKER["state"] = _WorkerState(scorer, threshold)
    return LoadedInWorker(
        version=loaded.version,
        description=describe_model(loaded.model),
        reasons_note=loaded.reasons_note,
        seconds=time.monotonic() - clock,
    )


def set_missing_policy_in_worker(declared: MissingValuePolicy | None) -> str:
    """Check the feature service's missing-value policy against the loaded model; keep it.

    Queued after the load, before the first chunk: a refusal fails the run before any
    chunk is scored. Returns the policy's description.

    Raises:
        ModelRefused: The policy does not fit the model (``core.missing_values``).
    """
    state = _IN_WORKER.get("state")
    if state is None:
        raise UnavailableError("the scoring process has no model: its load failed")
    loaded = state.scorer.loaded
    state.scorer.missing = MissingValues.for_model(
        loaded.model,
        loaded.features,
        declared=declared,
        fill_values=loaded.fill_values,
        owner=f"model {loaded.name} version {loaded.version}",
    )
    return state.scorer.missing.describe()


def _open_scores(temporary: str) -> tuple[_WorkerState, _ScoresFile]:
    state = _IN_WORKER.get("state")
    if state is None:
        raise UnavailableError("the scoring process has no model: its load failed")
    if state.scores is None:
        schema = output_schema(state.scorer.features, state.scorer.reasons)
        state.scores = _ScoresFile(pq.ParquetWriter(temporary, schema), schema)
    return state, state.scores


def score_in_worker(frame: pd.DataFrame, temporary: str) -> ChunkScores:
    """Score one chunk and append it to the scores file."""
    clock = time.monotonic()
    state, scores = _open_scores(temporary)
    table, unscored = state.scorer.score(frame, state.threshold, scores.schema)
    scores.writer.write_table(table)
    with_missing = len(table) - table.column("missing_features").null_count
    return ChunkScores(len(table), unscored, time.monotonic() - clock, with_missing)


def finish_in_worker(temporary: str) -> str:
    """Close the scores file; the engine the chunks were scored by."""
    state, scores = _open_scores(temporary)  # no chunks: the file still gets its schema
    scores.writer.close()
    _IN_WORKER.clear()
    return state.scorer.engine_note
