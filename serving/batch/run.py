"""``churn score``: every user scored at one point in time, with the reasons behind each score.

Features come from the offline store through the model's own feature service, so a score
is what ``/predict`` would have answered at that moment. Users are processed in chunks:
memory follows the chunk size, not the number of users. A user whose features are missing
at ``--at`` is never scored from nulls: it is counted, and listed with the reason in a
second file. Both files are written beside their final names, synced and renamed
(:mod:`core.files`), under one lock (:mod:`core.locks`), so a killed run leaves the
previous pair (or nothing), never half a file.

Speed: two processes. This one imports Feast, opens the store (its on-demand code
verified), lists the users and retrieves the chunks in order (:mod:`serving.batch.chunks`);
the scoring process (:mod:`serving.batch.worker`) looks the version up in the registry,
loads the model (trusted only) and its explainer meanwhile, then scores each chunk it is
sent and appends it to the scores file.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import numpy as np

from core.settings import DataSettings, FeastSettings, MlflowSettings, ModelSettings
from serving.batch.chunks import ScoringRun
from serving.batch.inputs import read_users_file
from serving.batch.outcome import ScoreOutcome
from serving.batch.registry import find_model_version
from serving.batch.settings import ScoringSettings
from serving.batch.worker import load_into_worker, start_scoring_process


@dataclass(frozen=True)
class ScoreRequest:
    """What to score, when, with which model, and where to write it.

    Attributes:
        at: Point in time of the features (and the request time of the time features);
            default now.
        out: Output Parquet file (the unscored users go to ``<stem>.unscored.parquet``);
            default ``<data_dir>/scores/scores-<at>.parquet``.
        users: The users to score: their ids, or a file of them (Parquet or CSV with a
            ``user_id`` column, or one id per line); default every user with a feature
            row within the TTL.
        model_version: A registered version; default the model settings' alias (champion).
        settings: Chunk size and reasons (default ``CHURN_SCORING_*``).
        model: Registered model name, alias and decision threshold (``CHURN_MODEL_*``).
        feast: Feature store profile.
        mlflow: MLflow location.
        data: Data folder (default output and MLflow store).
        progress: Where progress lines go (stderr by default).
    """

    at: datetime | None = None
    out: Path | None = None
    users: np.ndarray | Path | None = None
    model_version: str | None = None
    settings: ScoringSettings | None = None
    model: ModelSettings | None = None
    feast: FeastSettings | None = None
    mlflow: MlflowSettings | None = None
    data: DataSettings | None = None
    progress: TextIO | None = None


def run_score(request: ScoreRequest) -> ScoreOutcome:
    """Score users at one point in time from the offline store; write Parquet atomically.

    Raises:
        InputError: Bad users file, model, version, lineage or profile (exit 2); among
            them ``UntrustedModelError`` (the model's files changed since training, or it
            needs untrusted types) and ``OnDemandSourceMismatch`` (the registry's on-demand
            code is not the repo's).
        UnavailableError: The offline store or the scoring process failed (exit 1).
    """
    started = time.monotonic()
    at = request.at or datetime.now(UTC)
    data = request.data or DataSettings()
    out = request.out or data.data_dir / "scores" / f"scores-{at:%Y%m%dT%H%M%SZ}.parquet"
    users = read_users_file(request.users) if isinstance(request.users, Path) else request.users
    settings = request.settings or ScoringSettings()
    model = request.model or ModelSettings()
    tracking_uri = (request.mlflow or MlflowSettings()).resolved_tracking_uri(data)
    # The model side (importing MLflow, the version lookup, the trusted load, the
    # explainer's cell tables, then scoring and writing every chunk) runs in a second
    # process. The retrieval is mostly Python (Feast, ibis, pandas) and holds this
    # process's GIL; in a thread beside it, scoring waited for the GIL and slowed the
    # retrieval too. Spawned, not forked: a caller may have threads.
    with ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"), initializer=start_scoring_process
    ) as scoring:
        name, alias, version = model.name, model.alias, request.model_version
        finding = scoring.submit(
            find_model_version, tracking_uri, name=name, alias=alias, version=version
        )
        # Queued behind the lookup in the same process, so the model loads while this one
        # still imports Feast, instead of after it has asked for the lookup's answer.
        loading = scoring.submit(
            load_into_worker,
            tracking_uri,
            name=name,
            alias=alias,
            version=version,
            reasons=settings.reasons,
            at=at,
            threshold=model.decision_threshold,
        )
        run = ScoringRun(
            out,
            at,
            scoring,
            finding,
            loading,
            data=data,
            chunk_rows=settings.chunk_rows,
            started=started,
        )
        outcome = run.run(users, feast=request.feast, progress=request.progress)
    outcome.seconds = time.monotonic() - started
    return outcome
