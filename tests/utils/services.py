"""Real services for tests: Redis and PostgreSQL on loopback, isolated per test."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis
import sqlalchemy as sa

REDIS_HOST = os.environ.get("CHURN_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("CHURN_TEST_REDIS_PORT", "6379"))
POSTGRES_ADMIN_URL = os.environ.get(
    "CHURN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def unique_name(prefix: str) -> str:
    """A name no other test run uses (Feast projects, databases, model names)."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def redis_client(db: int = 0) -> redis.Redis:
    """A client of the test Redis server."""
    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_timeout=5)


def delete_project_keys(project: str, db: int = 0) -> int:
    """Delete every key Feast wrote for a project (its keys end with the project name)."""
    client = redis_client(db)
    deleted = 0
    for key in client.scan_iter(match=f"*{project}", count=1000):
        deleted += client.delete(key)
    return deleted


@contextmanager
def temporary_postgres_database() -> Iterator[str]:
    """Create an empty PostgreSQL database for one test; yield its SQLAlchemy URL."""
    name = unique_name("churn_test")
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl, as user postgres) on a free port.

    For tests that stop or restart the database: never the shared server.
    """

    def __init__(self) -> None:
        import glob
        import socket
        import tempfile

        versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not versions:
            raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
        self.bin = versions[-1]
        # initdb refuses root, and pytest's temp folders are private to root.
        self.root = tempfile.mkdtemp(prefix="churn-pg-", dir="/tmp")
        shutil.chown(self.root, user="postgres", group="postgres")
        self.data = os.path.join(self.root, "data")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
        return subprocess.run(
            [*prefix, *args], capture_output=True, text=True, check=check, timeout=120
        )

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of a database in this cluster."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        """Create the cluster (trust auth) and start it."""
        self._run(f"{self.bin}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres")
        self.start()

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(
            f"{self.bin}/pg_ctl", "-D", self.data, "-o", options, "-l",
            os.path.join(self.root, "log"), "-w", "start",
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the server (fast: connections are cut, as in a restart)."""
        self._run(f"{self.bin}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop", check=False)

    def create_database(self, name: str) -> str:
        """Create a database; return its URL."""
        admin = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return self.url(name)

    def destroy(self) -> None:
        """Stop the server and delete the cluster."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
