"""Start-up self-check: do our bytes match what Feast itself writes?

The materialization engine writes Feast's online layout with its own vectorised encoder,
and the serving reader reads it with its own key and field computation. Both are right
only as long as Feast keeps its layout. Before using them, a sample row is encoded through
Feast's own path (its arrow-to-protobuf conversion and its Redis store's
``online_write_batch``, with a client that records the writes instead of sending them) and
compared with ours: Redis keys, hash field names and value bytes. Any difference is
returned as a readable line; the caller then falls back to Feast (engine: Feast's local
engine; serving: the SDK path) and logs it loudly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from core.feast_adapter.layout import RedisLayout

# Sample values per Feast value type name: a regular value, then a null.
_SAMPLE_VALUES: dict[str, tuple[Any, str]] = {
    "DOUBLE": (1.5, "float64"),
    "FLOAT": (0.25, "float32"),
    "INT64": (-3, "int64"),
    "INT32": (42, "int32"),
    "BOOL": (True, "bool"),
    "STRING": ("churn", "string"),
    "INT64_LIST": ([3, -1, 7], "list<int64>"),  # the activity tiles of churn stream
}
_SAMPLE_KEYS: dict[str, tuple[list[Any], str]] = {
    "INT64": ([1_234_567_890_123, 7], "int64"),
    "INT32": ([5, 6], "int32"),
    "STRING": (["user-1", "user-2"], "string"),
}
_SAMPLE_TIMES = [
    datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC),
]


@dataclass(frozen=True)
class EncodedRow:
    """One entity as a writer puts it online: the Redis key and its hash fields."""

    key: bytes
    fields: Mapping[bytes, bytes]


@dataclass(frozen=True)
class SelfCheck:
    """Result of comparing our encoding with Feast's.

    Attributes:
        view: The feature view checked.
        differences: One readable line per difference; empty when identical.
        skipped: Features left out of the sample (types without a sample value).
    """

    view: str
    differences: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether our bytes are Feast's."""
        return not self.differences

    def describe(self) -> str:
        """The differences on one line."""
        return "; ".join(self.differences) or "identical"


def sample_table(view: Any, *, event_column: str, created_column: str) -> tuple[Any, list[str]]:
    """Two sample rows for a view: values of every feature type we encode, then nulls.

    Returns:
        The arrow table (join keys and features under the view's names, times under
        ``event_column`` / ``created_column``) and the features left out.
    """
    import pyarrow as pa

    columns: dict[str, Any] = {}
    for column in view.entity_columns:
        kind = column.dtype.to_value_type().name
        if kind not in _SAMPLE_KEYS:
            raise ValueError(f"no sample entity key for {column.name} ({kind})")
        values, arrow_type = _SAMPLE_KEYS[kind]
        columns[column.name] = pa.array(values, type=arrow_type)
    skipped = []
    for feature in view.features:
        kind = feature.dtype.to_value_type().name
        if kind not in _SAMPLE_VALUES:
            skipped.append(feature.name)
            continue
        value, arrow_name = _SAMPLE_VALUES[kind]
        arrow_type = pa.list_(pa.int64()) if arrow_name == "list<int64>" else arrow_name
        columns[feature.name] = pa.array([value, None], type=arrow_type)
    times = pa.array(_SAMPLE_TIMES, type=pa.timestamp("us", tz="UTC"))
    columns[event_column] = times
    columns[created_column] = times
    return pa.table(columns), skipped


class _RecordingPipeline:
    """A redis-py pipeline stand-in that keeps the HSETs Feast sends."""

    def __init__(self, writes: dict[bytes, dict[bytes, bytes]]) -> None:
        self._writes = writes

    def __enter__(self) -> _RecordingPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def hset(self, name: Any, mapping: Mapping[Any, Any]) -> None:
        fields = self._writes.setdefault(_as_bytes(name), {})
        fields.update({_as_bytes(key): _as_bytes(value) for key, value in mapping.items()})

    def expire(self, name: Any, time: int) -> None:
        return None

    def execute(self) -> list[Any]:
        return []


