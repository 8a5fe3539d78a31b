"""``churn score``: every user scored at one point in time, with the reasons behind each score.

Features come from the offline store through the model's own feature service
(``get_historical_features`` with an entity frame of the users at ``--at``), so a score is
what ``/predict`` would have answered at that moment. Users are processed in chunks: memory
follows the chunk size, not the number of users. A user whose features are missing at
``--at`` is never scored from nulls: it is counted, and listed with the reason in a second
file. Both files are written to a temporary name, flushed to disk and renamed, so a killed
run leaves the previous output (or nothing), never half a file.

Speed: two processes. This one imports Feast, opens the store, lists the users and
retrieves the chunks in order; a second one (the scoring process) looks the version up in
MLflow, loads the model and its explainer meanwhile, then scores each chunk it is sent and
appends it to the scores file, up to four chunks behind the retrieval (memory stays a few
chunks). Scores come from the model's trees through a compiled loop
(``serving.inference.CompiledForestPredictor``) once it has been checked equal to
``predict_proba`` (1e-9) on the first rows and at every split threshold, else from
``predict_proba``; reasons from the explainer's cell tables.

Layering: this stage imports ``core`` only (settings, store opening, ``--profile``, the
Feast adapter's feature-service resolution, so it names the same features as training).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import numpy as np
import pandas as pd
import typer
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cli.errors import exit_on_error
from cli.options import ProfileOption, profile_settings
from core.errors import InputError, UnavailableError
from core.feast_store import feature_store_session
from core.lineage import LineageError, ModelLineage
from core.settings import DEFAULT_MODEL_NAME, DataSettings, FeastSettings

if TYPE_CHECKING:
    import pyarrow as pa
    from feast import FeatureStore

    from core.explain import TreeExplainer
    from core.feast_adapter.services import ServiceFeatures
    from core.settings import MlflowSettings
    from serving.inference import EngineName, FlatForest, Predictor

TIMESTAMP = "event_timestamp"
USER_ID = "user_id"
# Rows of the first chunk on which the compiled trees must equal predict_proba (to 1e-9),
# besides probes at every split threshold.
_ENGINE_CHECK_ROWS = 2000
# Retrieved chunks that may wait in the scoring process: the first ones cover the model's
# load (about 3 s against 1 s a chunk at 100k users); memory stays a few chunks.
_CHUNKS_AHEAD = 4


class ScoreInputError(InputError):
    """Bad input: no such model or version, unreadable users file, bad time (exit 2)."""


class ScoreFailure(UnavailableError):
    """The offline store or the model registry failed while scoring (exit 1)."""


class ScoringSettings(BaseSettings):
    """Defaults of ``churn score`` (prefix ``CHURN_SCORING_``)."""

    model_config = SettingsConfigDict(env_prefix="CHURN_SCORING_", extra="ignore")

    model_name: str = Field(default=DEFAULT_MODEL_NAME, description="Registered model name.")
    model_alias: str = Field(default="champion", description="Alias used without a version.")
    decision_threshold: float = Field(
        default=0.5, ge=0, le=1, description="churn_predicted = probability >= this."
    )
    chunk_rows: int = Field(default=100_000, ge=1, description="Users per offline retrieval.")
    reasons: int = Field(default=3, ge=0, description="Top reasons written per user (0: none).")


@dataclass(frozen=True)
class RegisteredVersion:
    """A registered model version's lineage and artifact location, before the model loads."""

    name: str
    version: str
    service: str
    features: tuple[str, ...]
    project: str | None
    download_uri: str
    tracking_uri: str


@dataclass(frozen=True)
class LoadedModel(RegisteredVersion):
    """A registered model version ready to score, with its explainer when reasons are wanted."""

    model: Any
    explainer: TreeExplainer | None = None
    reasons_note: str = "reasons off (--reasons 0)"


@dataclass
class ScoreResult:
    """What a scoring run did."""

    path: Path
    unscored_path: Path
    at: datetime
    model_name: str
    model_version: str
    scored: int = 0
    unscored: dict[str, int] = field(default_factory=dict)
    unscored_examples: list[tuple[int, str, str]] = field(default_factory=list)
    reasons_note: str = ""
    model_description: str = ""
    engine_note: str = ""
    retrieval_seconds: float = 0.0
    scoring_wait_seconds: float = 0.0
    scoring_seconds: float = 0.0
    listing_seconds: float = 0.0
    model_load_seconds: float = 0.0
    startup_seconds: float = 0.0
    seconds: float = 0.0


