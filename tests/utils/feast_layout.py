"""Deliberately wrong Feast layouts, to drive the adapter's self-check into its fallback."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from core.feast_adapter.layout import RedisLayout


class SwappedFieldLayout(RedisLayout):
    """Hashes ``feature:view`` instead of ``view:feature``: every feature field is wrong."""

    def feature_field(self, view_name: str, feature: str) -> bytes:
        """The murmur3 of the name parts swapped."""
        return super().feature_field(feature, view_name)


class WrongKeyLayout(RedisLayout):
    """Leaves the project out of Redis keys."""

    def key_suffix(self, project: str) -> bytes:
        """Nothing: keys are the bare serialized entity key."""
        return b""


def all_types_view(key_type: str = "Int64") -> Any:
    """A feature view (not applied) with one feature of every type the engine encodes."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType, types

    dtype = getattr(types, key_type)
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType[key_type.upper()])
    return FeatureView(
        name="all_types",
        entities=[user],
        ttl=timedelta(days=1),
        schema=[
            Field(name="user_id", dtype=dtype),
            *(Field(name=name, dtype=getattr(types, kind)) for name, kind in ALL_TYPES.items()),
        ],
        source=FileSource(
            path="unused.parquet",
            timestamp_field="event_timestamp",
            created_timestamp_column="created",
        ),
    )


ALL_TYPES = {
    "f64": "Float64",
    "f32": "Float32",
    "i64": "Int64",
    "i32": "Int32",
    "flag": "Bool",
    "text": "String",
}
