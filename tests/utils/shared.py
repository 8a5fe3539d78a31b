"""Things built once per test run and shared by every pytest-xdist worker.

Under ``pytest -n N`` each worker is a process with its own session: a session fixture
runs once per worker. What is expensive and only read (a Spark cluster, an empty MLflow
database to copy) is built by the first worker that needs it, under a file lock in the
folder all workers of the run share (the run's base temp folder, as the pytest-xdist docs
describe), and reused by the others.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

_run_folder: Path | None = None


def is_xdist_worker() -> bool:
    """True inside a pytest-xdist worker process."""
    return "PYTEST_XDIST_WORKER" in os.environ


def run_folder_of(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder every worker of this run shares: the base temp folder of the run.

    A worker's base temp folder is ``<run base>/popen-gwN``; without xdist the session's
    own base temp folder is the run's.
    """
    base = tmp_path_factory.getbasetemp()
    return base.parent if is_xdist_worker() else base


def set_run_folder(folder: Path) -> None:
    """Record the run's shared folder (done once per session by tests/conftest.py)."""
    global _run_folder
    _run_folder = folder


def run_folder() -> Path:
    """The run's shared folder, for helpers that are plain functions, not fixtures."""
    if _run_folder is None:
        raise RuntimeError("the run folder is set by a session fixture of tests/conftest.py")
    return _run_folder


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created if absent) across processes."""
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(name: str, build: Callable[[Path], None], *, folder: Path | None = None) -> Path:
    """``<run folder>/<name>``, built by ``build`` in the first process that asks.

    The others wait on the lock and get the finished folder; a build that failed is tried
    again by the next caller. Callers must only read what is built (or copy it).
    """
    root = folder if folder is not None else run_folder()
    target = root / name
    done = root / f"{name}.done"
    with exclusive(root / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            build(target)
            done.touch()
    return target
