"""The samples ``churn drift`` compares when no files are given.

Reference: the champion's training window, read from its MLflow lineage (core.lineage:
the version's feature service and features, the training run's window and labels path)
and rebuilt through the same Feast feature service: the labels
of that window are the entity rows of ``get_historical_features``, as in training.

Current: the last ``window`` of offline snapshots (the entity keys and timestamps of the
service's batch sources, joined through the same service), or the serving prediction log
(``<data_dir>/predictions/date=YYYY-MM-DD/*.parquet``), which already holds the feature
values and the score the model saw.

Imported only by command bodies (pandas at module level; feast and mlflow inside).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.lineage import LineageError, ModelLineage, TrainingWindow
from monitoring.statistics import DriftInputError

if TYPE_CHECKING:
    from feast import FeatureStore
    from mlflow import MlflowClient

    from core.feast_adapter.services import ServiceFeatures

TIMESTAMP = "event_timestamp"
SCORE_COLUMN = "churn_probability"


@dataclass(frozen=True)
class ChampionLineage:
    """Where the served model's training data came from."""

    model_name: str
    alias: str
    version: str
    run_id: str
    feature_service: str
    feast_project: str | None
    features: list[str]  # the model's columns, in order
    labels_path: Path
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    test_roc_auc: float | None

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for reports."""
        return {
            "model": f"{self.model_name}@{self.alias} (version {self.version})",
            "run_id": self.run_id,
            "feature_service": self.feature_service,
            "train_window": [self.train_start.isoformat(), self.train_end.isoformat()],
            "labels_path": str(self.labels_path),
        }


def _utc(value: str | datetime | pd.Timestamp) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def load_champion_lineage(client: MlflowClient, model_name: str, alias: str) -> ChampionLineage:
    """Read the aliased version's training window and feature service from MLflow.

    Raises:
        DriftInputError: No such model or alias, or the training run lacks lineage.
    """
    from training import alias_version

    version = alias_version(client, model_name, alias)
    if version is None:
        raise DriftInputError(
            f"model {model_name!r} has no {alias!r} version: train and promote one first "
            "(`churn train`), or compare files with --reference/--current"
        )
    if not version.run_id:
        raise DriftInputError(f"{model_name} version {version.version} has no training run")
    run = client.get_run(version.run_id)
    owner = f"{model_name} version {version.version}"
    try:
        model = ModelLineage.from_tags(version.tags, owner=owner)
        # Training logs the window as both tags and params.
        window = TrainingWindow.from_tags(
            {**run.data.tags, **run.data.params},
            owner=f"training run {version.run_id} of {owner}",
        )
    except LineageError as error:
        raise DriftInputError(f"{error}: its training window cannot be rebuilt") from error
    test_auc = run.data.metrics.get("test_roc_auc")
    return ChampionLineage(
        model_name=model_name,
        alias=alias,
        version=str(version.version),
        run_id=version.run_id,
        feature_service=model.feature_service,
        feast_project=model.project,
        features=list(model.features),
        labels_path=window.labels_path,
        train_start=pd.Timestamp(window.train.start),
        train_end=pd.Timestamp(window.train.end),
        test_roc_auc=float(test_auc) if test_auc is not None else None,
    )


def service_features(store: FeatureStore, service_name: str) -> ServiceFeatures:
    """The adapter's resolution, its error as drift's input error."""
    from core.feast_adapter.services import FeatureServiceError, resolve_service_features

    try:
        return resolve_service_features(store, service_name)
    except FeatureServiceError as error:
        raise DriftInputError(str(error)) from error


def _retrieve(
    store: FeatureStore,
    features: ServiceFeatures,
    entity_rows: pd.DataFrame,
    *,
    as_available_then: bool,
) -> pd.DataFrame:
    """Join entity rows through the feature service; columns: keys, timestamp, features.

    Args:
        store: The feature store.
        features: The service's features.
        entity_rows: Keys and timestamps to join at.
        as_available_then: Only values that had arrived by each row's time (``created`` at
            or before it), as training saw them. False joins each snapshot at its own event
            time whenever it arrived: the current window judges the data that came in,
            late batches included, not what was known at its event time.
    """
    from core.compute.spark.io import retrieval_to_pandas

    job = store.get_historical_features(
        entity_df=entity_rows,
        features=features.feast_service,
        full_feature_names=True,
        filter_by_created_timestamp=as_available_then,
    )
    joined = retrieval_to_pandas(
        store, job, [*features.join_keys, TIMESTAMP, *features.columns], label="drift"
    )
    if len(joined) != len(entity_rows):
        raise DriftInputError(
            f"the offline store returned {len(joined)} rows for {len(entity_rows)} entity rows"
        )
    renamed = joined.rename(columns=dict(zip(features.columns, features.names, strict=True)))
    renamed[TIMESTAMP] = pd.to_datetime(renamed[TIMESTAMP], utc=True)
    return renamed[[*features.join_keys, TIMESTAMP, *features.names]].reset_index(drop=True)


def champion_service_features(store: FeatureStore, lineage: ChampionLineage) -> ServiceFeatures:
    """The champion's feature service, resolved in the configured store.

    Raises:
        DriftInputError: The champion was trained on another Feast project, or its service
            is unknown.
    """
    if lineage.feast_project and lineage.feast_project != store.project:
        raise DriftInputError(
            f"the champion was trained on Feast project {lineage.feast_project!r}, the "
            f"configured store is {store.project!r} (check CHURN_FEAST_* settings)"
        )
    return service_features(store, lineage.feature_service)


def build_reference(store: FeatureStore, lineage: ChampionLineage) -> pd.DataFrame:
    """The champion's training rows, rebuilt through its feature service.

    Raises:
        DriftInputError: Labels missing, another Feast project, or no label in the window.
    """
    features = champion_service_features(store, lineage)
    if not lineage.labels_path.is_file():
        raise DriftInputError(f"the champion's labels table {lineage.labels_path} is missing")
    labels = pd.read_parquet(lineage.labels_path)
    keys = [*features.join_keys, *features.request_fields]
    missing = [column for column in [*keys, TIMESTAMP] if column not in labels.columns]
    if missing:
        raise DriftInputError(f"labels table {lineage.labels_path} lacks {', '.join(missing)}")
    stamps = pd.to_datetime(labels[TIMESTAMP], utc=True)
    in_window = (stamps >= lineage.train_start) & (stamps <= lineage.train_end)
    rows = labels.loc[in_window, [*keys, TIMESTAMP]].assign(**{TIMESTAMP: stamps[in_window]})
    if rows.empty:
        raise DriftInputError(
            f"no label rows in the champion's training window {lineage.train_start} - "
            f"{lineage.train_end} in {lineage.labels_path}"
        )
    return _retrieve(store, features, rows.reset_index(drop=True), as_available_then=True)


def snapshot_sources(store: FeatureStore, service_name: str) -> list[tuple[Any, list[str]]]:
    """(batch source, join keys) of each stored view behind the service.

    Raises:
        DriftInputError: A view's source is not a file table (a path, not a query).
    """
    from feast import FileSource
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    service = service_features(store, service_name).feast_service
    # On-demand views compute from request data and other views: no table of their own.
    on_demand = {view.name for view in store.list_on_demand_feature_views()}
    views = []
    for projection in service.feature_view_projections:
        if projection.name in on_demand:
            continue
        view = store.get_feature_view(projection.name)
        source = view.batch_source
        # The spark profile's SparkSource reads the same table (a path, not a query).
        if not isinstance(source, FileSource | SparkSource) or not source.path:
            raise DriftInputError(
                f"feature view {view.name} reads {type(source).__name__}; snapshot windows "
                "need file sources (export the window and use --reference/--current)"
            )
        keys = [projection.join_key_map.get(c.name, c.name) for c in view.entity_columns]
        views.append((source, keys))
    return views


def _snapshot_files(store: FeatureStore, service_name: str) -> list[tuple[Path, str, list[str]]]:
    """(file, timestamp column, join keys) of each batch source behind the service."""
    return [
        (Path(source.path), source.timestamp_field, keys)
        for source, keys in snapshot_sources(store, service_name)
    ]


def build_current_from_snapshots(
    store: FeatureStore,
    service_name: str,
    *,
    window: timedelta,
    until: datetime | None = None,
) -> tuple[pd.DataFrame, tuple[pd.Timestamp, pd.Timestamp]]:
    """Snapshots of the last ``window`` joined through the feature service.

    The window ends at ``until`` or, by default, at the newest snapshot, so a batch that
    was ingested late is still judged on its own days.

    Raises:
        DriftInputError: A source file is missing or the window holds no snapshot.
    """
    features = service_features(store, service_name)
    frames = []
    for path, timestamp_field, keys in _snapshot_files(store, service_name):
        if not path.exists():
            raise DriftInputError(f"offline table {path} does not exist (run `churn ingest`)")
        table = pd.read_parquet(path, columns=[*keys, timestamp_field])
        frames.append(
            table.rename(columns={timestamp_field: TIMESTAMP}).assign(
                **{TIMESTAMP: lambda frame: pd.to_datetime(frame[TIMESTAMP], utc=True)}
            )
        )
    if not frames:
        raise DriftInputError(f"feature service {service_name} reads no batch source")
    snapshots = pd.concat(frames, ignore_index=True).drop_duplicates()
    end = _utc(until) if until is not None else snapshots[TIMESTAMP].max()
    start = end - pd.Timedelta(window)
    rows = snapshots.loc[(snapshots[TIMESTAMP] > start) & (snapshots[TIMESTAMP] <= end)]
    if rows.empty:
        raise DriftInputError(f"no offline snapshot between {start} and {end}")
    current = _retrieve(store, features, rows.reset_index(drop=True), as_available_then=False)
    return current, (start, end)


def read_prediction_log(
    predictions_dir: Path,
    *,
    window: timedelta,
    until: datetime | None = None,
    memory_pool: Any = None,
) -> tuple[pd.DataFrame, tuple[pd.Timestamp, pd.Timestamp]]:
    """Predictions of the last ``window`` (ending at ``until`` or the newest prediction).

    Only the ``date=`` partitions that can overlap the window are opened, and they are
    streamed through a pyarrow dataset: one pass over the timestamp column for the newest
    prediction (when ``until`` is not given), one filtered scan for the window's rows. Only
    those rows are ever held in memory, however many files a day has. Files written with
    other model features are read with their columns unified (missing ones are null).

    Args:
        predictions_dir: Root of the ``date=YYYY-MM-DD`` partitions.
        window: Length of the window.
        until: End of the window (default: the newest prediction).
        memory_pool: The pyarrow memory pool to scan with (default: pyarrow's).

    Raises:
        DriftInputError: No prediction log, or no prediction in the window.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    partitions = sorted(predictions_dir.glob("date=*"))
    if not partitions:
        raise DriftInputError(f"no prediction log under {predictions_dir} (is serving running?)")
    dates = [pd.Timestamp(path.name.removeprefix("date="), tz="UTC") for path in partitions]
    end_date = _utc(until).normalize() if until is not None else max(dates)
    first_date = end_date - pd.Timedelta(window) - pd.Timedelta(days=1)
    chosen = [
        path for path, date in zip(partitions, dates, strict=True) if first_date <= date <= end_date
    ]
    files = [str(file) for path in chosen for file in sorted(path.glob("*.parquet"))]
    if not files:
        raise DriftInputError(f"no prediction files under {predictions_dir} in the window")
    try:
        schema = pa.unify_schemas([pq.read_schema(file) for file in files])
        dataset = ds.dataset(files, schema=schema, format="parquet")
    except (pa.ArrowInvalid, OSError) as error:
        raise DriftInputError(f"prediction log under {predictions_dir}: {error}") from error
    stamp = ds.field(TIMESTAMP)
    nanoseconds = pa.timestamp("ns", tz="UTC")
    if until is not None:
        end = _utc(until)
    else:
        newest: int | None = None
        scanner = dataset.scanner(columns=[TIMESTAMP], memory_pool=memory_pool)
        for batch in scanner.to_batches():
            value = pc.max(pc.cast(batch.column(0), nanoseconds)).value
            if value is not None and (newest is None or value > newest):
                newest = value
        if newest is None:
            raise DriftInputError(f"no prediction with a timestamp in {predictions_dir}")
        end = pd.Timestamp(newest, tz="UTC")
    start = end - pd.Timedelta(window)
    low, high = (pa.scalar(stamp_.value, nanoseconds) for stamp_ in (start, end))
    table = dataset.scanner(
        filter=(stamp > low) & (stamp <= high), memory_pool=memory_pool
    ).to_table()
    if table.num_rows == 0:
        raise DriftInputError(f"no prediction between {start} and {end} in {predictions_dir}")
    rows = table.to_pandas()
    rows[TIMESTAMP] = pd.to_datetime(rows[TIMESTAMP], utc=True)
    return rows.reset_index(drop=True), (start, end)


def score_rows(model: Any, frame: pd.DataFrame, features: list[str]) -> pd.Series:
    """Churn probability of each row with all features present (NaN for the others)."""
    complete = frame[features].notna().all(axis=1).to_numpy()
    scores = np.full(len(frame), np.nan)
    if complete.any():
        inputs = frame.loc[complete, features].astype("float64")
        scores[complete] = model.predict_proba(inputs)[:, 1]
    return pd.Series(scores, index=frame.index, name=SCORE_COLUMN)
