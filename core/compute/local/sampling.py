"""Entity samples and the latest row per entity on the local backend: DuckDB over Parquet.

Feast's own materialization loads every row of the range at once (upstream issue 6307).
:class:`ParquetLatestReader` splits the entities into ``chunks`` hash partitions instead;
DuckDB reads the file once per chunk, keeps the rows of that partition inside the range and
returns only each entity's latest row. All rows of an entity fall in the same partition, so
the latest row is exact, and the memory per chunk follows the chunk size, not the length of
the range.

The range and the tie-break are Feast's: ``start <= event time <= end`` (UTC), latest
event time first, then latest created time (missing created times last).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd
import pyarrow as pa
from feast import FileSource
from feast.data_format import ParquetFormat

from core.compute.sampling import (
    CREATED_COLUMN,
    EVENT_COLUMN,
    SourceColumns,
    entity_columns,
)
from core.errors import InputError, OfflineSourceError

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore, FeatureView


@dataclass(frozen=True)
class ChunkPlan:
    """What a range holds, counted before writing anything."""

    entities: int  # distinct entities with a row in the range
    rows: int  # rows in the range (with a join key)
    rejected_rows: int  # rows in the range without a join key (cannot be keyed online)
    chunks: int


def parquet_path(source: Any) -> str | None:
    """The local Parquet path of a Feast FileSource; None when DuckDB cannot read it plainly."""
    if not isinstance(source, FileSource):
        return None
    path = source.path
    is_parquet = isinstance(source.file_format, ParquetFormat) or (
        source.file_format is None and path.endswith(".parquet")
    )
    if not is_parquet:
        return None
    if path.startswith("file://"):
        return path.removeprefix("file://")
    return None if "://" in path else path


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _time_sql(column: str, kind: str) -> tuple[str, bool]:
    """SQL for a time column of DuckDB type ``kind``, and whether it is time-zone aware.

    Timestamps are used as stored: casting every row (Feast casts to TIMESTAMP) costs
    about four times the whole scan. Other types (strings, dates) are cast.
    """
    if "TZ" in kind or "TIME ZONE" in kind:
        return _quote(column), True
    if kind.startswith("TIMESTAMP"):
        return _quote(column), False
    return f"CAST({_quote(column)} AS TIMESTAMPTZ)", True


def _aware_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _naive_utc(moment: datetime) -> datetime:
    return _aware_utc(moment).replace(tzinfo=None)


class ParquetLatestReader:
    """The latest row per entity of a Parquet table inside ``[start, end]``, chunk by chunk.

    Args:
        path: The Parquet file (or glob) as the FileSource names it; DuckDB resolves a
            relative path against the current directory, as Feast's DuckDB store does.
        columns: Source columns to read.
        start: Start of the range (inclusive); naive times are UTC.
        end: End of the range (inclusive).
        chunk_rows: Target number of entities per chunk.
        threads: DuckDB threads (None: DuckDB's default, one per core).
        connection: A DuckDB connection (a private in-memory one by default).
    """

    def __init__(
        self,
        path: str,
        columns: SourceColumns,
        *,
        start: datetime,
        end: datetime,
        chunk_rows: int,
        threads: int | None = None,
        connection: duckdb.DuckDBPyConnection | None = None,
    ) -> None:
        self._path = path
        self._columns = columns
        self._start = _aware_utc(start)
        self._end = _aware_utc(end)
        self._types: dict[str, str] | None = None
        self._chunk_rows = chunk_rows
        self._connection = connection or duckdb.connect()
        # Naive timestamps are UTC (as for Feast), and aware ones come out in UTC.
        self._connection.execute("SET TimeZone = 'UTC'")
        if threads:
            self._connection.execute(f"SET threads = {int(threads)}")

    def _query(self, sql: str, parameters: dict[str, Any]) -> duckdb.DuckDBPyRelation:
        try:
            return self._connection.sql(sql, params=parameters)
        except duckdb.Error as error:
            raise OfflineSourceError(
                f"cannot read the offline source {self._path}: {error}"
            ) from error

    def _column_types(self) -> dict[str, str]:
        if self._types is None:
            described = self._query(
                "DESCRIBE SELECT * FROM read_parquet($path)", {"path": self._path}
            ).fetchall()
            self._types = {str(row[0]): str(row[1]).upper() for row in described}
            missing = [
                column
                for column in [
                    *self._columns.join_keys,
                    *self._columns.features,
                    self._columns.timestamp,
                    *([self._columns.created] if self._columns.created else []),
                ]
                if column not in self._types
            ]
            if missing:
                raise OfflineSourceError(
                    f"the offline source {self._path} has no column(s) {', '.join(missing)}"
                )
        return self._types

    def _time(self, column: str) -> tuple[str, bool]:
        return _time_sql(column, self._column_types().get(column, ""))

    def _source(self) -> str:
        """Rows of the range: join keys and features named as the view names them."""
        columns = self._columns
        event = self._time(columns.timestamp)[0]
        created = self._time(columns.created)[0] if columns.created else "NULL"
        selected = [
            *(f"{_quote(source)} AS {_quote(name)}" for source, name in columns.join_keys.items()),
            *(f"{_quote(source)} AS {_quote(name)}" for source, name in columns.features.items()),
            f"{event} AS {EVENT_COLUMN}",
            f"{created} AS {CREATED_COLUMN}",
        ]
        return (
            f"SELECT {', '.join(selected)} FROM read_parquet($path) "
            f"WHERE {event} BETWEEN $start AND $end"
        )

    def _parameters(self) -> dict[str, Any]:
        if self._time(self._columns.timestamp)[1]:
            return {"path": self._path, "start": self._start, "end": self._end}
        # A naive column holds UTC times: compare it with naive UTC bounds.
        start, end = _naive_utc(self._start), _naive_utc(self._end)
        return {"path": self._path, "start": start, "end": end}

    def _keys(self) -> list[str]:
        return [_quote(name) for name in self._columns.join_keys.values()]

    def plan(self) -> ChunkPlan:
        """Count entities, rows and rows without a join key in the range."""
        keys = self._keys()
        missing_key = " OR ".join(f"{key} IS NULL" for key in keys)
        # One key counts as is; several as a row value.
        distinct = keys[0] if len(keys) == 1 else f"({', '.join(keys)})"
        rows, rejected, entities = self._fetch_one(
            f"SELECT count(*), count(*) FILTER (WHERE {missing_key}), "
            f"count(DISTINCT {distinct}) FILTER (WHERE NOT ({missing_key})) "
            f"FROM ({self._source()})"
        )
        chunks = max(1, math.ceil(entities / self._chunk_rows))
        return ChunkPlan(
            entities=entities, rows=rows - rejected, rejected_rows=rejected, chunks=chunks
        )

    def _fetch_one(self, sql: str) -> tuple[int, ...]:
        (row,) = self._query(sql, self._parameters()).fetchall()
        return tuple(int(value or 0) for value in row)

    def read_chunk(self, index: int, chunks: int) -> pa.Table:
        """The latest row of every entity of hash partition ``index`` of ``chunks``."""
        keys = self._keys()
        partition = f"hash({', '.join(keys)}) % {chunks} = {index}" if chunks > 1 else "TRUE"
        not_null = " AND ".join(f"{key} IS NOT NULL" for key in keys)
        sql = (
            f"SELECT * FROM ({self._source()}) WHERE {not_null} AND {partition} "
            f"QUALIFY row_number() OVER (PARTITION BY {', '.join(keys)} "
            f"ORDER BY {EVENT_COLUMN} DESC, {CREATED_COLUMN} DESC NULLS LAST) = 1"
        )
        return self._query(sql, self._parameters()).to_arrow_table()

    def close(self) -> None:
        """Release the DuckDB connection."""
        self._connection.close()


def sample_parquet_entities(
    path: str, join_keys: dict[str, str], *, timestamp: str, at: datetime, size: int, seed: int
) -> pa.Table:
    """Up to ``size`` random distinct entities with a row at or before ``at``.

    Args:
        path: The Parquet source.
        join_keys: Source column -> join key name.
        timestamp: The source's event-time column.
        at: Only entities seen at or before this time.
        size: How many entities.
        seed: Seed of the sample (the same seed gives the same entities).

    Raises:
        OfflineSourceError: The file cannot be read.
    """
    connection = duckdb.connect()
    try:
        # One thread: a seeded reservoir sample is only repeatable single-threaded.
        connection.execute("SET TimeZone = 'UTC'; SET threads = 1")
        keys = ", ".join(
            f"{_quote(source)} AS {_quote(name)}" for source, name in join_keys.items()
        )
        not_null = " AND ".join(f"{_quote(source)} IS NOT NULL" for source in join_keys)
        described = connection.sql(
            "DESCRIBE SELECT * FROM read_parquet($path)", params={"path": path}
        ).fetchall()
        kind = {str(row[0]): str(row[1]).upper() for row in described}.get(timestamp, "")
        event, aware = _time_sql(timestamp, kind)
        sql = (
            f"SELECT * FROM (SELECT DISTINCT {keys} FROM read_parquet($path) "
            f"WHERE {not_null} AND {event} <= $at ORDER BY ALL) "
            f"USING SAMPLE reservoir({int(size)} ROWS) REPEATABLE ({int(seed)})"
        )
        bound = _aware_utc(at) if aware else _naive_utc(at)
        return connection.sql(sql, params={"path": path, "at": bound}).to_arrow_table()
    except duckdb.Error as error:
        raise OfflineSourceError(f"cannot read the offline source {path}: {error}") from error
    finally:
        connection.close()


class LocalSampling:
    """:class:`core.compute.sampling.SamplingCompute` on the local backend."""

    store: FeatureStore

    def sample_entities(
        self, view: FeatureView, *, at: datetime, size: int, seed: int
    ) -> list[dict[str, Any]]:
        """Up to ``size`` random distinct entities with a source row at or before ``at``.

        Raises:
            InputError: The view's source is not a local Parquet file.
            OfflineSourceError: The file cannot be read.
        """
        path = parquet_path(view.batch_source)
        if path is None:
            raise InputError(f"feature view {view.name}: its source is not a local Parquet file")
        columns = entity_columns(view)
        table = sample_parquet_entities(
            path, columns.join_keys, timestamp=columns.timestamp, at=at, size=size, seed=seed
        )
        rows: list[dict[str, Any]] = table.to_pylist()
        return rows

    def point_in_time_values(
        self,
        entity_rows: pd.DataFrame,
        *,
        service: FeatureService,
        columns: list[str],
        label: str,
    ) -> pd.DataFrame:
        """The service's point-in-time values for the entity rows (Feast's ``to_df()``)."""
        job = self.store.get_historical_features(entity_df=entity_rows, features=service)
        frame: pd.DataFrame = job.to_df()
        return frame[[column for column in columns if column in frame.columns]]