def parse_at(text: str | None) -> datetime:
    """``--at``: an ISO date or date-time (naive means UTC); now when omitted.

    Raises:
        ScoreInputError: Not an ISO date or date-time.
    """
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise ScoreInputError(
            f"--at {text!r} is not an ISO date or date-time (e.g. 2026-03-01T12:00:00)"
        ) from error
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def read_users_file(path: Path) -> np.ndarray:
    """User ids from a Parquet/CSV file with a ``user_id`` column, or one id per text line.

    Raises:
        ScoreInputError: The file is missing, unreadable, or holds a non-integer id.
    """
    if not path.is_file():
        raise ScoreInputError(f"users file {path} does not exist")
    try:
        if path.suffix in (".parquet", ".pq"):
            column = pd.read_parquet(path, columns=[USER_ID])[USER_ID]
        elif path.suffix == ".csv":
            column = pd.read_csv(path, usecols=[USER_ID])[USER_ID]
        else:
            column = pd.Series(
                [line.strip() for line in path.read_text().splitlines() if line.strip()]
            )
    except (OSError, ValueError, KeyError) as error:
        raise ScoreInputError(f"users file {path}: {error}") from error
    ids = pd.to_numeric(column, errors="coerce")
    bad = column[ids.isna() | (ids != ids.round())]
    if len(bad):
        raise ScoreInputError(
            f"users file {path}: {len(bad)} value(s) are not integer user ids "
            f"(first: {bad.iloc[0]!r})"
        )
    return np.unique(ids.to_numpy(dtype=np.int64))


