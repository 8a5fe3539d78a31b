"""The executors' latest-row pick: whole entities across batch boundaries, Feast's order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from core.compute.sampling import CREATED_COLUMN, EVENT_COLUMN
from materialize.engine.backends.spark_tasks import complete_entities, latest_rows

pytestmark = pytest.mark.unit

AT = datetime(2026, 3, 1, tzinfo=UTC)


def _grouped_rows(seed: int) -> pd.DataFrame:
    """Rows grouped by (tenant, user), as a task receives them: ties on the event time,
    missing created times, entities of one row and of many, rows without a key first."""
    rng = np.random.default_rng(seed)
    entities = [(tenant, user) for tenant in ("a", "b") for user in range(1, 40)]
    rows = []
    for number, (tenant, user) in enumerate(entities):
        for _ in range(1 + number % 5):
            created = None if rng.random() < 0.3 else AT - timedelta(minutes=int(rng.integers(3)))
            rows.append(
                {
                    "tenant": tenant,
                    "user_id": user,
                    "value": float(rng.random()),
                    EVENT_COLUMN: AT - timedelta(hours=int(rng.integers(3))),
                    CREATED_COLUMN: created,
                }
            )
    keyless = [{**rows[0], "user_id": None}, {**rows[1], "tenant": None}]
    return pd.DataFrame(keyless + rows)


def _expected_latest(frame: pd.DataFrame) -> dict[tuple[str, int], float]:
    """Feast's rule, row by row: latest event time, then latest created, missing last."""
    latest: dict[tuple[str, int], tuple[datetime, datetime, float]] = {}
    floor = datetime.min.replace(tzinfo=UTC)
    for row in frame.dropna(subset=["tenant", "user_id"]).to_dict("records"):
        created = row[CREATED_COLUMN]
        order = (row[EVENT_COLUMN], floor if pd.isna(created) else created)
        key = (row["tenant"], int(row["user_id"]))
        if key not in latest or order > latest[key][:2]:
            latest[key] = (*order, row["value"])
    return {key: value for key, (_, _, value) in latest.items()}


def _table(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False).cast(
        pa.schema(
            [
                ("tenant", pa.string()),
                ("user_id", pa.int64()),
                ("value", pa.float64()),
                (EVENT_COLUMN, pa.timestamp("us", tz="UTC")),
                (CREATED_COLUMN, pa.timestamp("us", tz="UTC")),
            ]
        )
    )


@pytest.mark.parametrize("batch_rows", [1, 2, 3, 7, 50, 1000])
def test_every_entity_is_picked_once_whatever_the_batch_boundaries(batch_rows: int) -> None:
    frame = _grouped_rows(seed=batch_rows)
    keys = ["tenant", "user_id"]

    picked: dict[tuple[str, int], float] = {}
    rows = rejected = 0
    for complete, keyed, lacking in complete_entities(_table(frame).to_batches(batch_rows), keys):
        rows += keyed
        rejected += lacking
        for entity in latest_rows(complete, keys).to_pylist():
            key = (entity["tenant"], entity["user_id"])
            assert key not in picked, f"{key} was split between two chunks"
            picked[key] = entity["value"]

    assert picked == _expected_latest(frame)
    assert (rows, rejected) == (len(frame) - 2, 2)


def test_the_latest_row_is_the_latest_event_then_the_latest_created_time() -> None:
    earlier, later = AT - timedelta(minutes=5), AT
    frame = pd.DataFrame(
        {
            "tenant": ["a"] * 6,
            "user_id": [1, 1, 2, 2, 3, 3],
            "value": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            EVENT_COLUMN: [earlier, later, later, later, later, later],
            CREATED_COLUMN: [later, earlier, None, earlier, earlier, later],
        }
    )

    latest = latest_rows(_table(frame), ["tenant", "user_id"]).to_pydict()

    assert latest["user_id"] == [1, 2, 3]
    # 1: the later event wins over a later created time; 2: a missing created time loses.
    assert latest["value"] == [2.0, 4.0, 6.0]


def test_a_user_spanning_many_batches_waits_as_its_latest_row_only() -> None:
    """A skewed key must not be copied again with every batch (found in review: the
    carried rows were concatenated and filtered per batch, quadratic in its rows)."""
    rows = 200
    frame = pd.DataFrame(
        {
            "tenant": ["a"] * rows,
            "user_id": [1] * rows,
            "value": [float(number) for number in range(rows)],
            EVENT_COLUMN: [AT - timedelta(minutes=number) for number in range(rows)],
            CREATED_COLUMN: [AT] * rows,
        }
    )

    chunks = list(complete_entities(_table(frame).to_batches(3), ["tenant", "user_id"]))

    *waiting, (last, _, _) = chunks
    assert all(table.num_rows == 0 for table, _, _ in waiting)
    assert last.to_pydict()["value"] == [0.0]  # the latest row alone
    assert sum(keyed for _, keyed, _ in chunks) == rows


