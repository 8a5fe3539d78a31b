"""The vectorised encoders produce exactly the bytes of Feast's own per-row serialization."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from materialize.engine.encoding import (
    cells_from_bytes,
    concat_cells,
    encode_entity_keys,
    encode_timestamps,
    encode_values,
    event_micros,
)
from tests.utils.feast_layout import all_types_view

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


def _feast_values(column: pa.Array, value_type: ValueType) -> list[bytes]:
    # What Feast's _convert_arrow_to_proto + SerializeToString produce for a column.
    values = python_values_to_proto_values(column.to_numpy(zero_copy_only=False), value_type)
    return [value.SerializeToString() for value in values]


@pytest.mark.parametrize(
    ("value_type", "column"),
    [
        (ValueType.DOUBLE, pa.array([1.5, None, 0.0, -0.0, float("nan"), 1e300, -2.25e-300])),
        (ValueType.FLOAT, pa.array([1.5, None, 0.1, float("nan"), -3.0], type=pa.float32())),
        (ValueType.INT64, pa.array([0, 1, -1, 127, 128, 300, 2**63 - 1, -(2**63)])),
        (ValueType.INT64, pa.array([0, None, -5, 2**40])),
        (ValueType.INT32, pa.array([0, 1, -1, 2**31 - 1, -(2**31)], type=pa.int32())),
        (ValueType.INT32, pa.array([7, None, -7], type=pa.int32())),
        (ValueType.BOOL, pa.array([True, False, None])),
        (ValueType.STRING, pa.array(["a", None, "héllo", ""])),
    ],
)
def test_values_match_feast(value_type: ValueType, column: pa.Array) -> None:
    assert encode_values(column, value_type).to_list() == _feast_values(column, value_type)


def test_values_of_a_chunked_column_match_feast() -> None:
    column = pa.chunked_array([[1.0, None], [3.5]])
    expected = _feast_values(column.combine_chunks(), ValueType.DOUBLE)
    assert encode_values(column, ValueType.DOUBLE).to_list() == expected


@pytest.mark.parametrize("unit", ["ns", "us"])
@pytest.mark.parametrize("tz", ["UTC", None])
def test_timestamps_match_feast(unit: str, tz: str | None) -> None:
    moments = [
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),  # zero seconds and nanos: both fields omitted
        datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 3, 2, 1, 2, 3, 456789, tzinfo=UTC),
        datetime(2038, 1, 19, 3, 14, 8, 1, tzinfo=UTC),
    ]
    values = [moment if tz else moment.replace(tzinfo=None) for moment in moments]
    column = pa.array(values, type=pa.timestamp(unit, tz=tz))
    expected = []
    for moment in moments:
        proto = Timestamp()
        proto.FromDatetime(moment)
        expected.append(proto.SerializeToString())
    assert encode_timestamps(event_micros(column)).to_list() == expected


def test_nanoseconds_are_truncated_to_microseconds_as_feast_does() -> None:
    column = pa.array([1_772_452_800_123_456_789], type=pa.timestamp("ns", tz="UTC"))
    assert event_micros(column).tolist() == [1_772_452_800_123_456]


def test_int64_entity_keys_match_feast() -> None:
    ids = pa.array([1, -3, 0, 2**40, 2**63 - 1])
    expected = [
        serialize_entity_key(
            EntityKey(join_keys=["user_id"], entity_values=[value]),
            entity_key_serialization_version=3,
        )
        for value in python_values_to_proto_values(ids.to_numpy(), ValueType.INT64)
    ]
    encoded = encode_entity_keys({"user_id": ids}, {"user_id": ValueType.INT64})
    assert encoded.to_list() == expected


def test_other_entity_keys_go_through_feast() -> None:
    columns = {"zone": pa.array(["b", "a"]), "shop": pa.array([2, 1])}
    types = {"zone": ValueType.STRING, "shop": ValueType.INT64}
    zones = python_values_to_proto_values(np.array(["b", "a"], dtype=object), ValueType.STRING)
    shops = python_values_to_proto_values(np.array([2, 1]), ValueType.INT64)
    expected = [
        serialize_entity_key(
            EntityKey(join_keys=["zone", "shop"], entity_values=[zone, shop]),
            entity_key_serialization_version=3,
        )
        for zone, shop in zip(zones, shops, strict=True)
    ]
    assert encode_entity_keys(columns, types).to_list() == expected


def test_concatenation_joins_variable_length_values_row_by_row() -> None:
    left = cells_from_bytes([b"", b"ab", b"c"])
    right = cells_from_bytes([b"xyz", b"", b"w"])
    joined = concat_cells([left, right, cells_from_bytes([b"1", b"2", b"3"])])
    assert joined.to_list() == [b"xyz1", b"ab2", b"cw3"]
    assert joined.data() == b"xyz1ab2cw3"
    assert joined.offsets().tolist() == [0, 4, 7, 10]


@pytest.mark.parametrize("key_type", ["Int64", "String", "Int32"])
def test_the_self_check_finds_our_bytes_identical_for_every_encoded_type(key_type: str) -> None:
    from core.compute.sampling import CREATED_COLUMN, EVENT_COLUMN
    from core.feast_adapter.layout import RedisLayout
    from core.feast_adapter.selfcheck import check_writer
    from materialize.engine.core import encode_rows

    view = all_types_view(key_type)
    layout = RedisLayout()
    check = check_writer(
        view,
        project="selfcheck",
        key_version=3,
        versioning=False,
        layout=layout,
        encode=lambda table: encode_rows(
            table, view, layout=layout, project="selfcheck", versioning=False
        ),
        event_column=EVENT_COLUMN,
        created_column=CREATED_COLUMN,
    )

    # Values of every type, then nulls, entity keys and event times: byte for byte.
    assert check.ok, check.describe()
    assert check.skipped == ()


def test_the_self_check_reports_an_encoder_that_raises() -> None:
    from core.feast_adapter.layout import RedisLayout
    from core.feast_adapter.selfcheck import check_writer

    def broken(table: pa.Table) -> list:
        raise ValueError("no encoder for this")

    check = check_writer(
        all_types_view(),
        project="selfcheck",
        key_version=3,
        versioning=False,
        layout=RedisLayout(),
        encode=broken,
        event_column="event",
        created_column="created_at",
    )

    assert not check.ok
    assert "could not run (ValueError: no encoder for this)" in check.describe()
