"""The online reader's self-check, by join key type."""

from __future__ import annotations

import pytest

from tests.utils.feast_layout import ALL_TYPES, all_types_view

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


@pytest.mark.parametrize(
    ("key_type", "difference"),
    [
        ("Int64", None),
        # Feast keys an Int32 entity by its int32 value; the reader's int64 key would find
        # nothing, so such a view must go through the SDK.
        ("Int32", "the reader's Redis key differs"),
        ("String", "could not run"),
    ],
)
def test_the_reader_self_check_by_join_key_type(key_type: str, difference: str | None) -> None:
    from core.feast_adapter.layout import RedisLayout
    from core.feast_adapter.selfcheck import check_reader
    from serving.features.rows import decode_value

    check = check_reader(
        all_types_view(key_type),
        list(ALL_TYPES),
        project="selfcheck",
        key_version=3,
        versioning=False,
        layout=RedisLayout(),
        decode=decode_value,
    )

    if difference is None:
        assert check.ok, check.describe()
    else:
        assert difference in check.describe()
