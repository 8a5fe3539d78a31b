"""The prediction service: micro-batched lookups and predictions, and model hot reload.

Concurrent requests are gathered into one online lookup and one ``predict_proba`` call:
a single task takes every request waiting in the queue (without waiting for more, so a lone
request is not delayed), reads their features in one Redis round trip, scores them in one
call in a worker thread, and answers each. The model, its feature plan and its predictor
are one immutable object swapped by a single assignment; a batch takes it once, so no
request is ever served by a mix of two versions or by a half-loaded one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol, cast

import numpy as np

from core.errors import ModelRefused, OnlineStoreUnavailable
from core.explain import Reason
from core.models import ModelVersion
from serving.errors import NO_MODEL_RETRY_AFTER_S, ServingError
from serving.features import FeatureServiceError, OnlineFeatures, RowProblem
from serving.features.rows import apply_missing_policy
from serving.heap import refreeze_heap
from serving.inference import limit_native_threads, native_threads, observed_native_threads
from serving.metrics import ServingMetrics
from serving.model import ServingModel, build_serving_model, model_lineage
from serving.prediction_log import LogChunk, PredictionLog
from serving.settings import ServingSettings

logger = logging.getLogger(__name__)

# A job that waited this long is checked for a gone client before it is scored; fresher
# ones are not (the check costs a receive() per job, and such a client rarely left).
_CHECK_CLIENT_AFTER_S = 0.002
# Micro-batches up to this size are scored by the flat forest on the event loop: about
# 0.05 ms for one row and 0.15 ms for eight (345 trees), less than a round trip to the
# inference thread and its wake-up. Larger ones, and sklearn, go to that thread.
_INLINE_ROWS = 8
# Store outages are logged at most this often (each failed batch would log otherwise).
_LOG_EVERY_S = 10.0


class ModelSource(Protocol):
    """Where model versions come from (the MLflow registry in production)."""

    name: str
    alias: str

    def current_version(self) -> ModelVersion | None:
        """The version behind the alias, or None."""
        ...

    def load(self, info: ModelVersion) -> object:
        """The fitted sklearn model of a version."""
        ...

    def check_rows(self, info: ModelVersion) -> np.ndarray | None:
        """The training run's test rows in model column order, or None."""
        ...


@dataclass(frozen=True)
class Prediction:
    """One scored user."""

    request_id: str
    user_id: int
    churn_probability: float
    churn_predicted: bool
    model_version: str
    # Only when explain was asked: every feature, largest effect first (empty when the
    # model family cannot be explained), and the base value they start from (log-odds).
    reasons: tuple[Reason, ...] | None = None
    base_value: float | None = None
    missing_features: tuple[str, ...] = ()  # scored as the missing-value policy says


@dataclass(frozen=True)
class ReloadOutcome:
    """What a reload did: loaded, unchanged, refused, no_model or failed."""

    outcome: Literal["loaded", "unchanged", "refused", "no_model", "failed"]
    model_version: str | None
    previous_version: str | None
    detail: str


@dataclass(frozen=True)
class Readiness:
    """Whether the service can answer predictions, and why not."""

    ready: bool
    model_loaded: bool
    model_version: str | None
    online_store: str
    backlog_rows: int
    detail: str | None


ClientGone = Callable[[], Awaitable[bool]]


@dataclass
class _Job:
    user_ids: Sequence[int]
    request_time: datetime
    future: asyncio.Future[list[Prediction | RowProblem]]
    queued_at: float  # loop time
    deadline: float  # loop time
    client_gone: ClientGone | None
    explain: bool = False