class _RecordingClient:
    def __init__(self) -> None:
        self.writes: dict[bytes, dict[bytes, bytes]] = {}

    def pipeline(self, transaction: bool = False) -> _RecordingPipeline:
        return _RecordingPipeline(self.writes)


def _as_bytes(value: Any) -> bytes:
    return value.encode("utf8") if isinstance(value, str) else bytes(value)


def feast_redis_writes(
    view: Any, table: Any, *, project: str, key_version: int, versioning: bool
) -> list[EncodedRow]:
    """What Feast's Redis store writes for the rows of ``table``, in row order.

    Args:
        view: The feature view.
        table: Rows with the view's join key and feature names and the batch source's
            timestamp column names.
        project: Feast project.
        key_version: ``entity_key_serialization_version``.
        versioning: Whether online feature-view versioning is on.
    """
    from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig

    from core.feast_adapter.engine import arrow_to_feast_rows

    rows = arrow_to_feast_rows(table.combine_chunks().to_batches()[0], view)
    client = _RecordingClient()
    store = RedisOnlineStore()
    store._client = client  # type: ignore[assignment]  # Feast's cached client: writes land here
    config = SimpleNamespace(
        online_store=RedisOnlineStoreConfig(connection_string="recorder:0", skip_dedup=True),
        project=project,
        entity_key_serialization_version=key_version,
        registry=SimpleNamespace(enable_online_feature_view_versioning=versioning),
    )
    store.online_write_batch(config, view, rows, progress=None)  # type: ignore[arg-type]
    return [EncodedRow(key=key, fields=fields) for key, fields in client.writes.items()]


def _as_source_columns(view: Any, table: Any, *, event_column: str, created_column: str) -> Any:
    """The sample with its time columns named as the view's batch source names them."""
    source = view.batch_source
    renames = {event_column: source.timestamp_field}
    if source.created_timestamp_column:
        renames[created_column] = source.created_timestamp_column
    else:
        table = table.drop_columns([created_column])
    return table.rename_columns([renames.get(name, name) for name in table.column_names])


def _hex(value: bytes | None) -> str:
    return "nothing" if value is None else value.hex() or "empty"


def _field_label(field: bytes, names: Mapping[bytes, str]) -> str:
    return names.get(field) or (field.decode() if field.startswith(b"_ts:") else field.hex())


def compare_rows(
    view: str,
    feast_rows: Sequence[EncodedRow],
    ours: Sequence[EncodedRow],
    *,
    field_names: Mapping[bytes, str],
    skipped: Sequence[str] = (),
) -> SelfCheck:
    """Compare two encodings of the same rows (keys, field names and value bytes)."""
    differences: list[str] = []
    if len(feast_rows) != len(ours):
        differences.append(f"{view}: Feast writes {len(feast_rows)} rows, ours {len(ours)}")
    for index, (theirs, mine) in enumerate(zip(feast_rows, ours, strict=False)):
        if theirs.key != mine.key:
            differences.append(
                f"{view} row {index}: Redis key differs (Feast {_hex(theirs.key)}, "
                f"ours {_hex(mine.key)})"
            )
        missing = [f for f in theirs.fields if f not in mine.fields]
        extra = [f for f in mine.fields if f not in theirs.fields]
        if missing or extra:
            differences.append(
                f"{view} row {index}: hash field names differ (Feast only: "
                f"{', '.join(_field_label(f, field_names) for f in missing) or 'none'}; ours "
                f"only: {', '.join(_field_label(f, field_names) for f in extra) or 'none'})"
            )
        for field, value in theirs.fields.items():
            if field in mine.fields and mine.fields[field] != value:
                differences.append(
                    f"{view} row {index}: bytes of {_field_label(field, field_names)} differ "
                    f"(Feast {_hex(value)}, ours {_hex(mine.fields[field])})"
                )
    return SelfCheck(view=view, differences=tuple(differences), skipped=tuple(skipped))