def find_model_version(
    tracking_uri: str, *, name: str, alias: str, version: str | None
) -> RegisteredVersion:
    """The version (or the alias's version) of a registered model: its lineage, not the model.

    Raises:
        ScoreInputError: No such model, version or alias, or the version lacks the
            training tags (feature service, features).
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        found = (
            client.get_model_version(name, version)
            if version is not None
            else client.get_model_version_by_alias(name, alias)
        )
    except MlflowException as error:
        wanted = f"version {version}" if version is not None else f"alias {alias!r}"
        raise ScoreInputError(
            f"model {name!r} has no {wanted} in {tracking_uri}: train one first (`churn train`)"
        ) from error
    try:
        lineage = ModelLineage.from_tags(found.tags, owner=f"model {name} version {found.version}")
    except LineageError as error:
        raise ScoreInputError(f"{error}: it cannot be scored through Feast") from error
    return RegisteredVersion(
        name=name,
        version=str(found.version),
        service=lineage.feature_service,
        features=lineage.features,
        project=lineage.project,
        download_uri=client.get_model_version_download_uri(name, found.version),
        tracking_uri=tracking_uri,
    )


def load_model_version(
    tracking_uri: str, *, name: str, alias: str, version: str | None, reasons: int = 0
) -> LoadedModel:
    """Find the version as ``find_model_version`` does, then download and load its model.

    With ``reasons``, the explainer is built too, its cell tables included (0.5 s of work
    that, in the registry process, stays off the cores the retrieval uses).

    Raises:
        ScoreInputError: As ``find_model_version``.
    """
    import mlflow.artifacts
    import mlflow.sklearn

    from core.explain import build_explainer

    found = find_model_version(tracking_uri, name=name, alias=alias, version=version)
    with tempfile.TemporaryDirectory(prefix="churn-score-model-") as folder:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=found.download_uri, dst_path=folder, tracking_uri=found.tracking_uri
        )
        model = mlflow.sklearn.load_model(local)
    if not reasons:
        return LoadedModel(**vars(found), model=model)
    explainer, why = build_explainer(model, found.features)
    if explainer is None:
        return LoadedModel(**vars(found), model=model, reasons_note=f"reasons not written: {why}")
    explainer.prepare_batches()
    return LoadedModel(**vars(found), model=model, explainer=explainer, reasons_note="")


class _Progress:
    """Rows, rows/s and ETA, one line per chunk (stderr by default)."""

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


def _population(
    store: FeatureStore, features: ServiceFeatures, at: datetime
) -> tuple[np.ndarray, datetime]:
    """Users with a row in one of the service's batch sources within its TTL before ``at``.

    Read through the offline store's own ``pull_all_from_table_or_query``, so it works on
    any offline store Feast supports. Returns the sorted ids and the window's start.
    """
    from feast.infra.offline_stores.offline_utils import get_offline_store_from_config

    from core.compute.spark.io import retrieval_to_pandas

    offline = get_offline_store_from_config(store.config.offline_store)
    on_demand = {view.name for view in store.list_on_demand_feature_views()}
    service = store.get_feature_service(features.service)
    ids: list[np.ndarray] = []
    earliest = at
    for projection in service.feature_view_projections:
        if projection.name in on_demand:
            continue
        view = store.get_feature_view(projection.name)
        keys = [projection.join_key_map.get(c.name, c.name) for c in view.entity_columns]
        if keys != [USER_ID]:
            raise ScoreInputError(
                f"feature view {view.name} is keyed by {keys}; churn score needs {USER_ID!r}"
            )
        ttl = view.ttl if view.ttl and view.ttl > timedelta(0) else None
        start = at - ttl if ttl else datetime(1970, 1, 1, tzinfo=UTC)
        earliest = min(earliest, start)
        source = view.batch_source
        if source is None:
            raise ScoreInputError(f"feature view {view.name} has no batch source")
        key = source.field_mapping.get(USER_ID, USER_ID)
        job = offline.pull_all_from_table_or_query(
            config=store.config,
            data_source=source,
            join_key_columns=[key],
            feature_name_columns=[],
            timestamp_field=source.timestamp_field,
            start_date=start - timedelta(seconds=1),
            end_date=at + timedelta(seconds=1),
        )
        table = retrieval_to_pandas(store, job, [key, source.timestamp_field], label="score")
        stamps = pd.to_datetime(table[source.timestamp_field], utc=True)
        inside = (stamps >= pd.Timestamp(start)) & (stamps <= pd.Timestamp(at))
        column = table.columns[0] if USER_ID not in table.columns else USER_ID
        ids.append(table.loc[inside, column].to_numpy(dtype=np.int64))
    if not ids:
        raise ScoreInputError(f"feature service {features.service} reads no batch source")
    return _sorted_unique(np.concatenate(ids)), earliest


def _sorted_unique(ids: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting: numpy 2's hash-based unique took 0.5 s on 2M ids, this 0.1 s."""
    ordered = np.sort(ids)
    keep = np.empty(len(ordered), dtype=bool)
    keep[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _retrieve(
    store: FeatureStore, service: Any, features: ServiceFeatures, users: np.ndarray, at: datetime
) -> pd.DataFrame:
    """Point-in-time features of ``users`` at ``at``, one row per user, sorted by user."""
    from core.compute.spark.io import historical_features, retrieval_to_pandas

    entity = pd.DataFrame({USER_ID: users, TIMESTAMP: pd.Timestamp(at)})
    try:
        with historical_features(
            store,
            entity,
            label="score",
            features=service,
            full_feature_names=True,
            filter_by_created_timestamp=True,  # no value created after --at (as in training)
        ) as job:
            joined = retrieval_to_pandas(
                store, job, [USER_ID, TIMESTAMP, *features.columns], label="score"
            )
    except Exception as error:
        raise ScoreFailure(f"offline retrieval failed: {error}") from error
    if len(joined) != len(users):
        raise ScoreFailure(f"the offline store returned {len(joined)} rows for {len(users)} users")
    renamed = joined.rename(columns=dict(zip(features.columns, features.names, strict=True)))
    return renamed.sort_values(USER_ID, kind="stable").reset_index(drop=True)


def _output_schema(features: tuple[str, ...], reasons: int) -> Any:
    import pyarrow as pa

    columns = [
        pa.field(USER_ID, pa.int64()),
        pa.field("churn_probability", pa.float64()),
        pa.field("churn_predicted", pa.bool_()),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("scored_at", pa.timestamp("us", tz="UTC")),
    ]
    for rank in range(1, reasons + 1):
        columns += [
            pa.field(f"reason_{rank}_feature", pa.string()),
            pa.field(f"reason_{rank}_value", pa.float64()),
            pa.field(f"reason_{rank}_contribution", pa.float64()),
        ]
    return pa.schema(columns, metadata={"features": ",".join(features)})


def _fsync_replace(temporary: Path, path: Path) -> None:
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def unscored_path_for(path: Path) -> Path:
    """Where the users that could not be scored are listed, beside the scores."""
    return path.with_name(f"{path.stem}.unscored.parquet")


def score_users(
    *,
    out: Path,
    at: datetime,
    users: np.ndarray | None = None,
    model_version: str | None = None,
    feast: FeastSettings | None = None,
    mlflow: MlflowSettings | None = None,
    data: DataSettings | None = None,
    settings: ScoringSettings | None = None,
    progress: TextIO | None = None,
) -> ScoreResult:
    """Score users at ``at`` from the offline store and write Parquet atomically.

    Args:
        out: Output Parquet file (the unscored users go to ``<stem>.unscored.parquet``).
        at: Point in time of the features (and the request time of the time features).
        users: Users to score; default every user with a feature row within the TTL.
        model_version: A registered version; default the alias's (champion).
        feast: Feature store profile.
        mlflow: MLflow location.
        data: Data folder (default MLflow store).
        settings: Scoring defaults.
        progress: Where progress lines go (stderr by default).

    Raises:
        ScoreInputError: Bad model, version, users or profile (exit 2).
        ScoreFailure: The offline store failed (exit 1).
    """
    import multiprocessing

    from core.settings import MlflowSettings

    started = time.monotonic()
    settings = settings or ScoringSettings()
    tracking_uri = (mlflow or MlflowSettings()).resolved_tracking_uri(data)
    # The model side (importing MLflow, the version lookup, the skops load, the explainer's
    # cell tables, then scoring and writing every chunk) runs in a second process. The
    # retrieval is mostly Python (Feast, ibis, pandas) and holds this process's GIL; in a
    # thread beside it, scoring waited for the GIL and slowed the retrieval too. Spawned,
    # not forked: a caller may have threads.
    with ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_scoring_process
    ) as scoring:
        name, alias = settings.model_name, settings.model_alias
        finding = scoring.submit(
            find_model_version, tracking_uri, name=name, alias=alias, version=model_version
        )
        # Queued behind the lookup in the same process, so the model loads while this one
        # still imports Feast, instead of after it has asked for the lookup's answer.
        loading = scoring.submit(
            _load_into_worker,
            tracking_uri,
            name=name,
            alias=alias,
            version=model_version,
            reasons=settings.reasons,
            at=at,
            threshold=settings.decision_threshold,
        )
        result = _score_chunks(
            out, at, finding, loading, scoring, users=users, feast=feast, settings=settings,
            progress=progress, started=started,
        )  # fmt: skip
    result.seconds = time.monotonic() - started
    return result


