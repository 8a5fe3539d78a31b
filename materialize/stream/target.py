"""Where ``churn stream`` writes: the view fed by a push source, its batch directory, Redis.

Read from the Feast registry, so the Feast repo stays the single source of truth.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import ConfigurationError
from core.feast_adapter.layout import RedisLayout
from core.feast_adapter.store import parse_redis_connection
from materialize.stream.store import OFFLINE_SCHEMA

if TYPE_CHECKING:
    from core.settings import FeastSettings

TILE_FEATURES = ("tile_minutes", "tile_counts")


@dataclass(frozen=True)
class StreamTarget:
    """Where the worker writes, read from the Feast registry through the push source."""

    project: str
    view: str
    join_key: str
    offline_dir: Path
    key_version: int
    key_ttl_seconds: int | None
    redis_arguments: dict[str, Any]


def resolve_target(feast: FeastSettings, push_source: str) -> StreamTarget:
    """The feature view fed by ``push_source``, its batch directory and the online store.

    Raises:
        ConfigurationError: No such push source, not exactly one view fed by it, the view
            lacks the tile features, or the online store is not Redis.
    """
    from core.feast_store import feature_store_session

    with feature_store_session(feast) as store:
        views = [
            view
            for view in store.list_feature_views()
            if getattr(view.stream_source, "name", None) == push_source
        ]
        if len(views) != 1:
            raise ConfigurationError(
                f"push source {push_source!r} feeds {len(views)} feature views; expected one"
            )
        [view] = views
        missing = [name for name in TILE_FEATURES if name not in {f.name for f in view.features}]
        if missing or len(view.entity_columns) != 1:
            raise ConfigurationError(
                f"feature view {view.name!r} needs one join key and {', '.join(TILE_FEATURES)}"
            )
        online = store.config.online_store
        if getattr(online, "type", None) != "redis":
            raise ConfigurationError(
                "churn stream needs a Redis online store (this profile's is not)"
            )
        batch_source: Any = view.batch_source
        path = Path(batch_source.path)
        if not path.is_absolute():
            path = Path(store.repo_path) / path
        nodes, params = parse_redis_connection(online.connection_string)
        params.update(host=nodes[0]["host"], port=int(nodes[0]["port"]))
        return StreamTarget(
            project=store.project,
            view=RedisLayout().view_name(
                view,
                versioning=bool(
                    getattr(store.config.registry, "enable_online_feature_view_versioning", False)
                ),
            ),
            join_key=view.entity_columns[0].name,
            offline_dir=path,
            key_version=int(store.config.entity_key_serialization_version),
            key_ttl_seconds=getattr(online, "key_ttl_seconds", None) or None,
            redis_arguments=params,
        )


def prepare_push_directories(feast: FeastSettings) -> list[Path]:
    """Create the local part directories of the repo's push-fed views (after apply).

    A point-in-time join over a view whose directory holds no part fails in DuckDB, so
    each gets an empty part with the schema before any event is streamed.
    """
    from core.feast_store import feature_store_session

    created = []
    with feature_store_session(feast) as store:
        for view in store.list_feature_views():
            source: Any = view.batch_source
            path = str(getattr(source, "path", "") or "")
            if view.stream_source is None or not path or "://" in path:
                continue
            if set(TILE_FEATURES) <= {f.name for f in view.features}:
                directory = Path(path)
                ensure_offline_dir(directory)
                created.append(directory)
    return created


def ensure_offline_dir(directory: Path) -> None:
    """Create the batch source directory with an empty part, so readers find its schema."""
    directory.mkdir(parents=True, exist_ok=True)
    if not any(directory.glob("*.parquet")):
        write_part(directory, "part-0-schema", OFFLINE_SCHEMA.empty_table())


def write_part(directory: Path, name: str, table: pa.Table) -> None:
    """Write a part atomically: a hidden file outside the directory, then a rename."""
    temporary = directory.parent / f".{directory.name}.{name}.{os.getpid()}.tmp"
    pq.write_table(table, temporary)
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, directory / f"{name}.parquet")