def check_writer(
    view: Any,
    *,
    project: str,
    key_version: int,
    versioning: bool,
    layout: RedisLayout,
    encode: Callable[[Any], list[EncodedRow]],
    event_column: str,
    created_column: str,
) -> SelfCheck:
    """Encode a sample of ``view`` with ``encode`` and with Feast; compare the bytes.

    A check that cannot run (Feast refuses the sample, our encoder raises) is a
    difference too: nothing unverified is used.

    Args:
        view: A feature view with a batch source.
        project: Feast project.
        key_version: ``entity_key_serialization_version``.
        versioning: Whether online feature-view versioning is on.
        layout: The layout ``encode`` writes with (names fields in the report).
        encode: Our encoding of the sample table into Redis rows.
        event_column: Name of the event-time column ``encode`` expects.
        created_column: Name of the created-time column ``encode`` expects.
    """
    try:
        table, skipped, theirs = _sample_through_feast(
            view,
            project=project,
            key_version=key_version,
            versioning=versioning,
            columns=(event_column, created_column),
        )
        view_name = layout.view_name(view, versioning=versioning)
        names = {
            layout.feature_field(view_name, feature.name): feature.name for feature in view.features
        }
        return compare_rows(view.name, theirs, encode(table), field_names=names, skipped=skipped)
    except Exception as error:  # any failure means "not verified": fall back
        return _not_run(view, error)


def _sample_through_feast(
    view: Any, *, project: str, key_version: int, versioning: bool, columns: tuple[str, str]
) -> tuple[Any, list[str], list[EncodedRow]]:
    """The sample table (times named ``columns``), features left out, and Feast's writes."""
    event_column, created_column = columns
    table, skipped = sample_table(view, event_column=event_column, created_column=created_column)
    theirs = feast_redis_writes(
        view,
        _as_source_columns(view, table, event_column=event_column, created_column=created_column),
        project=project,
        key_version=key_version,
        versioning=versioning,
    )
    return table, skipped, theirs


def _not_run(view: Any, error: Exception) -> SelfCheck:
    return SelfCheck(
        view=view.name,
        differences=(
            f"{view.name}: the self-check could not run ({type(error).__name__}: {error})",
        ),
    )


def check_reader(
    view: Any,
    features: Sequence[str],
    *,
    project: str,
    key_version: int,
    versioning: bool,
    layout: RedisLayout,
    decode: Callable[[bytes], Any],
) -> SelfCheck:
    """Check that a reader finds and decodes what Feast writes for ``features`` of a view.

    A sample row is written through Feast's path (recorded); the reader's key (from
    ``layout``, one int64 join key) must be Feast's key, its fields (from ``layout``)
    Feast's fields, and ``decode`` must turn Feast's value bytes back into the sample
    values. A check that cannot run is a difference.
    """
    try:
        table, skipped, theirs = _sample_through_feast(
            view,
            project=project,
            key_version=key_version,
            versioning=versioning,
            columns=("_event", "_created"),
        )
        view_name = layout.view_name(view, versioning=versioning)
        checked = [name for name in features if name not in skipped]
        names = {layout.feature_field(view_name, name): name for name in checked}
        [join_key] = [column.name for column in view.entity_columns]
        differences: list[str] = []
        for index, row in enumerate(theirs[:1]):
            key = layout.int64_redis_key(
                join_key,
                table.column(join_key)[index].as_py(),
                project=project,
                version=key_version,
            )
            ours_fields = layout.view_fields(view_name, checked)
            stored = {field: row.fields.get(field) for field in ours_fields}
            if key != row.key:
                differences.append(
                    f"{view.name}: the reader's Redis key differs (Feast {_hex(row.key)}, "
                    f"ours {_hex(key)})"
                )
            absent = [field for field, value in stored.items() if value is None]
            if absent:
                differences.append(
                    f"{view.name}: the reader asks for hash fields Feast does not write: "
                    + ", ".join(_field_label(field, names) for field in absent)
                )
            for field, name in names.items():
                raw = stored.get(field)
                if raw is None:
                    continue
                expected = table.column(name)[index].as_py()
                decoded = decode(raw)
                if decoded != expected:
                    differences.append(
                        f"{view.name}: {name} decodes to {decoded!r}, Feast wrote {expected!r}"
                    )
        return SelfCheck(view=view.name, differences=tuple(differences), skipped=tuple(skipped))
    except Exception as error:  # any failure means "not verified": fall back
        return _not_run(view, error)