def _outcome(future: Future[Any]) -> Any:
    """A scoring worker's result; its errors re-raised here, a dead worker a failure."""
    try:
        return future.result()
    except BrokenProcessPool as error:
        raise ScoreFailure(f"the model scoring worker process stopped: {error}") from error


def _score_chunks(
    out: Path,
    at: datetime,
    finding: Future[RegisteredVersion],
    loading: Future[_LoadedInWorker],
    scoring: ProcessPoolExecutor,
    *,
    users: np.ndarray | None,
    feast: FeastSettings | None,
    settings: ScoringSettings,
    progress: TextIO | None,
    started: float,
) -> ScoreResult:
    """List the users, retrieve their chunks here and have the scoring process score them."""
    from core.feast_adapter.services import FeatureServiceError, resolve_service_features

    with feature_store_session(feast) as store:
        found: RegisteredVersion = _outcome(finding)
        result = ScoreResult(
            path=out,
            unscored_path=unscored_path_for(out),
            at=at,
            model_name=found.name,
            model_version=found.version,
        )
        if found.project is not None and found.project != store.project:
            raise ScoreInputError(
                f"model {found.name} version {found.version} was trained on Feast project "
                f"{found.project!r}; this profile's project is {store.project!r}"
            )
        try:
            features = resolve_service_features(store, found.service)
        except FeatureServiceError as error:
            raise ScoreInputError(str(error)) from error
        if sorted(features.names) != sorted(found.features):
            raise ScoreInputError(
                f"feature service {found.service} offers {features.names}; the model needs "
                f"{list(found.features)}"
            )
        if features.request_fields:
            raise ScoreInputError(
                f"feature service {found.service} needs request fields "
                f"{features.request_fields} that batch scoring cannot supply"
            )
        service = store.get_feature_service(found.service)
        clock = time.monotonic()
        try:
            population, window_start = _population(store, features, at)
        except ScoreInputError:
            raise
        except Exception as error:
            raise ScoreFailure(f"reading the offline store failed: {error}") from error
        result.listing_seconds = time.monotonic() - clock
        unscored_rows: list[pd.DataFrame] = []
        if users is None:
            targets = population
        else:
            known = np.isin(users, population)
            targets = users[known]
            if not known.all():
                detail = f"no feature row between {window_start.isoformat()} and {at.isoformat()}"
                absent = users[~known]
                unscored_rows.append(
                    pd.DataFrame({USER_ID: absent, "reason": "no_features", "detail": detail})
                )
                result.unscored["no_features"] = len(absent)
                for user in absent[:20]:
                    _remember(result, int(user), "no_features", detail)
        out.parent.mkdir(parents=True, exist_ok=True)
        temporary = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
        unscored_temporary = result.unscored_path.with_name(
            f".{result.unscored_path.name}.{uuid.uuid4().hex}.tmp"
        )
        tracker = _Progress(len(targets), progress or sys.stderr)
        columns = [USER_ID, *found.features]
        try:
            result.startup_seconds = time.monotonic() - started
            # Up to _CHUNKS_AHEAD retrieved chunks wait in the scoring process while the
            # next is retrieved here: memory stays a few chunks, and neither side idles
            # while the other has work.
            waiting: deque[Future[_ChunkScores]] = deque()
            for begin in range(0, len(targets), settings.chunk_rows):
                clock = time.monotonic()
                frame = _retrieve(
                    store, service, features, targets[begin : begin + settings.chunk_rows], at
                )
                result.retrieval_seconds += time.monotonic() - clock
                waiting.append(scoring.submit(_score_in_worker, frame[columns], str(temporary)))
                del frame
                while len(waiting) > _CHUNKS_AHEAD:
                    _collect(waiting.popleft(), loading, found, result, tracker, unscored_rows)
            while waiting:
                _collect(waiting.popleft(), loading, found, result, tracker, unscored_rows)
            _check_loaded(loading, found, result)
            result.engine_note = _outcome(scoring.submit(_finish_in_worker, str(temporary)))
            _fsync_replace(temporary, out)
            listed = (
                pd.concat(unscored_rows, ignore_index=True)
                if unscored_rows
                else pd.DataFrame({USER_ID: [], "reason": [], "detail": []})
            )
            listed = listed.astype({USER_ID: "int64", "reason": "string", "detail": "string"})
            listed.to_parquet(unscored_temporary, index=False)
            _fsync_replace(unscored_temporary, result.unscored_path)
        finally:
            temporary.unlink(missing_ok=True)
            unscored_temporary.unlink(missing_ok=True)
    return result


