"""The samples ``churn drift`` compares when no files are given, and the champion's scorer.

Reference: the champion's training window, read from its MLflow lineage (core.lineage:
the version's feature service and features, the training run's window and labels path)
and rebuilt through the same Feast feature service: the labels of that window are the
entity rows of the point-in-time join, as in training.

Current: the last ``window`` of offline snapshots (the entity keys and timestamps of the
service's batch sources, joined through the same service), or the serving prediction log
(``<data_dir>/predictions/date=YYYY-MM-DD/*.parquet``), which already holds the feature
values and the score the model saw.

The offline windows are built and held by the offline-compute backend (:mod:`core.compute`):
in this process, or staged on the cluster until the caller's ``ExitStack`` closes.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from core.compute.statistics import (
    FrameSample,
    Sample,
    SnapshotSource,
    StatisticsCompute,
)
from core.errors import InputError, LineageError, ModelNotFoundError
from core.estimate_shift import CalibrationTerm
from core.estimate_support import ranges_from_metrics
from core.feast_adapter.services import ServiceFeatures, resolve_service_features
from core.lineage import ModelLineage, TrainingWindow
from core.tables import read_time_window

if TYPE_CHECKING:
    from feast import FeatureStore

    from core.models import ModelRegistry

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
    estimate_term: CalibrationTerm = field(default_factory=CalibrationTerm)  # estimate_shift
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # estimate_support

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


def load_champion_lineage(registry: ModelRegistry, model_name: str, alias: str) -> ChampionLineage:
    """Read the aliased version's training window and feature service from MLflow.

    Raises:
        ModelNotFoundError: No such model or alias.
        LineageError: The version or its training run lacks lineage.
    """
    version = registry.find(model_name, alias=alias)
    if version is None:
        raise ModelNotFoundError(
            f"model {model_name!r} has no {alias!r} version: train and promote one first "
            "(`churn train`), or compare files with --reference/--current"
        )
    owner = f"{model_name} version {version.version}"
    if not version.run_id:
        raise LineageError(f"{owner} has no training run")
    run = registry.client.get_run(version.run_id)
    try:
        model = ModelLineage.from_tags(version.tags, owner=owner)
        # Training logs the window as both tags and params.
        window = TrainingWindow.from_tags(
            {**run.data.tags, **run.data.params},
            owner=f"training run {version.run_id} of {owner}",
        )
    except LineageError as error:
        raise LineageError(f"{error}: its training window cannot be rebuilt") from error
    test_auc = run.data.metrics.get("test_roc_auc")
    return ChampionLineage(
        model_name=model_name,
        alias=alias,
        version=version.version,
        run_id=version.run_id,
        feature_service=model.feature_service,
        feast_project=model.project,
        features=list(model.features),
        labels_path=window.labels_path,
        train_start=pd.Timestamp(window.train.start),
        train_end=pd.Timestamp(window.train.end),
        test_roc_auc=float(test_auc) if test_auc is not None else None,
        estimate_term=CalibrationTerm.from_metrics(dict(run.data.metrics)),
        ranges=ranges_from_metrics(dict(run.data.metrics)),
    )


def champion_service_features(store: FeatureStore, lineage: ChampionLineage) -> ServiceFeatures:
    """The champion's feature service, resolved in the configured store.

    Raises:
        InputError: The champion was trained on another Feast project.
        FeatureServiceError: Its service is unknown.
    """
    if lineage.feast_project and lineage.feast_project != store.project:
        raise InputError(
            f"the champion was trained on Feast project {lineage.feast_project!r}, the "
            f"configured store is {store.project!r} (check CHURN_FEAST_* settings)"
        )
    return resolve_service_features(store, lineage.feature_service)


def _join(
    compute: StatisticsCompute,
    features: ServiceFeatures,
    entity_rows: Sample,
    *,
    as_available_then: bool,
    stack: ExitStack,
) -> Sample:
    """Join entity rows through the service; one row per entity row, or an error."""
    joined = compute.join_features(
        features, entity_rows, as_available_then=as_available_then, stack=stack
    )
    if joined.rows != entity_rows.rows:
        raise InputError(
            f"the offline store returned {joined.rows} rows for {entity_rows.rows} entity rows"
        )
    return joined


def build_reference(
    compute: StatisticsCompute, store: FeatureStore, lineage: ChampionLineage, *, stack: ExitStack
) -> Sample:
    """The champion's training rows, rebuilt through its feature service.

    The labels of the training window are read here (the table training read, where its
    lineage points) and joined as they were available then (``created`` at or before each
    label's time), as training joined them.

    Raises:
        InputError: Labels missing, another Feast project, or no label in the window.
    """
    features = champion_service_features(store, lineage)
    keys = [*features.join_keys, *features.request_fields]
    try:
        labels = read_time_window(
            lineage.labels_path,
            list(dict.fromkeys([*keys, TIMESTAMP])),
            start=lineage.train_start,
            end=lineage.train_end,
        )
    except InputError as error:
        raise InputError(f"the champion's labels: {error}") from error
    if labels.empty:
        raise InputError(
            f"no label rows in the champion's training window {lineage.train_start} - "
            f"{lineage.train_end} in {lineage.labels_path}"
        )
    return _join(compute, features, FrameSample(labels), as_available_then=True, stack=stack)


def snapshot_sources(store: FeatureStore, service_name: str) -> list[SnapshotSource]:
    """The batch source and join keys of each stored view behind the service.

    Raises:
        InputError: A view's source is not a table read by path (a query, a warehouse).
    """
    service = resolve_service_features(store, service_name).feast_service
    # On-demand views compute from request data and other views: no table of their own.
    on_demand = {view.name for view in store.list_on_demand_feature_views()}
    sources = []
    for projection in service.feature_view_projections:
        if projection.name in on_demand:
            continue
        view = store.get_feature_view(projection.name)
        source = view.batch_source
        # Each profile's batch source reads the same table by its path.
        if not getattr(source, "path", None):
            raise InputError(
                f"feature view {view.name} reads {type(source).__name__}; snapshot windows "
                "need file sources (export the window and use --reference/--current)"
            )
        keys = [projection.join_key_map.get(c.name, c.name) for c in view.entity_columns]
        sources.append(SnapshotSource(source=source, keys=keys))
    return sources


def build_current_from_snapshots(
    compute: StatisticsCompute,
    store: FeatureStore,
    service_name: str,
    *,
    window: timedelta,
    until: datetime | None = None,
    stack: ExitStack,
) -> tuple[Sample, tuple[pd.Timestamp, pd.Timestamp]]:
    """Snapshots of the last ``window`` joined through the feature service.

    The window ends at ``until`` or, by default, at the newest snapshot, so a batch that
    was ingested late is still judged on its own days. Each snapshot is joined at its own
    event time whenever it arrived: the current window judges the data that came in, late
    batches included, not what was known at its event time.

    Raises:
        InputError: A source table is missing, the service needs request fields, or the
            window holds no snapshot.
    """
    features = resolve_service_features(store, service_name)
    sources = snapshot_sources(store, service_name)
    if not sources:
        raise InputError(f"feature service {service_name} reads no batch source")
    if features.request_fields:  # the request time is event_timestamp, not listed here
        raise InputError(
            f"feature service {service_name} needs request field(s) "
            f"{', '.join(features.request_fields)}, which offline snapshots do not carry"
        )
    rows, (start, end) = compute.snapshot_window(sources, window=window, until=until)
    if rows.rows == 0:
        raise InputError(f"no offline snapshot between {start} and {end}")
    current = _join(compute, features, rows, as_available_then=False, stack=stack)
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
        InputError: No prediction log, or no prediction in the window.
    """
    partitions = sorted(predictions_dir.glob("date=*"))
    if not partitions:
        raise InputError(f"no prediction log under {predictions_dir} (is serving running?)")
    dates = [pd.Timestamp(path.name.removeprefix("date="), tz="UTC") for path in partitions]
    end_date = _utc(until).normalize() if until is not None else max(dates)
    first_date = end_date - pd.Timedelta(window) - pd.Timedelta(days=1)
    chosen = [
        path for path, date in zip(partitions, dates, strict=True) if first_date <= date <= end_date
    ]
    files = [str(file) for path in chosen for file in sorted(path.glob("*.parquet"))]
    if not files:
        raise InputError(f"no prediction files under {predictions_dir} in the window")
    try:
        schema = pa.unify_schemas([pq.read_schema(file) for file in files])
        dataset = ds.dataset(files, schema=schema, format="parquet")
    except (pa.ArrowInvalid, OSError) as error:
        raise InputError(f"prediction log under {predictions_dir}: {error}") from error
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
            raise InputError(f"no prediction with a timestamp in {predictions_dir}")
        end = pd.Timestamp(newest, tz="UTC")
    start = end - pd.Timedelta(window)
    low, high = (pa.scalar(stamp_.value, nanoseconds) for stamp_ in (start, end))
    table = dataset.scanner(
        filter=(stamp > low) & (stamp <= high), memory_pool=memory_pool
    ).to_table()
    if table.num_rows == 0:
        raise InputError(f"no prediction between {start} and {end} in {predictions_dir}")
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


class ChampionScorer:
    """The champion's churn probability of each row (:func:`score_rows`), as a backend's
    :class:`core.compute.statistics.Scorer`: it pickles, so it can run where the rows are."""

    def __init__(self, model: Any, features: list[str]) -> None:
        self._model = model
        self._features = features

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        """One probability per row, NaN where a feature is missing."""
        return score_rows(self._model, frame, self._features).to_numpy(dtype=np.float64)
