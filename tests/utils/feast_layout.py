"""Deliberately wrong Feast layouts, to drive the adapter's self-check into its fallback."""

from __future__ import annotations

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
