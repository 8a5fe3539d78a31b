"""The chunk loop of a scoring run: retrieved here, scored in the scoring process, written.

Up to :data:`CHUNKS_AHEAD` retrieved chunks wait in the scoring process while the next is
retrieved here: memory stays a few chunks, and neither side idles while the other has work.
The scores file is written by the scoring process beside its final name, the list of
unscored users here; both then replace the previous pair under one lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
from feast import FeatureStore

from core.compute import OfflineCompute, offline_compute
from core.errors import FeatureServiceError, InputError, OfflineSourceError, UnavailableError
from core.feast_adapter.services import ServiceFeatures, resolve_service_features
from core.feast_store import feature_store_session
from core.files import atomic_path
from core.locks import file_lock
from core.missing_values import declared_policy
from core.settings import DataSettings, FeastSettings
from serving.batch.inputs import USER_ID
from serving.batch.offline import list_population, retrieve_chunk
from serving.batch.outcome import ScoreOutcome, unscored_path_for
from serving.batch.registry import RegisteredVersion
from serving.batch.worker import (
    ChunkScores,
    LoadedInWorker,
    finish_in_worker,
    score_in_worker,
    set_missing_policy_in_worker,
)

# Retrieved chunks that may wait in the scoring process: the first ones cover the model's
# load (about 3 s against 1 s a chunk at 100k users); memory stays a few chunks.
CHUNKS_AHEAD = 4


def outcome_of(future: Future[Any]) -> Any:
    """A scoring process task's result; its errors re-raised here, a dead process a failure."""
    try:
        return future.result()
    except BrokenProcessPool as error:
        raise UnavailableError(f"the model scoring worker process stopped: {error}") from error


def check_loaded(
    loading: Future[LoadedInWorker], found: RegisteredVersion, outcome: ScoreOutcome
) -> None:
    """The loaded model's notes into ``outcome``; its load error, or a moved alias, raised.

    Raises:
        UnavailableError: The alias moved to another version between the lookup the users
            and features were chosen by and the load.
    """
    loaded: LoadedInWorker = outcome_of(loading)
    if loaded.version != found.version:
        raise UnavailableError(
            f"model {found.name}: version {found.version} was looked up but version "
            f"{loaded.version} loaded (the alias moved during start-up); run again"
        )
    outcome.model_description = loaded.description
    outcome.model_load_seconds = loaded.seconds
    outcome.reasons_note = loaded.reasons_note


def output_lock_path(data: DataSettings, out: Path) -> Path:
    """The lock of an output pair: under the data folder, so no file appears beside it."""
    digest = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:16]
    return data.data_dir / "locks" / f"scores-{digest}.lock"


class _Progress:
    """Rows, rows/s and ETA, one line per chunk."""

    def __init__(self, total: int, stream: TextIO):
        self._total = total
        self._stream = stream
        self._started = time.monotonic()
        self._done = 0

    def advance(self, rows: int) -> None:
        self._done += rows
        elapsed = time.monotonic() - self._started
        rate = self._done / elapsed if elapsed > 0 else 0.0
        left = (self._total - self._done) / rate if rate else 0.0
        share = 100.0 * self._done / self._total if self._total else 100.0
        print(
            f"score: {self._done:,}/{self._total:,} users ({share:.0f}%), "
            f"{rate:,.0f} users/s, ETA {left:.0f} s",
            file=self._stream,
            flush=True,
        )


def _service_features(store: FeatureStore, found: RegisteredVersion) -> ServiceFeatures:
    """The version's feature service, checked against its lineage and this profile.

    Raises:
        InputError: Another Feast project, or a service that does not offer the model's
            features (or needs request fields batch scoring cannot supply).
    """
    if found.project is not None and found.project != store.project:
        raise InputError(
            f"model {found.name} version {found.version} was trained on Feast project "
            f"{found.project!r}; this profile's project is {store.project!r}"
        )
    features = resolve_service_features(store, found.service)
    if sorted(features.names) != sorted(found.features):
        raise FeatureServiceError(
            f"feature service {found.service} offers {features.names}; the model needs "
            f"{list(found.features)}"
        )
    if features.request_fields:
        raise FeatureServiceError(
            f"feature service {found.service} needs request fields "
            f"{features.request_fields} that batch scoring cannot supply"
        )
    return features


