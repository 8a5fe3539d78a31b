"""Moving data out of Spark on the spark profile without collecting it on the driver.

Feast's ``SparkRetrievalJob.to_df()`` ends in one ``toPandas()`` (or, with a staging
location, one whole-table Arrow read) on the driver (Feast issue #5671). Here the executors
write a result to the profile's staging location as Parquet, and the caller reads it back
as Arrow record batches of bounded size (or reads it again in Spark to aggregate it).

pyspark is imported only inside the functions that build Spark frames; pyarrow does the reading.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from core.compute import uses_spark
from core.errors import ConfigurationError

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.infra.offline_stores.offline_store import RetrievalJob
    from pyspark.sql import DataFrame as SparkFrame

# Rows per Arrow batch on the driver: 65k rows x a dozen columns is a few MB.
ARROW_BATCH_ROWS = 65_536


def staging_location(store: FeatureStore) -> str:
    """The spark profile's staging location.

    Raises:
        ConfigurationError: The offline store has no staging location.
    """
    location = getattr(store.config.offline_store, "staging_location", None)
    if not location:
        raise ConfigurationError(
            "the spark offline store needs a staging_location (CHURN_SPARK_STAGING) that the "
            "executors and this process can both reach"
        )
    return str(location)


def spark_uri(uri: str) -> str:
    """Spark's (Hadoop's) name for a staging URI: ``s3://`` is read through ``s3a://``."""
    return "s3a://" + uri.removeprefix("s3://") if uri.startswith("s3://") else uri


