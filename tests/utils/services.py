"""Real services for tests: Redis and PostgreSQL on loopback, isolated per test."""

from __future__ import annotations

import os
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
