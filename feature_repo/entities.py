"""Entities: the keys features are joined on."""

from feast import Entity, ValueType

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.INT64,
    description="A customer account; user_id is its int64 key.",
)