def _arrow_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem and path for a staging URI or a local absolute path."""
    if uri.startswith("s3a://"):
        uri = "s3://" + uri.removeprefix("s3a://")
    filesystem, path = pafs.FileSystem.from_uri(uri if "://" in uri else f"file://{uri}")
    return filesystem, path


@contextmanager
def staged_parquet(frame: SparkFrame, location: str, *, label: str) -> Iterator[str]:
    """Executors write ``frame`` as Parquet under ``location``; the files go afterwards.

    Yields:
        The URI (or local path) of the written folder.
    """
    uri = f"{location.rstrip('/')}/{label}-{uuid.uuid4().hex}"
    try:  # a job failing half-way leaves part files: they go too
        frame.write.parquet(spark_uri(uri))
        yield uri
    finally:
        _remove_staged(uri)


def _remove_staged(uri: str) -> None:
    filesystem, path = _arrow_filesystem(uri)
    if isinstance(filesystem, pafs.LocalFileSystem):
        shutil.rmtree(path, ignore_errors=True)
    elif filesystem.get_file_info(path).type != pafs.FileType.NotFound:
        filesystem.delete_dir(path)


def spark_session(store: FeatureStore) -> Any:
    """The spark profile's session (Feast's: the active one, else one from ``spark_conf``)."""
    from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
        get_spark_session_or_start_new_with_repoconfig,
    )

    return get_spark_session_or_start_new_with_repoconfig(store.config.offline_store)


@contextmanager
def entity_rows_for(store: FeatureStore, entity_df: Any, *, label: str) -> Iterator[Any]:
    """The entity rows to give ``get_historical_features``; on Spark, staged for the executors.

    Feast's Spark store turns a pandas entity frame into a local relation that the driver's
    JVM holds and ships with every task (1M label rows exhausted a 1 GB driver). On the
    spark profile the rows are written here, by pyarrow, to the staging location as Parquet
    (timestamps in UTC microseconds, which Spark reads), the executors read them, and the
    files go afterwards. Elsewhere, or when the rows already are a Spark frame, they are
    used as they are.

    Yields:
        The pandas frame, or a Spark frame over the staged rows.
    """
    if not uses_spark(store) or not isinstance(entity_df, pd.DataFrame):
        yield entity_df
        return
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(entity_df, preserve_index=False)
    utc_micros = pa.timestamp("us", tz="UTC")  # a naive time is taken as UTC, as Feast does
    for index, column in enumerate(table.schema):
        if pa.types.is_timestamp(column.type):
            # Spark holds microseconds: nanoseconds are truncated, as Spark's own reader would.
            micros = table.column(index).cast(utc_micros, safe=False)
            table = table.set_column(index, column.name, micros)
    uri = f"{staging_location(store).rstrip('/')}/{label}-entities-{uuid.uuid4().hex}"
    filesystem, path = _arrow_filesystem(uri)
    try:
        filesystem.create_dir(path)
        pq.write_table(
            table,
            f"{path}/part-00000.parquet",
            filesystem=filesystem,
            row_group_size=ARROW_BATCH_ROWS,
        )
        yield spark_session(store).read.parquet(spark_uri(uri))
    finally:
        _remove_staged(uri)


@contextmanager
def historical_features(
    store: FeatureStore, entity_df: Any, *, label: str, **options: Any
) -> Iterator[RetrievalJob]:
    """``store.get_historical_features`` with the entity rows staged on the spark profile.

    Args:
        store: The feature store.
        entity_df: Entity rows (pandas, or a Spark frame on the spark profile).
        label: Prefix of the staged entity rows' folder.
        **options: ``features``, ``full_feature_names``, ``filter_by_created_timestamp``...

    Yields:
        The retrieval job; read it (or stage it) inside the block.
    """
    with entity_rows_for(store, entity_df, label=label) as entity_rows:
        yield store.get_historical_features(entity_df=entity_rows, **options)


def iter_arrow_batches(
    uri: str, *, columns: list[str] | None = None, batch_rows: int = ARROW_BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """Read staged Parquet as record batches of at most ``batch_rows`` rows."""
    filesystem, path = _arrow_filesystem(uri)
    dataset = ds.dataset(path, filesystem=filesystem, format="parquet")
    yield from dataset.to_batches(columns=columns, batch_size=batch_rows)


@dataclass(frozen=True)
class StagedRetrieval:
    """A Feast retrieval written by the executors to the staging location."""

    uri: str
    frame: SparkFrame  # the staged rows, read back in Spark (for aggregates and audits)
    on_demand: list[Any] = field(default_factory=list)  # on-demand views to apply per batch
    full_feature_names: bool = True  # as the retrieval was asked (``view__feature`` names)

    def batches(
        self, columns: list[str], *, batch_rows: int = ARROW_BATCH_ROWS
    ) -> Iterator[pa.Table]:
        """The rows as Arrow tables of at most ``batch_rows`` rows, only ``columns`` kept.

        On-demand features are computed batch by batch on the driver, as Feast's own
        ``to_arrow()`` computes them on the whole table.
        """
        read = None if self.on_demand else [c for c in columns if c in self.frame.columns]
        for batch in iter_arrow_batches(self.uri, columns=read, batch_rows=batch_rows):
            table = _append_on_demand(
                pa.Table.from_batches([batch]),
                self.on_demand,
                full_feature_names=self.full_feature_names,
                wanted=dict.fromkeys(columns),
            )
            yield table.select([c for c in columns if c in table.column_names])

    def to_pandas(self, columns: list[str], *, batch_rows: int = ARROW_BATCH_ROWS) -> pd.DataFrame:
        """The kept columns as one pandas frame, built batch by batch."""
        parts = [table.to_pandas() for table in self.batches(columns, batch_rows=batch_rows)]
        if not parts:
            return pd.DataFrame(columns=columns)
        return pd.concat(parts, ignore_index=True)


class OnDemandOnExecutors:
    """``mapInArrow`` function adding a retrieval's on-demand features on the executors.

    The views travel as their registry protos and are rebuilt on each executor, as Feast's
    feature server rebuilds them; each batch gets the same ``transform_arrow`` that
    :meth:`StagedRetrieval.batches` applies on the driver. Only the service's features are
    added, cast to their declared types.
    """

    def __init__(
        self,
        views: list[Any],
        *,
        full_feature_names: bool,
        outputs: dict[str, pa.DataType | None],
    ) -> None:
        self._protos = [view.to_proto().SerializeToString() for view in views]
        self._full_feature_names = full_feature_names
        self._outputs = outputs

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Each batch with the on-demand feature columns appended."""
        from feast.on_demand_feature_view import OnDemandFeatureView
        from feast.protos.feast.core.OnDemandFeatureView_pb2 import (
            OnDemandFeatureView as OnDemandFeatureViewProto,
        )

        views = [
            OnDemandFeatureView.from_proto(OnDemandFeatureViewProto.FromString(proto))
            for proto in self._protos
        ]
        for batch in batches:
            table = _append_on_demand(
                pa.Table.from_batches([batch]),
                views,
                full_feature_names=self._full_feature_names,
                wanted=self._outputs,
            )
            yield from table.to_batches()