class PredictionService:
    """Scores users with the current model; keeps the model current.

    Args:
        settings: Service settings (micro-batch size, poll interval, limits).
        threshold: A user is predicted to churn when the probability is at least this.
        online: Online feature reader.
        source: Where the served model version comes from.
        log: The prediction log.
        metrics: The app's metrics.
    """

    def __init__(
        self,
        *,
        settings: ServingSettings,
        threshold: float,
        online: OnlineFeatures,
        source: ModelSource,
        log: PredictionLog,
        metrics: ServingMetrics,
    ):
        self.settings = settings
        self.threshold = threshold
        self.online = online
        self.source = source
        self.log = log
        self.metrics = metrics
        self._model: ServingModel | None = None
        self._problem: str | None = "no model loaded yet"
        self._refused_version: str | None = None
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._queued_rows = 0
        self._reload_lock = asyncio.Lock()
        # Held by the micro-batcher while it scores a batch (so by nothing between batches).
        self._batch_lock = asyncio.Lock()
        # One thread for inference: batches are scored one after the other anyway, and a
        # dedicated thread keeps model loads (default pool) from queueing behind. Its native
        # thread pools are limited inside it: OpenMP's thread count is per calling thread.
        self._predict_executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="predict",
            initializer=limit_native_threads,
            initargs=(settings.inference_threads,),
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._last_logged: dict[str, float] = {}

    @property
    def model(self) -> ServingModel | None:
        """The model being served (None before the first successful load)."""
        return self._model

    async def start(self) -> None:
        """Load the current model (a failure leaves the service up, not ready) and start."""
        outcome = await self.reload()
        if outcome.outcome != "loaded":
            logger.error("no model served at start-up: %s", outcome.detail)
        self._tasks.append(asyncio.create_task(self._batch_loop(), name="micro-batcher"))
        if self.settings.poll_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._poll_loop(), name="model-poller"))

    async def stop(self) -> None:
        """Stop the background tasks and the prediction thread."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._predict_executor.shutdown(wait=True)

    @property
    def backlog_rows(self) -> int:
        """Rows waiting to be scored."""
        return self._queued_rows

    async def predict(
        self,
        user_ids: Sequence[int],
        *,
        client_gone: ClientGone | None = None,
        explain: bool = False,
    ) -> list[Prediction | RowProblem]:
        """Score users at the current time; one result (or row problem) per user.

        Args:
            user_ids: Users to score.
            client_gone: Tells whether the caller has disconnected; a request whose caller
                has gone is dropped before it is scored.
            explain: Each prediction also carries its reasons (per-feature contributions).

        Raises:
            ServingError: No model, the queue is full, the deadline passed, or the online
                store is unavailable (whole request).
        """
        if self._model is None:
            raise self._no_model_error()
        if self._queued_rows + len(user_ids) > self.settings.max_queue_rows:
            self.metrics.errors.labels(kind="overloaded").inc()
            raise ServingError(
                "overloaded",
                f"the service has {self._queued_rows} rows waiting, at its limit of "
                f"{self.settings.max_queue_rows}: retry shortly",
                retry_after_s=1,
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Prediction | RowProblem]] = loop.create_future()
        now = loop.time()
        deadline = now + self.settings.request_deadline_s
        self._queued_rows += len(user_ids)
        self._queue.put_nowait(
            _Job(user_ids, datetime.now(UTC), future, now, deadline, client_gone, explain)
        )
        # A timer on the loop rather than asyncio.timeout: one handle, no task bookkeeping.
        expiry = loop.call_at(deadline, self._expire, future)
        try:
            return await future
        finally:
            expiry.cancel()

    def _expire(self, future: asyncio.Future[list[Prediction | RowProblem]]) -> None:
        """Fail a request still waiting at its deadline; the batcher then skips it."""
        if future.done():
            return
        self.metrics.errors.labels(kind="deadline_exceeded").inc()
        future.set_exception(
            ServingError(
                "deadline_exceeded",
                f"no answer within the {self.settings.request_deadline_s:g} s deadline",
                retry_after_s=1,
            )
        )

    async def inference_threads_seen(self) -> int:
        """The native thread count the inference thread itself sees (proof of the limit)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._predict_executor, observed_native_threads)

    async def readiness(self) -> Readiness:
        """Ready when a model is loaded, the online store answers and the backlog is short."""
        model = self._model
        store_problem = await self.online.ping()
        backlog = self._queued_rows
        limit = self.settings.resolved_ready_backlog_rows()
        problems = []
        if model is None:
            problems.append(self._problem or "no model loaded")
        if store_problem:
            problems.append(f"online store {store_problem}")
        if backlog > limit:
            problems.append(f"backlog of {backlog} rows is over the limit of {limit}")
        return Readiness(
            ready=not problems,
            model_loaded=model is not None,
            model_version=model.version if model else None,
            online_store="ok" if store_problem is None else store_problem,
            backlog_rows=backlog,
            detail="; ".join(problems) or None,
        )

    async def reload(self, *, force: bool = False) -> ReloadOutcome:
        """Serve the version behind the alias if it changed (or always, with ``force``).

        A version that cannot be served is refused and the current model stays; a refused
        version is not retried by polling until the alias moves (``force`` retries it).
        """
        async with self._reload_lock:
            # Only the version: a reference to the model would keep it alive through the
            # swap, and the heap frozen below would keep its cycles for ever.
            previous = self._model.version if self._model else None
            try:
                info = await asyncio.to_thread(self.source.current_version)
            except Exception:
                logger.exception("reading the model registry failed")
                return self._reload_done(
                    "failed", previous, previous, "the model registry could not be read"
                )
            if info is None:
                detail = f"no version of {self.source.name!r} has alias {self.source.alias!r}"
                return self._reload_done("no_model", previous, previous, detail)
            if not force and (info.version == previous or info.version == self._refused_version):
                return ReloadOutcome("unchanged", previous, previous, "alias has not moved")
            try:
                model = await asyncio.to_thread(self._load, info)
            except (ModelRefused, FeatureServiceError) as error:
                self._refused_version = info.version
                detail = f"{info.name} version {info.version} refused: {error}"
                return self._reload_done("refused", previous, previous, detail)
            except Exception:
                logger.exception("loading %s version %s failed", info.name, info.version)
                detail = f"{info.name} version {info.version} failed to load (see the log)"
                return self._reload_done("failed", previous, previous, detail)
            self._model = model  # the swap: one assignment, seen whole by the next batch
            self._refused_version = None
            async with self._batch_lock:  # between batches: one in flight holds the old model
                pause_ms = refreeze_heap()
            self._problem = None
            self.metrics.set_model(model.name, model.version)
            path = (
                "direct Redis"
                if model.plan.fast_path
                else f"Feast SDK ({model.plan.fast_path_gap})"
            )
            detail = (
                f"serving {model.name} version {model.version} with feature service "
                f"{model.plan.service_name} via {path}, inference engine "
                f"{model.predictor.engine}"
            )
            logger.info("%s (%s; heap re-frozen in %.0f ms)", detail, model.engine.reason, pause_ms)
            return self._reload_done("loaded", model.version, previous, detail)

    def _reload_done(
        self,
        outcome: Literal["loaded", "refused", "no_model", "failed"],
        version: str | None,
        previous: str | None,
        detail: str,
    ) -> ReloadOutcome:
        self.metrics.reloads.labels(outcome=outcome).inc()
        if outcome != "loaded":
            logger.warning("model reload: %s", detail)
            if self._model is None:
                self._problem = detail
        return ReloadOutcome(outcome, version, previous, detail)

    def _load(self, info: ModelVersion) -> ServingModel:
        """Resolve the version's feature service, load and check the model (blocking)."""
        lineage = model_lineage(info)
        plan = self.online.resolve(
            service_name=lineage.feature_service,
            features=lineage.features,
            project=lineage.project,
        )
        threads = self.settings.inference_threads
        with native_threads(threads):
            model = self.source.load(info)
        check_rows = self.source.check_rows(info)
        if check_rows is None:
            logger.warning(
                "%s version %s: its run logged no check rows; inference engines are "
                "compared on split-threshold probes only",
                info.name,
                info.version,
            )
        return build_serving_model(info, model, plan, check_rows=check_rows, threads=threads)

    def _no_model_error(self) -> ServingError:
        self.metrics.errors.labels(kind="no_model").inc()
        return ServingError(
            "no_model",
            f"no model is being served: {self._problem}",
            retry_after_s=NO_MODEL_RETRY_AFTER_S,
        )

    def _log_rarely(self, key: str, message: str, *args: object) -> None:
        """Log a recurring failure at most every ``_LOG_EVERY_S`` seconds."""
        now = time.monotonic()
        if now - self._last_logged.get(key, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._last_logged[key] = now
            logger.warning(message, *args)

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            try:
                await self.reload()
            except Exception:  # never let the poller die
                logger.exception("model poll failed")

    async def _batch_loop(self) -> None:
        limit = self.settings.max_micro_batch
        while True:
            jobs = [await self._queue.get()]
            rows = len(jobs[0].user_ids)
            while rows < limit and not self._queue.empty():
                job = self._queue.get_nowait()
                jobs.append(job)
                rows += len(job.user_ids)
            self._queued_rows -= rows
            self.metrics.backlog.set(self._queued_rows)
            live = await self._live(jobs)
            if live:
                async with self._batch_lock:
                    await self._score_isolated(live)

    async def _live(self, jobs: list[_Job]) -> list[_Job]:
        """The jobs still worth scoring: not past their deadline, their client still there."""
        now = asyncio.get_running_loop().time()
        live = []
        for job in jobs:
            if job.future.done():  # its deadline passed while it waited
                continue
            if (
                job.client_gone is not None
                and now - job.queued_at >= _CHECK_CLIENT_AFTER_S
                and await job.client_gone()
            ):
                self.metrics.errors.labels(kind="client_gone").inc()
                job.future.cancel()
                continue
            live.append(job)
        return live

    async def _score_isolated(self, jobs: list[_Job]) -> None:
        """Score a micro-batch; if that fails unexpectedly, each request on its own."""
        try:
            await self._score(jobs)
        except Exception:
            if len(jobs) > 1:
                logger.exception("scoring a micro-batch failed: scoring its requests one by one")
                for job in jobs:
                    await self._score_isolated([job])
                return
            logger.exception("scoring a request failed")
            self.metrics.errors.labels(kind="internal_error").inc()
            self._fail(
                jobs,
                ServingError("internal_error", "the prediction failed (see the service log)"),
            )

    async def _score(self, jobs: list[_Job]) -> None:
        model = self._model
        if model is None:
            self._fail(jobs, self._no_model_error())  # counted once per batch: rare
            return
        user_ids = [user_id for job in jobs for user_id in job.user_ids]
        times = [job.request_time for job in jobs for _ in job.user_ids]
        self.metrics.micro_batch.observe(len(user_ids))
        try:
            rows = await self.online.read(model.plan, user_ids, times)
        except OnlineStoreUnavailable as error:
            self._log_rarely("store", "online store unavailable: %s", error.__cause__ or error)
            self.metrics.errors.labels(kind="store_unavailable").inc(len(jobs))
            # The core error's message is written for callers (no host, no path).
            self._fail(jobs, ServingError("store_unavailable", str(error), retry_after_s=1))
            return
        # The missing-value policy (core.missing_values), as churn score applies it.
        checked = apply_missing_policy(model.missing, rows, user_ids)
        for problem in checked.problems:
            if problem is not None:
                self.metrics.errors.labels(kind=problem.kind).inc()
        # Every row either has a problem or gets a prediction below.
        results: list[Prediction | RowProblem | None] = list(checked.problems)
        scorable, model_rows = checked.scorable, checked.matrix
        if checked.missing:
            self.metrics.missing_values.labels(model.missing.policy).inc(len(checked.missing))
        if scorable:
            matrix = model_rows[scorable]
            if model.predictor.engine == "flat_forest" and len(scorable) <= _INLINE_ROWS:
                # A few rows through numpy arrays cost less than the hop to a thread.
                probabilities = model.predictor.predict(matrix)
            else:
                probabilities = await asyncio.get_running_loop().run_in_executor(
                    self._predict_executor, model.predictor.predict, matrix
                )
            predicted = probabilities >= self.threshold
            request_ids = [uuid.uuid4().hex for _ in scorable]
            for position, index in enumerate(scorable):
                probability = float(probabilities[position])
                results[index] = Prediction(
                    request_id=request_ids[position],
                    user_id=user_ids[index],
                    churn_probability=probability,
                    churn_predicted=bool(predicted[position]),
                    model_version=model.version,
                    missing_features=checked.missing.get(index, ()),
                )
                self.metrics.scores.observe(probability)
            # Log only what reaches a caller: a request cancelled meanwhile (deadline,
            # shutdown) gets no prediction, so none is recorded for it.
            answered = np.zeros(len(user_ids), dtype=bool)
            offset = 0
            for job in jobs:
                count = len(job.user_ids)
                answered[offset : offset + count] = not job.future.done()
                offset += count
            kept = answered[scorable]
            if kept.any():
                self.log.append(
                    LogChunk(
                        request_ids=[
                            rid for rid, keep in zip(request_ids, kept, strict=True) if keep
                        ],
                        user_ids=np.array([user_ids[i] for i in scorable], dtype=np.int64)[kept],
                        timestamps=np.array(
                            [times[i].replace(tzinfo=None) for i in scorable],
                            dtype="datetime64[ns]",
                        )[kept],
                        model_name=model.name,
                        model_version=model.version,
                        probabilities=probabilities[kept],
                        predicted=predicted[kept],
                        features=model.features,
                        # As read: a missing value stays missing (NaN) in the log.
                        matrix=rows.matrix[scorable][kept],
                    )
                )
            if any(job.explain for job in jobs):
                await self._explain(jobs, model, results, model_rows)
        offset = 0
        for job in jobs:
            count = len(job.user_ids)
            if not job.future.done():  # the deadline may have passed meanwhile
                job.future.set_result(
                    cast(list[Prediction | RowProblem], results[offset : offset + count])
                )
            offset += count

    async def _explain(
        self,
        jobs: list[_Job],
        model: ServingModel,
        results: list[Prediction | RowProblem | None],
        matrix: np.ndarray,
    ) -> None:
        """Attach reasons to the predictions of the jobs that asked (off the event loop)."""
        wanted: list[int] = []
        offset = 0
        for job in jobs:
            if job.explain:
                wanted.extend(
                    index
                    for index in range(offset, offset + len(job.user_ids))
                    if isinstance(results[index], Prediction)
                )
            offset += len(job.user_ids)
        if not wanted:
            return
        explainer = model.explainer
        if explainer is None:
            for index in wanted:
                results[index] = dataclasses.replace(cast(Prediction, results[index]), reasons=())
            return
        contributions = await asyncio.get_running_loop().run_in_executor(
            self._predict_executor, explainer.contributions, matrix[wanted]
        )
        for row, index in enumerate(wanted):
            values, effects = matrix[index], contributions[row]
            order = np.argsort(-np.abs(effects), kind="stable")
            reasons = tuple(
                Reason(
                    model.features[j],
                    None if np.isnan(values[j]) else float(values[j]),
                    float(effects[j]),
                )
                for j in order
            )
            results[index] = dataclasses.replace(
                cast(Prediction, results[index]),
                reasons=reasons,
                base_value=explainer.base_value,
            )

    @staticmethod
    def _fail(jobs: list[_Job], error: ServingError) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(error)


def problem_error(problem: RowProblem) -> ServingError:
    """The HTTP error of a single-user row problem (404: nothing to predict from)."""
    return ServingError(problem.kind, problem.detail)
