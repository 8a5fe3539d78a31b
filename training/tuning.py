"""Hyper-parameter search with Optuna: in one process, or in N worker processes on one study.

The study maximises validation ROC AUC with a seeded TPE sampler (trial ``i`` of worker
``w`` draws from seed ``seed + w``: one worker with the same seed and data proposes the same
parameters) and a median pruner fed by the staged fits of ``training.models``.

Storage: in memory for one local process; a journal file when ``--workers N`` runs without
``--storage``; any Optuna storage URL otherwise (PostgreSQL lets workers on other machines
join the same study with ``churn train --tune-only``). Each worker fits with ``threads``
OpenMP threads (default 1): parallelism comes from the workers, and OpenMP threads fighting
for shared cores made HistGradientBoosting 10x slower in our measurements.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import queue as queue_module
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import sqlalchemy as sa
from optuna.exceptions import StorageInternalError
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from core.errors import ChurnError, InputError
from training.config import ModelFamily
from training.models import evaluate, fit_in_stages, limit_threads, suggest_params

_POLL_SECONDS = 0.5
_START_TIMEOUT_SECONDS = 600  # how long workers wait for each other at the start barrier
# What a database storage raises while it is away (a PostgreSQL restart).
_STORAGE_ERRORS: tuple[type[BaseException], ...] = (StorageInternalError, OperationalError)


@dataclass(frozen=True)
class StudySpec:
    """Which study to run and how."""

    study_name: str
    family: ModelFamily
    seed: int
    trials: int
    timeout: float | None
    storage: str | None = None  # Optuna storage URL; None: in memory (or a journal file)
    threads: int = 1  # OpenMP threads per worker process
    # How long a worker waits for an unreachable database storage (a PostgreSQL restart)
    # before it gives up with a clear message; it resumes its remaining trials when the
    # database answers again.
    storage_retry_seconds: float = 120.0


@dataclass(frozen=True)
class TuningData:
    """Training and validation rows for the objective."""

    x_train: pd.DataFrame
    y_train: pd.Series
    x_val: pd.DataFrame
    y_val: pd.Series


def normalize_storage_url(url: str) -> str:
    """Use psycopg 3 for ``postgresql://`` URLs (psycopg2 is not installed)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def redact_storage_url(url: str | None) -> str:
    """The storage URL without its password, for logs and run params."""
    if not url:
        return "in-memory"
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _storage(url: str | None) -> Any:
    """The Optuna storage of a URL (None: in memory; ``journal:<path>``: a journal file).

    Raises:
        InputError: The URL is malformed or the database cannot be reached.
    """
    if url is None:
        return None
    if url.startswith("journal:"):
        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    try:
        # pool_pre_ping: after a database restart, pooled connections are dead; test each
        # one before use so the next call reconnects instead of failing.
        return optuna.storages.RDBStorage(
            normalize_storage_url(url), engine_kwargs={"pool_pre_ping": True}
        )
    except (ArgumentError, SQLAlchemyError, ImportError, ValueError) as error:
        raise InputError(
            f"cannot open Optuna storage {redact_storage_url(url)}: {error}"
        ) from error