class ScoringRun:
    """One run: the users listed and retrieved here, the scoring process's tasks, the files.

    Args:
        out: The scores file.
        at: Point in time of the features.
        scoring: The scoring process (one worker).
        finding: Its lookup of the version (lineage).
        loading: Its load of the model.
        data: Data folder (where the output pair's lock lives).
        chunk_rows: Users per retrieval.
        started: When the run started (monotonic clock).
    """

    def __init__(
        self,
        out: Path,
        at: datetime,
        scoring: ProcessPoolExecutor,
        finding: Future[RegisteredVersion],
        loading: Future[LoadedInWorker],
        *,
        data: DataSettings,
        chunk_rows: int,
        started: float,
    ):
        self._out = out
        self._at = at
        self._scoring = scoring
        self._finding = finding
        self._loading = loading
        self._data = data
        self._chunk_rows = chunk_rows
        self._started = started
        self._unscored: list[pd.DataFrame] = []
        self._policy: Future[str] | None = None

    def run(
        self, users: np.ndarray | None, *, feast: FeastSettings | None, progress: TextIO | None
    ) -> ScoreOutcome:
        """Score ``users`` (default every user with features) and write the output pair."""
        with feature_store_session(feast) as store:
            found: RegisteredVersion = outcome_of(self._finding)
            outcome = ScoreOutcome(
                path=self._out,
                unscored_path=unscored_path_for(self._out),
                at=self._at,
                model_name=found.name,
                model_version=found.version,
            )
            features = _service_features(store, found)
            # Queued behind the model's load: checked there before the first chunk.
            self._policy = self._scoring.submit(
                set_missing_policy_in_worker,
                declared_policy(features.feast_service.tags, service=found.service),
            )
            compute = offline_compute(store)
            targets = self._targets(store, compute, features, users, outcome)
            service = store.get_feature_service(found.service)
            tracker = _Progress(len(targets), progress or sys.stderr)
            with (
                contextlib.ExitStack() as replacing,
                atomic_path(self._out) as scores_temporary,
                atomic_path(outcome.unscored_path) as unscored_temporary,
            ):
                outcome.startup_seconds = time.monotonic() - self._started
                waiting: deque[Future[ChunkScores]] = deque()
                for begin in range(0, len(targets), self._chunk_rows):
                    clock = time.monotonic()
                    chunk = targets[begin : begin + self._chunk_rows]
                    frame = retrieve_chunk(compute, service, features, chunk, self._at)
                    outcome.retrieval_seconds += time.monotonic() - clock
                    columns = frame[[USER_ID, *found.features]]
                    waiting.append(
                        self._scoring.submit(score_in_worker, columns, str(scores_temporary))
                    )
                    del frame, columns
                    while len(waiting) > CHUNKS_AHEAD:
                        self._collect(waiting.popleft(), found, outcome, tracker)
                while waiting:
                    self._collect(waiting.popleft(), found, outcome, tracker)
                check_loaded(self._loading, found, outcome)
                if self._policy is not None:
                    outcome.missing_note = outcome_of(self._policy)
                finishing = self._scoring.submit(finish_in_worker, str(scores_temporary))
                outcome.engine_note = outcome_of(finishing)
                self._unscored_frame().to_parquet(unscored_temporary, index=False)
                # Held while both files replace the previous pair (as this block ends), so
                # a concurrent run on the same output never leaves its list beside our scores.
                replacing.enter_context(file_lock(output_lock_path(self._data, self._out)))
        return outcome

    def _targets(
        self,
        store: FeatureStore,
        compute: OfflineCompute,
        features: ServiceFeatures,
        users: np.ndarray | None,
        outcome: ScoreOutcome,
    ) -> np.ndarray:
        """The users to retrieve: those with features; asked-for others listed as such."""
        clock = time.monotonic()
        try:
            population, window_start = list_population(store, compute, features, self._at)
        except InputError:
            raise
        except Exception as error:
            raise OfflineSourceError(f"reading the offline store failed: {error}") from error
        outcome.listing_seconds = time.monotonic() - clock
        if users is None:
            return population
        known = np.isin(users, population)
        if not known.all():
            absent = pd.DataFrame(
                {
                    USER_ID: users[~known],
                    "reason": "no_features",
                    "detail": f"no feature row between {window_start.isoformat()} and "
                    f"{self._at.isoformat()}",
                }
            )
            self._unscored.append(absent)
            outcome.count_unscored(absent)
        return users[known]

    def _collect(
        self,
        scored: Future[ChunkScores],
        found: RegisteredVersion,
        outcome: ScoreOutcome,
        tracker: _Progress,
    ) -> None:
        """Wait for one chunk's scores and count them (a failed load is raised first)."""
        clock = time.monotonic()
        if not outcome.model_description:
            check_loaded(self._loading, found, outcome)
        if not outcome.missing_note and self._policy is not None:
            outcome.missing_note = outcome_of(self._policy)  # a refusal is raised here
        chunk: ChunkScores = outcome_of(scored)
        outcome.scoring_wait_seconds += time.monotonic() - clock
        outcome.scoring_seconds += chunk.seconds
        outcome.scored += chunk.scored
        outcome.scored_with_missing += chunk.scored_with_missing
        if len(chunk.unscored):
            self._unscored.append(chunk.unscored)
            outcome.count_unscored(chunk.unscored)
        tracker.advance(chunk.scored + len(chunk.unscored))

    def _unscored_frame(self) -> pd.DataFrame:
        listed = (
            pd.concat(self._unscored, ignore_index=True)
            if self._unscored
            else pd.DataFrame({USER_ID: [], "reason": [], "detail": []})
        )
        return listed.astype({USER_ID: "int64", "reason": "string", "detail": "string"})