def _check_loaded(
    loading: Future[_LoadedInWorker], found: RegisteredVersion, result: ScoreResult
) -> None:
    """The loaded model's notes into ``result``; its load error, or a moved alias, raised.

    Raises:
        ScoreFailure: The alias moved to another version between the lookup the users and
            features were chosen by and the load.
    """
    loaded: _LoadedInWorker = _outcome(loading)
    if loaded.version != found.version:
        raise ScoreFailure(
            f"model {found.name}: version {found.version} was looked up but version "
            f"{loaded.version} loaded (the alias moved during start-up); run again"
        )
    result.model_description = loaded.description
    result.model_load_seconds = loaded.seconds
    result.reasons_note = loaded.reasons_note


def _collect(
    scored: Future[_ChunkScores],
    loading: Future[_LoadedInWorker],
    found: RegisteredVersion,
    result: ScoreResult,
    tracker: _Progress,
    unscored_rows: list[pd.DataFrame],
) -> None:
    """Wait for one chunk's scores and count them (a failed load is raised first)."""
    clock = time.monotonic()
    if not result.model_description:
        _check_loaded(loading, found, result)
    chunk: _ChunkScores = _outcome(scored)
    result.scoring_wait_seconds += time.monotonic() - clock
    result.scoring_seconds += chunk.seconds
    result.scored += chunk.scored
    if len(chunk.unscored):
        unscored_rows.append(chunk.unscored)
        _count_unscored(result, chunk.unscored)
    tracker.advance(chunk.scored + len(chunk.unscored))