def open_study(spec: StudySpec, *, worker: int = 0, storage: Any = None) -> optuna.Study:
    """Create the study, or join it when it exists in the storage.

    Args:
        spec: The study.
        worker: Worker index; offsets the sampler seed so workers explore differently.
        storage: An Optuna storage object (None: in memory).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=spec.study_name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=spec.seed + worker),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
        load_if_exists=True,
    )


def make_objective(data: TuningData, spec: StudySpec, *, worker: int = 0) -> Any:
    """The Optuna objective: validation ROC AUC of one staged, prunable fit."""

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial, spec.family)
        trial.set_user_attr("worker", worker)

        def report(stage: int, auc: float) -> None:
            trial.report(auc, stage)
            if trial.should_prune():
                raise optuna.TrialPruned(f"stage {stage}: validation AUC {auc:.4f}")

        with limit_threads(spec.threads):
            model, auc = fit_in_stages(
                spec.family,
                params,
                seed=spec.seed,
                train=(data.x_train, data.y_train),
                val=(data.x_val, data.y_val),
                report=report,
            )
            metrics = evaluate(model, data.x_val, data.y_val)
        trial.set_user_attr("val_pr_auc", metrics["pr_auc"])
        trial.set_user_attr("val_brier", metrics["brier"])
        return auc

    return objective


class TrialProgress:
    """A rich progress bar of finished trials and the best validation AUC (on stderr)."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self._progress: Any = None
        if not enabled:
            return
        self._progress = Progress(
            TextColumn("tuning"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("trials  best val AUC {task.fields[best]}  pruned {task.fields[pruned]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self._task = self._progress.add_task("tuning", total=total, best="-", pruned=0)

    def __enter__(self) -> TrialProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, study: optuna.Study, *, offset: int = 0) -> None:
        """Show the study's state; ``offset`` trials existed before this run."""
        if self._progress is None:
            return
        complete, pruned = count_trials(study)
        best = f"{study.best_value:.4f}" if complete else "-"
        self._progress.update(
            self._task, completed=complete + pruned - offset, best=best, pruned=pruned
        )


def count_trials(study: optuna.Study) -> tuple[int, int]:
    """Complete and pruned trials of the study."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    complete = sum(trial.state == TrialState.COMPLETE for trial in trials)
    return complete, len(trials) - complete


def tune(
    data: TuningData, spec: StudySpec, *, workers: int = 1, progress: bool = False
) -> optuna.Study:
    """Run ``spec.trials`` trials (split over the workers); return the study, in memory.

    A study in a shared storage is copied into memory at the end and its connections are
    closed, so the caller holds no database handles.

    Raises:
        InputError: The storage cannot be used, or a worker failed.
    """
    with tempfile.TemporaryDirectory(prefix="churn-tune-") as folder:
        if spec.storage is None and workers > 1:
            # Processes cannot share memory: they share a journal file in the folder.
            spec = replace(spec, storage=f"journal:{folder}/study.log")
        storage = _storage(spec.storage)
        try:
            study = open_study(spec, storage=storage)  # created here; workers only join it
            if workers == 1:
                _tune_here(study, data, spec, progress=progress, storage=storage)
            else:
                _tune_in_workers(
                    study, data, spec, workers=workers, folder=Path(folder), progress=progress
                )
            return study if storage is None else _copy_to_memory(study, storage)
        finally:
            _close(storage)


def _tune_here(
    study: optuna.Study, data: TuningData, spec: StudySpec, *, progress: bool, storage: Any
) -> None:
    offset = sum(count_trials(study))
    with TrialProgress(spec.trials, enabled=progress) as bar:
        bar.update(study, offset=offset)
        optimize_resuming(
            study,
            make_objective(data, spec),
            spec,
            trials=spec.trials,
            storage=storage,
            callbacks=[lambda s, _: bar.update(s, offset=offset)],
        )


def _storage_failure(error: BaseException) -> BaseException | None:
    """The storage error behind ``error`` (Optuna may raise another error while handling
    it, e.g. an UnboundLocalError from its own trial bookkeeping), or None."""
    kinds = _STORAGE_ERRORS
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, kinds):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _wait_for_storage(storage: Any, deadline: float) -> bool:
    """Poll a database storage until it answers (True) or the deadline passes (False)."""
    while time.monotonic() < deadline:
        try:
            with storage.engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.SQLAlchemyError:
            time.sleep(1.0)
    return False


def optimize_resuming(
    study: optuna.Study,
    objective: Any,
    spec: StudySpec,
    *,
    trials: int,
    storage: Any,
    callbacks: list[Any] | None = None,
    worker: int = 0,
) -> int:
    """``study.optimize`` that survives a database storage going away for a while.

    When the storage fails (a PostgreSQL restart), the worker waits up to
    ``spec.storage_retry_seconds`` for it to answer again, then runs its remaining trials
    (the interrupted trial is left unfinished in the study and not counted). Returns the
    trials this call finished.

    Raises:
        InputError: The storage stayed unreachable for the whole wait.
    """
    finished = 0

    def count(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal finished
        finished += 1

    started = time.monotonic()
    while finished < trials:
        remaining_time = (
            None if spec.timeout is None else spec.timeout - (time.monotonic() - started)
        )
        if remaining_time is not None and remaining_time <= 0:
            break
        try:
            study.optimize(
                objective,
                n_trials=trials - finished,
                timeout=remaining_time,
                callbacks=[count, *(callbacks or [])],
            )
            break
        except Exception as raised:
            error = _storage_failure(raised)
            if error is None or getattr(storage, "engine", None) is None:
                raise  # not a database storage failure
            text = str(error.__cause__ or error).strip()
            first_line = text.splitlines()[0] if text else type(error).__name__
            logging.getLogger(__name__).warning(
                "worker %d: Optuna storage unreachable (%s); waiting up to %g s to resume",
                worker,
                first_line,
                spec.storage_retry_seconds,
            )
            if not _wait_for_storage(storage, time.monotonic() + spec.storage_retry_seconds):
                raise InputError(
                    f"worker {worker}: Optuna storage {redact_storage_url(spec.storage)} "
                    f"unreachable for {spec.storage_retry_seconds:g} s during tuning "
                    f"({first_line}); {finished} of this worker's {trials} trials finished. "
                    f"Re-run with --study-name {spec.study_name} to continue the study"
                ) from error
            logging.getLogger(__name__).warning(
                "worker %d: Optuna storage answers again; resuming %d trial(s)",
                worker,
                trials - finished,
            )
    return finished


def _copy_to_memory(study: optuna.Study, storage: Any) -> optuna.Study:
    memory = optuna.storages.InMemoryStorage()
    optuna.copy_study(from_study_name=study.study_name, from_storage=storage, to_storage=memory)
    return optuna.load_study(study_name=study.study_name, storage=memory)


def _close(storage: Any) -> None:
    """Close the connection pool of a database storage (a no-op for other storages)."""
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


def _tune_in_workers(
    study: optuna.Study,
    data: TuningData,
    spec: StudySpec,
    *,
    workers: int,
    folder: Path,
    progress: bool,
) -> None:
    """Start ``workers`` processes on the shared study and follow their progress."""
    offset = sum(count_trials(study))
    data_path = folder / "tuning.parquet"
    _write_tuning_data(data, data_path)
    context = multiprocessing.get_context("spawn")  # no forked copies of open DB handles
    shares = [spec.trials // workers + (index < spec.trials % workers) for index in range(workers)]
    active = [index for index in range(workers) if shares[index]]  # fewer trials than workers
    barrier = context.Barrier(len(active))
    errors = context.Queue()
    processes = [
        context.Process(
            target=_worker_main,
            args=(spec, data_path, index, shares[index], barrier, errors),
            name=f"churn-tune-{index}",
        )
        for index in active
    ]
    with TrialProgress(spec.trials, enabled=progress) as bar:
        for process in processes:
            process.start()
        try:
            while any(process.is_alive() for process in processes):
                # While the storage restarts the workers wait for it; so does the bar.
                with contextlib.suppress(*_STORAGE_ERRORS):
                    bar.update(study, offset=offset)
                time.sleep(_POLL_SECONDS)
        finally:
            for process in processes:
                process.join()
        bar.update(study, offset=offset)
    failures = _drain(errors)
    failed = [p.name for p in processes if p.exitcode != 0]
    if failed or failures:
        detail = "\n".join(failures) or f"exit codes {[p.exitcode for p in processes]}"
        raise InputError(f"tuning worker(s) {', '.join(failed)} failed:\n{detail}")


def _drain(queue: Any) -> list[str]:
    items = []
    while True:
        try:
            items.append(queue.get(timeout=0.1))
        except queue_module.Empty:
            return items


def _write_tuning_data(data: TuningData, path: Path) -> None:
    parts = [
        data.x_train.assign(_y=data.y_train.to_numpy(), _part="train"),
        data.x_val.assign(_y=data.y_val.to_numpy(), _part="val"),
    ]
    pd.concat(parts, ignore_index=True).to_parquet(path, index=False)


def _read_tuning_data(path: Path) -> TuningData:
    frame = pd.read_parquet(path)
    train, val = frame[frame["_part"] == "train"], frame[frame["_part"] == "val"]
    features = [c for c in frame.columns if c not in ("_y", "_part")]
    return TuningData(
        x_train=train[features].reset_index(drop=True),
        y_train=train["_y"].reset_index(drop=True),
        x_val=val[features].reset_index(drop=True),
        y_val=val["_y"].reset_index(drop=True),
    )


def _worker_main(
    spec: StudySpec,
    data_path: Path,
    worker: int,
    trials: int,
    barrier: Any,
    errors: Any,
) -> None:
    """Entry point of one spawned tuning process: wait for the others, then optimise."""
    storage = None
    try:
        data = _read_tuning_data(data_path)
        storage = _storage(spec.storage)
        study = open_study(spec, worker=worker, storage=storage)
        # Start together, so each worker really shares the study instead of the first one
        # finishing before the others have imported scikit-learn.
        barrier.wait(timeout=_START_TIMEOUT_SECONDS)
        optimize_resuming(
            study,
            make_objective(data, spec, worker=worker),
            spec,
            trials=trials,
            storage=storage,
            worker=worker,
        )
        _close(storage)
    except ChurnError as error:  # a clear message, no traceback needed
        barrier.abort()
        errors.put(str(error))
        raise SystemExit(1) from None
    except BaseException:
        barrier.abort()  # release the others instead of letting them wait for us
        errors.put(f"worker {worker}: {traceback.format_exc()}")
        raise SystemExit(1) from None