def _append_on_demand(
    table: pa.Table,
    views: list[Any],
    *,
    full_feature_names: bool,
    wanted: dict[str, pa.DataType | None],
) -> pa.Table:
    """``table`` with the wanted on-demand columns appended (cast where a type is given)."""
    for view in views:
        derived = view.transform_arrow(table, full_feature_names)
        for name, arrow_type in wanted.items():
            if name in derived.column_names and name not in table.column_names:
                column = derived[name]
                table = table.append_column(
                    name, column if arrow_type is None else column.cast(arrow_type)
                )
    return table


def _on_demand_outputs(views: list[Any], *, full_feature_names: bool) -> dict[str, pa.DataType]:
    """Column name and Arrow type of each on-demand feature a retrieval asked for."""
    from feast.types import from_feast_to_pyarrow_type

    outputs = {}
    for view in views:
        prefix = f"{view.projection.name_to_use()}__" if full_feature_names else ""
        for feature in view.projection.features:
            outputs[prefix + feature.name] = from_feast_to_pyarrow_type(feature.dtype)
    return outputs


def _add_on_demand_on_executors(
    joined: SparkFrame, views: list[Any], *, full_feature_names: bool
) -> SparkFrame:
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    outputs = _on_demand_outputs(views, full_feature_names=full_feature_names)
    added = [name for name in outputs if name not in joined.columns]
    outputs_added: dict[str, pa.DataType | None] = {name: outputs[name] for name in added}
    schema = StructType(
        [
            *joined.schema.fields,
            *[StructField(name, from_arrow_type(outputs[name]), True) for name in added],
        ]
    )
    apply = OnDemandOnExecutors(views, full_feature_names=full_feature_names, outputs=outputs_added)
    return joined.mapInArrow(apply, schema)


@contextmanager
def staged_retrieval(
    store: FeatureStore, job: RetrievalJob, *, label: str, on_demand_on_executors: bool = False
) -> Iterator[StagedRetrieval]:
    """Stage a Spark retrieval job and read it back; the files go afterwards.

    Args:
        store: A feature store on the spark profile.
        job: Its retrieval job.
        label: Prefix of the staged folder's name.
        on_demand_on_executors: Compute the on-demand features on the executors before
            staging, so the staged frame holds every feature (for Spark aggregates); by
            default they are computed batch by batch as the driver reads.

    Raises:
        ConfigurationError: The profile has no staging location.
    """
    joined: SparkFrame = job.to_spark_df()  # type: ignore[attr-defined]
    views = list(job.on_demand_feature_views)
    if on_demand_on_executors and views:
        joined = _add_on_demand_on_executors(
            joined, views, full_feature_names=job.full_feature_names
        )
        views = []
    with staged_parquet(joined, staging_location(store), label=label) as uri:
        staged = joined.sparkSession.read.parquet(spark_uri(uri))
        yield StagedRetrieval(
            uri=uri, frame=staged, on_demand=views, full_feature_names=job.full_feature_names
        )


def retrieval_to_pandas(
    store: FeatureStore, job: RetrievalJob, columns: list[str], *, label: str
) -> pd.DataFrame:
    """A retrieval job's rows as pandas: Feast's ``to_df()`` off Spark; on Spark, staged by
    the executors, read back in bounded Arrow batches (only ``columns``) and the staged
    files removed (Feast's ``to_df()`` leaves its copy behind).
    """
    if not uses_spark(store):
        return job.to_df()
    with staged_retrieval(store, job, label=label) as staged:
        return staged.to_pandas(columns)
