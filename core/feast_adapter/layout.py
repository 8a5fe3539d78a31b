"""Feast's online layout: entity keys, Redis hash fields and the timestamp field.

Feast's Redis store keeps one hash per entity: the key is the serialized entity key
followed by the project name; each feature is a field named by the 4-byte murmur3 of
``"<view>:<feature>"`` holding a serialized ``feast.types.Value``, and ``_ts:<view>`` holds
the event time (a serialized ``google.protobuf.Timestamp``). The view name carries a
version suffix when online feature-view versioning is on.

:class:`RedisLayout` is the single definition the materialization engine writes with and
the serving reader reads with. It is a plain object passed to both, so a test can hand
them a deliberately wrong layout and see the self-check (:mod:`core.feast_adapter.selfcheck`)
send them back to Feast's own code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TIMESTAMP_FIELD_PREFIX = "_ts:"


@dataclass(frozen=True)
class RedisLayout:
    """Where Feast's Redis store puts an entity's values (Feast's layout as of 0.67)."""

    def view_name(self, view: Any, *, versioning: bool) -> str:
        """The name a view's fields are hashed with (version suffix when versioning is on)."""
        from feast.infra.online_stores.helpers import compute_versioned_name

        return str(compute_versioned_name(view, versioning))

    def feature_field(self, view_name: str, feature: str) -> bytes:
        """Hash field of one feature: murmur3 (32 bits, little-endian) of ``view:feature``."""
        from feast.infra.online_stores.helpers import _mmh3

        field: bytes = _mmh3(f"{view_name}:{feature}")
        return field

    def timestamp_field(self, view_name: str) -> bytes:
        """Hash field holding the view's event time."""
        return f"{TIMESTAMP_FIELD_PREFIX}{view_name}".encode()

    def key_suffix(self, project: str) -> bytes:
        """What follows the serialized entity key in a Redis key."""
        return project.encode("utf8")

    def entity_key(self, join_keys: Sequence[str], values: Sequence[Any], *, version: int) -> bytes:
        """Serialized entity key (without the project) of one entity.

        Args:
            join_keys: Join key names, in the view's order.
            values: ``feast.types.Value`` protos, one per join key.
            version: ``entity_key_serialization_version`` of the repo.
        """
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey

        key: bytes = serialize_entity_key(
            EntityKey(join_keys=list(join_keys), entity_values=list(values)),
            entity_key_serialization_version=version,
        )
        return key

    def int64_redis_key(self, join_key: str, value: int, *, project: str, version: int) -> bytes:
        """Redis key of an entity with one int64 join key (the API's ``user_id``)."""
        from feast.protos.feast.types.Value_pb2 import Value

        return self.entity_key([join_key], [Value(int64_val=value)], version=version) + (
            self.key_suffix(project)
        )

    def view_fields(self, view_name: str, features: Sequence[str]) -> tuple[bytes, ...]:
        """Fields to read for ``features`` of a view: one per feature, then the timestamp."""
        return (
            *(self.feature_field(view_name, name) for name in features),
            self.timestamp_field(view_name),
        )
