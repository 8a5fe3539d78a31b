"""Locks every process sharing an MLflow tracking store can see.

Champion changes, the ``champion.history`` tag, the retraining decision and the creation of
a fresh tracking store must each be one serialized step across processes (and machines
where the store is shared). The lock lives with the store:

- **PostgreSQL** tracking store: a session-level advisory lock (``pg_advisory_lock``) on a
  connection of its own. Every process and machine using the database sees it, and the
  server releases it when the holder's connection dies (a crashed or killed job never
  leaves it held).
- **SQLite** tracking store: an OS file lock (``flock``) on ``<database>.lock`` beside the
  database file. SQLite only works on one machine's file system, so every user of the
  database can see that file; the kernel releases the lock when the holder dies. A lock
  row or ``BEGIN IMMEDIATE`` in the database itself would hold SQLite's single writer slot
  for the whole step, and MLflow's own writes in that step (from its own connection) would
  then wait on us: a self-deadlock.
- Anything else (an MLflow server over HTTP, a file store): a file lock under
  ``<data_dir>/locks``, which serializes the jobs of one machine only (say so in the docs;
  run jobs that share a remote server from one machine, or point them at the database).

The lock is not re-entrant: take it once, around the whole read-decide-write step.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from core.errors import LockTimeout

_POLL_SECONDS = 0.05


def _advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock`` (hashtext is not stable API)."""
    digest = hashlib.sha256(f"churn-platform:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def sqlalchemy_url(uri: str) -> str:
    """A PostgreSQL URI with an installed driver (psycopg 3; psycopg2 is not installed)."""
    for prefix in ("postgresql://", "postgres://"):
        if uri.startswith(prefix):
            return "postgresql+psycopg://" + uri.removeprefix(prefix)
    return uri


def champion_lock_name(model_name: str) -> str:
    """The lock of a registered model's champion decisions (training, promotion, rollback,
    the retraining decision)."""
    return f"champion:{model_name}"


def lock_file_for(tracking_uri: str, name: str, *, fallback_dir: Path) -> Path | None:
    """The lock file used for a non-PostgreSQL store (None for PostgreSQL)."""
    if tracking_uri.startswith(("postgresql", "postgres://")):
        return None
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///"))
        return database.with_name(f"{database.name}.{_safe(name)}.lock")
    return fallback_dir / f"{_safe(name)}.lock"


@contextlib.contextmanager
def file_lock(path: Path, timeout: float | None = 600.0) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if needed), released at exit or death."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockTimeout(f"lock {path} still held after {timeout} s") from None
                time.sleep(_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def _advisory_lock(url: str, name: str, timeout: float | None) -> Iterator[None]:
    import sqlalchemy as sa

    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.pool.NullPool)
    key = _advisory_key(name)
    try:
        with engine.connect() as connection:
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            deadline = None if timeout is None else time.monotonic() + timeout
            while not connection.execute(
                sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}
            ).scalar():
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockTimeout(f"advisory lock {name!r} still held after {timeout} s")
                time.sleep(_POLL_SECONDS)
            try:
                yield
            finally:
                connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        engine.dispose()


@contextlib.contextmanager
def store_lock(
    tracking_uri: str, name: str, *, fallback_dir: Path, timeout: float | None = 600.0
) -> Iterator[None]:
    """Hold the lock ``name`` of a tracking store for the duration of the block.

    Args:
        tracking_uri: The MLflow tracking URI the lock belongs with.
        name: What is locked, e.g. ``champion:churn-predictor``.
        fallback_dir: Folder of lock files for stores that are neither SQLite nor
            PostgreSQL.
        timeout: Seconds to wait (None: forever).

    Raises:
        LockTimeout: Another holder kept it longer than ``timeout``.
    """
    path = lock_file_for(tracking_uri, name, fallback_dir=fallback_dir)
    if path is None:
        with _advisory_lock(tracking_uri, name, timeout):
            yield
    else:
        with file_lock(path, timeout):
            yield