def test_fixed_width_rows_go_to_python_by_row_count_alone() -> None:
    from pyspark.sql import types as T

    from materialize.engine.backends.spark import arrow_batch_settings

    numeric = T.StructType(
        [
            T.StructField("user_id", T.LongType()),
            T.StructField("value", T.DoubleType()),
            T.StructField("active", T.BooleanType()),
            T.StructField("amount", T.DecimalType(10, 2)),
            T.StructField("day", T.DateType()),
            T.StructField(EVENT_COLUMN, T.TimestampType()),
            T.StructField(CREATED_COLUMN, T.TimestampNTZType()),
        ]
    )
    default_cap = 64 * 2**20
    # Spark stops measuring each batch's bytes only at exactly Int.MaxValue.
    assert arrow_batch_settings(numeric, batch_rows=500, byte_cap=default_cap) == {
        "spark.sql.execution.arrow.maxRecordsPerBatch": "500",
        "spark.sql.execution.arrow.maxBytesPerBatch": "2147483647",
    }
    row_cap_only = {"spark.sql.execution.arrow.maxRecordsPerBatch": "500"}
    texts = T.StructType([*numeric.fields, T.StructField("plan", T.StringType())])
    lists = T.StructType([*numeric.fields, T.StructField("ids", T.ArrayType(T.LongType()))])
    for variable in (texts, lists):
        assert arrow_batch_settings(variable, batch_rows=500, byte_cap=default_cap) == row_cap_only
    # 500 rows of these seven columns take about 30 KB: a lower cap, or an unknown one, stays.
    assert arrow_batch_settings(numeric, batch_rows=500, byte_cap=20_000) == row_cap_only
    assert arrow_batch_settings(numeric, batch_rows=500, byte_cap=None) == row_cap_only


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("67108864b", 64 * 2**20),
        ("64m", 64 * 2**20),
        ("1g", 2**30),
        ("2KB", 2048),
        ("4096", 4096),
        ("1.5g", None),
        (None, None),
    ],
)
def test_spark_size_settings_read_as_bytes(text: str | None, expected: int | None) -> None:
    from materialize.engine.backends.spark import parse_byte_string

    assert parse_byte_string(text) == expected


class _RecordingConf:
    """A session's runtime conf: values by name, every call recorded."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = dict(values)
        self.calls: list[tuple[str, ...]] = []

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.values.get(name, default)

    def set(self, name: str, value: str) -> None:
        self.calls.append(("set", name, value))
        self.values[name] = value

    def unset(self, name: str) -> None:
        self.calls.append(("unset", name))
        self.values.pop(name, None)


class _Session:
    def __init__(self, conf: _RecordingConf) -> None:
        self.conf = conf


def test_session_settings_hold_inside_the_block_and_earlier_values_come_back() -> None:
    from materialize.engine.backends.spark import session_settings

    conf = _RecordingConf({"a": "1"})
    with pytest.raises(RuntimeError), session_settings(_Session(conf), {"a": "2", "b": "3"}):  # type: ignore[arg-type]
        assert conf.values == {"a": "2", "b": "3"}
        raise RuntimeError("the query failed")
    # Put back even when the block fails: "a" to its value, "b" unset as it was.
    assert conf.values == {"a": "1"}
    assert conf.calls[-2:] == [("set", "a", "1"), ("unset", "b")]


def test_a_running_session_draws_a_warning_only_for_the_settings_it_lacks() -> None:
    from materialize.engine.backends.spark import running_session_warning

    wanted = {"spark.app.name": "churn-materialize", "spark.executor.extraJavaOptions": "-X"}
    other = _Session(_RecordingConf({"spark.app.name": "notebook"}))
    same = _Session(_RecordingConf(dict(wanted)))
    # On Spark Connect the engine's own session need not echo launch settings.
    own = _Session(_RecordingConf({}))

    warning = running_session_warning(other, started=own, settings=wanted)  # type: ignore[arg-type]
    assert warning is not None
    assert "(notebook)" in warning
    assert "spark.app.name, spark.executor.extraJavaOptions:" in warning
    assert running_session_warning(same, started=None, settings=wanted) is None  # type: ignore[arg-type]
    assert running_session_warning(own, started=own, settings=wanted) is None  # type: ignore[arg-type]
    assert running_session_warning(other, started=None, settings={}) is None  # type: ignore[arg-type]
