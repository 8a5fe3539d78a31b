"""Private accessors of an open feature store: its batch engine, registry proto, clients.

Feast exposes none of these publicly; each is one call here, imported lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig


def batch_engine_of(store: FeatureStore) -> Any:
    """The batch engine Feast built for the store's provider (None if it has none)."""
    return getattr(store._get_provider(), "batch_engine", None)


def online_store_of(store: FeatureStore) -> Any:
    """The online store object Feast built for the store's provider."""
    return store._get_provider().online_store


def fresh_registry_proto(store: FeatureStore) -> Any:
    """The project's registry proto, read again from its source (no cache, no objects).

    A registry file is re-read; the SQL registry builds its proto from the database rows.
    """
    from feast.infra.registry.registry import Registry

    registry: Any = store.registry
    if isinstance(registry, Registry):
        return registry._get_registry_proto(project=store.project, allow_cache=False)
    return registry.proto()


def parse_redis_connection(connection_string: str) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Feast's parsing of a Redis ``connection_string``: (host/port nodes, client params).

    Using Feast's own parser makes a second client read the same server Feast writes.
    """
    from feast.infra.online_stores.redis import RedisOnlineStore

    nodes, params = RedisOnlineStore._parse_connection_string(connection_string)
    return list(nodes), dict(params)


def redis_client_arguments(connection_string: str) -> dict[str, Any]:
    """redis-py ``Redis(...)`` arguments of a single-Redis ``connection_string``, as Feast's
    own client is built from it (first host and port, then db, password, TLS...)."""
    nodes, params = parse_redis_connection(connection_string)
    return {**params, "host": nodes[0]["host"], "port": nodes[0]["port"]}


def redis_client(online_store: Any, online_config: Any) -> Any:
    """Feast's own (cached) redis-py client of a Redis online store.

    Host, db, password and TLS are then exactly the profile's.
    """
    return online_store._get_client(online_config)


def sqlite_db_path(config: RepoConfig) -> Path:
    """The SQLite online store's database file, as Feast resolves it."""
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    return Path(SqliteOnlineStore._get_db_path(config))