def _remember(result: ScoreResult, user: int, reason: str, detail: str) -> None:
    if len(result.unscored_examples) < 20:
        result.unscored_examples.append((user, reason, detail))


@dataclass(frozen=True)
class _LoadedInWorker:
    """What the scoring process reports once its model is ready."""

    version: str
    description: str
    reasons_note: str
    seconds: float


@dataclass(frozen=True)
class _ChunkScores:
    """What the scoring process reports for one chunk it has scored and written."""

    scored: int
    unscored: pd.DataFrame
    seconds: float


@dataclass
class _WorkerState:
    """The scoring process's model and open scores file, between its tasks."""

    scorer: _ChunkScorer
    threshold: float
    writer: Any = None
    schema: Any = None


# The scoring process's own state: ProcessPoolExecutor tasks are plain functions, and this
# process runs one scoring run's tasks, in order, then exits.
_IN_WORKER: dict[str, _WorkerState] = {}


def _start_scoring_process() -> None:
    """(In the scoring process, first) Yield the CPU to the retrieval; exit without teardown.

    The retrieval is the critical path; the scoring process keeps up with it at a lower
    priority. Its interpreter teardown took about 1 s (MLflow, scikit-learn and numba
    imported) after the last chunk, and nothing in it is needed once the scores file is
    closed: registered first, this exit runs after every other exit handler.
    """
    import atexit

    os.nice(5)
    atexit.register(_exit_without_teardown)


def _exit_without_teardown() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _load_into_worker(
    tracking_uri: str,
    *,
    name: str,
    alias: str,
    version: str | None,
    reasons: int,
    at: datetime,
    threshold: float,
) -> _LoadedInWorker:
    """(In the scoring process) Load the model and its explainer; keep them for the chunks."""
    from serving.inference import ForestUnsupported, flatten_forest

    clock = time.monotonic()
    loaded = load_model_version(
        tracking_uri, name=name, alias=alias, version=version, reasons=reasons
    )
    try:
        forest = flatten_forest(loaded.model)
    except ForestUnsupported:
        forest = None  # choose_batch_engine says why at the first chunk
    scorer = _ChunkScorer(
        loaded,
        loaded.explainer,
        reasons=reasons if loaded.explainer is not None else 0,
        reasons_note=loaded.reasons_note,
        at=at,
        forest=forest,
    )
    _IN_WORKER["state"] = _WorkerState(scorer, threshold)
    return _LoadedInWorker(
        version=loaded.version,
        description=describe_model(loaded.model),
        reasons_note=loaded.reasons_note,
        seconds=time.monotonic() - clock,
    )


def _open_scores(temporary: str) -> _WorkerState:
    import pyarrow.parquet as pq

    state = _IN_WORKER.get("state")
    if state is None:
        raise ScoreFailure("the scoring process has no model: its load failed")
    if state.writer is None:
        state.schema = _output_schema(state.scorer.features, state.scorer.reasons)
        state.writer = pq.ParquetWriter(temporary, state.schema)
    return state


def _score_in_worker(frame: pd.DataFrame, temporary: str) -> _ChunkScores:
    """(In the scoring process) Score one chunk and append it to the scores file."""
    clock = time.monotonic()
    state = _open_scores(temporary)
    table, unscored = state.scorer.score(frame, state.threshold, state.schema)
    state.writer.write_table(table)
    return _ChunkScores(len(table), unscored, time.monotonic() - clock)


def _finish_in_worker(temporary: str) -> str:
    """(In the scoring process) Close the scores file; the engine the chunks were scored by."""
    state = _open_scores(temporary)  # no chunks: the file still gets its schema
    state.writer.close()
    _IN_WORKER.clear()
    return state.scorer.engine_note


def _count_unscored(result: ScoreResult, unscored: pd.DataFrame) -> None:
    for row in unscored.head(20).itertuples():
        _remember(result, int(row.user_id), str(row.reason), str(row.detail))
    for reason, count in unscored["reason"].value_counts().items():
        result.unscored[str(reason)] = result.unscored.get(str(reason), 0) + int(count)


def describe_model(model: Any) -> str:
    """The estimator's class and, for tree ensembles, how many trees it adds up."""
    trees = getattr(model, "n_iter_", None) or getattr(model, "n_estimators_", None)
    return type(model).__name__ + (f", {int(trees)} trees" if trees else "")


class _ChunkScorer:
    """Scores and reasons of retrieved chunks, with the engine chosen on the first rows."""

    def __init__(
        self,
        loaded: LoadedModel,
        explainer: TreeExplainer | None,
        *,
        reasons: int,
        reasons_note: str,
        at: datetime,
        forest: FlatForest | None,
    ):
        self._loaded = loaded
        self._explainer = explainer
        self.reasons = reasons
        self.reasons_note = reasons_note
        self._at = pd.Timestamp(at)
        self._forest = forest
        self._predictor: Predictor | None = None
        self.engine_note = ""
        self.load_seconds = 0.0

    @property
    def model(self) -> Any:
        """The loaded estimator."""
        return self._loaded.model

    @property
    def features(self) -> tuple[str, ...]:
        """The model's features, in its column order."""
        return self._loaded.features

    def _predict(self, matrix: np.ndarray) -> np.ndarray:
        if self._predictor is None:
            from serving.inference import choose_batch_engine

            choice = choose_batch_engine(
                self._loaded.model,
                _FramePredictor(self._loaded.model, self._loaded.features),
                matrix[:_ENGINE_CHECK_ROWS],
                forest=self._forest,
            )
            self._predictor = choice.predictor
            self.engine_note = f"engine: {choice.reason}"
        return self._predictor.predict(matrix)

    def score(
        self, frame: pd.DataFrame, threshold: float, schema: pa.Schema
    ) -> tuple[pa.Table, pd.DataFrame]:
        """Scores of the complete rows (in ``schema``) and the list of incomplete ones."""
        import pyarrow as pa

        names = list(self._loaded.features)
        values = frame[names].astype("float64")
        complete = values.notna().all(axis=1).to_numpy()
        missing = values.loc[~complete].isna()
        unscored = pd.DataFrame(
            {
                USER_ID: frame.loc[~complete, USER_ID].to_numpy(dtype=np.int64),
                "reason": "missing_features",
                "detail": [
                    "null at --at: " + ", ".join(np.asarray(names)[row])
                    for row in missing.to_numpy()
                ],
            }
        )
        matrix = np.ascontiguousarray(values.to_numpy()[complete])
        probability = self._predict(matrix) if len(matrix) else np.empty(0)
        rows = len(probability)
        # Arrow arrays straight from numpy: pandas' object columns of repeated strings cost
        # 50-80 ms a chunk to convert, on the thread the retrieval needs.
        columns: dict[str, Any] = {
            USER_ID: pa.array(frame.loc[complete, USER_ID].to_numpy(dtype=np.int64)),
            "churn_probability": pa.array(probability.astype(np.float64)),
            "churn_predicted": pa.array(probability >= threshold),
            "model_name": pa.repeat(pa.scalar(self._loaded.name, pa.string()), rows),
            "model_version": pa.repeat(pa.scalar(self._loaded.version, pa.string()), rows),
            "scored_at": pa.repeat(pa.scalar(self._at, pa.timestamp("us", tz="UTC")), rows),
        }
        if self._explainer is not None and self.reasons:
            from core.explain import top_reasons

            contributions = self._explainer.contributions(matrix)
            order, picked, effects = top_reasons(matrix, contributions, count=self.reasons)
            feature_names = pa.array(names, pa.string())
            for rank in range(order.shape[1]):
                columns[f"reason_{rank + 1}_feature"] = feature_names.take(order[:, rank])
                columns[f"reason_{rank + 1}_value"] = pa.array(picked[:, rank])
                columns[f"reason_{rank + 1}_contribution"] = pa.array(effects[:, rank])
        return pa.table(columns).cast(schema), unscored


class _FramePredictor:
    """``predict_proba`` on a DataFrame with the training columns (the reference engine)."""

    engine: EngineName = "sklearn"

    def __init__(self, model: Any, features: tuple[str, ...]):
        self._model = model
        self._features = list(features)
        self._positive = list(model.classes_).index(1)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        frame = pd.DataFrame(matrix, columns=self._features)
        return np.asarray(self._model.predict_proba(frame)[:, self._positive], dtype=np.float64)


def _summary(result: ScoreResult) -> str:
    missing = sum(result.unscored.values())
    reasons = ", ".join(f"{kind} {count:,}" for kind, count in sorted(result.unscored.items()))
    rate = (result.scored + missing) / result.seconds if result.seconds else 0.0
    lines = [
        f"scored {result.scored:,} users at {result.at.isoformat()} with {result.model_name} "
        f"version {result.model_version} -> {result.path}",
        f"not scored: {missing:,}" + (f" ({reasons}) -> {result.unscored_path}" if missing else ""),
        f"{result.seconds:.1f} s, {rate:,.0f} users/s (offline retrieval "
        f"{result.retrieval_seconds:.1f} s; scoring and reasons {result.scoring_seconds:.1f} s "
        f"in the scoring process, waited for {result.scoring_wait_seconds:.1f} s)",
        f"start-up {result.startup_seconds:.1f} s to the first retrieval (users listed in "
        f"{result.listing_seconds:.1f} s; model loaded and prepared in the scoring process "
        f"in {result.model_load_seconds:.1f} s)",
        f"model: {result.model_description}"
        + (f"; {result.engine_note}" if result.engine_note else ""),
    ]
    lines += [
        f"  user {user}: {reason} ({detail})"
        for user, reason, detail in result.unscored_examples[:10]
    ]
    if result.reasons_note:
        lines.append(result.reasons_note)
    return "\n".join(lines)


def score_command(
    out: Annotated[
        Path | None,
        typer.Option(help="Output Parquet. Default: $CHURN_DATA_DIR/scores/scores-<at>.parquet."),
    ] = None,
    at: Annotated[
        str | None, typer.Option(help="Point in time (ISO, UTC when naive). Default: now.")
    ] = None,
    users: Annotated[
        Path | None,
        typer.Option(
            help="Only these users: Parquet/CSV with a user_id column, or one id per line. "
            "Default: every user with features at --at."
        ),
    ] = None,
    model_version: Annotated[
        str | None, typer.Option(help="Registered version to use. Default: the champion.")
    ] = None,
    reasons: Annotated[
        int | None, typer.Option(min=0, help="Top reasons per user (0: none). Default: 3.")
    ] = None,
    chunk_rows: Annotated[
        int | None, typer.Option(min=1, help="Users per offline retrieval. Default: 100000.")
    ] = None,
    show: Annotated[
        int, typer.Option(min=0, help="Print the N users most at risk with their reasons.")
    ] = 0,
    profile: ProfileOption = None,
) -> None:
    """Score every user (or a list) at one point in time from the offline store, with reasons."""
    os.environ.setdefault(
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"
    )  # keep stderr for progress
    overrides: dict[str, Any] = {}
    if reasons is not None:
        overrides["reasons"] = reasons
    if chunk_rows is not None:
        overrides["chunk_rows"] = chunk_rows
    with exit_on_error():
        moment = parse_at(at)
        user_ids = read_users_file(users) if users is not None else None
        data = DataSettings()
        path = out or data.data_dir / "scores" / f"scores-{moment:%Y%m%dT%H%M%SZ}.parquet"
        result = score_users(
            out=path,
            at=moment,
            users=user_ids,
            model_version=model_version,
            feast=profile_settings(profile),
            data=data,
            settings=ScoringSettings(**overrides),
        )
    typer.echo(_summary(result))
    if show:
        typer.echo(most_at_risk(result.path, count=show))


def most_at_risk(path: Path, *, count: int) -> str:
    """The ``count`` highest churn probabilities of a scores file, with their reasons."""
    scores = pd.read_parquet(path)
    top = scores.nlargest(count, "churn_probability")
    ranks = sorted(int(c.split("_")[1]) for c in scores.columns if c.endswith("_feature"))
    lines = [f"{len(top)} users most at risk:"]
    for row in top.itertuples(index=False):
        values = row._asdict()
        reasons = "; ".join(
            f"{values[f'reason_{k}_feature']}={values[f'reason_{k}_value']:.3g} "
            f"({values[f'reason_{k}_contribution']:+.3f})"
            for k in ranks
        )
        lines.append(
            f"  user {values[USER_ID]}: {values['churn_probability']:.3f}"
            + (f"  because {reasons}" if reasons else "")
        )
    return "\n".join(lines)
