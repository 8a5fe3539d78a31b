"""Stage: build a point-in-time correct training set from any Feast repo.

The entity frame is a labels table (entity keys, ``event_timestamp``, a label column). The
features come from ``get_historical_features`` with a feature service, so they are the
definitions served online, joined as of each label's time. Nothing here knows feature or
entity names: they are read from the feature service.

Imported only by command bodies and ``training.pipeline`` (it imports pandas at module
level; feast stays inside functions).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.spark_io import uses_spark
from training.config import MissingPolicy, TrainingError

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore, FeatureView

TIMESTAMP = "event_timestamp"
ROW_ID = "training_row_id"  # carried through Feast to check that no label row is lost
# A source row older than the label by more than this is never a candidate in the audit.
_AUDIT_MARGIN = timedelta(days=1)


@dataclass(frozen=True)
class ServiceFeatures:
    """What a feature service asks for, resolved against the registry."""

    service: str
    refs: list[str]  # "view:feature", in the service's order
    columns: list[str]  # column of each ref with full feature names ("view__feature")
    names: list[str]  # short feature names: the model's columns
    join_keys: list[str]  # entity columns the labels must carry
    request_fields: list[str]  # request-time fields the labels must carry


@dataclass
class DatasetReport:
    """What happened to the label rows on their way into the training set."""

    label_rows: int = 0
    rejected_null_labels: int = 0
    duplicate_label_rows: int = 0
    missing_rows: int = 0
    missing_by_feature: dict[str, int] = field(default_factory=dict)
    dropped_missing_rows: int = 0
    leakage_rows: int = 0
    audited_features: list[str] = field(default_factory=list)
    rows: int = 0


@dataclass
class TrainingSet:
    """The joined training frame and its lineage."""

    frame: pd.DataFrame  # join keys, event_timestamp, features (float64), label (int64)
    features: ServiceFeatures
    label_column: str
    project: str
    report: DatasetReport

    @property
    def feature_names(self) -> list[str]:
        """The model's columns, in order."""
        return self.features.names

    def fingerprint(self) -> str:
        """SHA-256 of the frame's content (rows in order, all columns)."""
        hashed = pd.util.hash_pandas_object(self.frame, index=False).to_numpy()
        digest = hashlib.sha256(hashed.tobytes())
        digest.update(",".join(self.frame.columns).encode())
        return digest.hexdigest()


def resolve_service_features(store: FeatureStore, service_name: str) -> ServiceFeatures:
    """Read a feature service's features, entity keys and request fields from the registry.

    Raises:
        TrainingError: The service does not exist, or two features share a short name.
    """
    from feast.errors import FeatureServiceNotFoundException

    try:
        service = store.get_feature_service(service_name)
    except FeatureServiceNotFoundException as error:
        known = sorted(s.name for s in store.list_feature_services())
        raise TrainingError(
            f"feature service {service_name!r} not found in Feast project {store.project!r} "
            f"(known: {', '.join(known) or 'none'})"
        ) from error
    refs, columns, names = [], [], []
    join_keys: dict[str, None] = {}
    request_fields: dict[str, None] = {}
    for projection in service.feature_view_projections:
        view_name = projection.name_to_use()
        for feature in projection.features:
            refs.append(f"{view_name}:{feature.name}")
            columns.append(f"{view_name}__{feature.name}")
            names.append(feature.name)
        keys, fields = _projection_inputs(store, projection.name, projection.join_key_map)
        join_keys.update(dict.fromkeys(keys))
        request_fields.update(dict.fromkeys(fields))
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise TrainingError(
            f"feature service {service_name!r} has several features named "
            f"{', '.join(duplicated)}: the model needs distinct column names"
        )
    return ServiceFeatures(
        service=service_name,
        refs=refs,
        columns=columns,
        names=names,
        join_keys=list(join_keys),
        request_fields=[name for name in request_fields if name != TIMESTAMP],
    )


def _projection_inputs(
    store: FeatureStore, view_name: str, join_key_map: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Entity columns and request fields one projection needs in the entity frame."""
    from feast.errors import FeatureViewNotFoundException

    try:
        view = store.get_feature_view(view_name)
    except FeatureViewNotFoundException:
        odfv = store.get_on_demand_feature_view(view_name)
        keys: list[str] = []
        for source in odfv.source_feature_view_projections.values():
            source_keys, _ = _projection_inputs(store, source.name, source.join_key_map)
            keys.extend(source_keys)
        return keys, list(odfv.get_request_data_schema())
    keys = [join_key_map.get(column.name, column.name) for column in view.entity_columns]
    return keys, []


def load_labels(path: Path, *, required: list[str], label_column: str) -> tuple[pd.DataFrame, int]:
    """Read and check the labels table; return it with the count of rejected null labels.

    Raises:
        TrainingError: The file is missing or unreadable, columns are missing, timestamps
            are not datetimes, or labels are not 0/1.
    """
    if not path.is_file():
        raise TrainingError(f"labels table {path} does not exist (run `churn ingest` first?)")
    try:
        labels = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for a bad file
        raise TrainingError(f"labels table {path} is not readable Parquet: {error}") from error
    missing = [column for column in [*required, TIMESTAMP, label_column] if column not in labels]
    if missing:
        raise TrainingError(
            f"labels table {path} lacks column(s) {', '.join(missing)} "
            f"(has {', '.join(map(str, labels.columns))})"
        )
    if not pd.api.types.is_datetime64_any_dtype(labels[TIMESTAMP]):
        raise TrainingError(
            f"labels column {TIMESTAMP} must hold timestamps, not {labels[TIMESTAMP].dtype}"
        )
    labels = labels[[*required, TIMESTAMP, label_column]].copy()
    # Naive timestamps are taken as UTC, the contract's zone.
    labels[TIMESTAMP] = pd.to_datetime(labels[TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
    null_labels = labels[label_column].isna() | labels[TIMESTAMP].isna()
    null_keys = labels[required].isna().any(axis=1)
    rejected = int((null_labels | null_keys).sum())
    labels = labels.loc[~(null_labels | null_keys)]
    values = set(pd.unique(labels[label_column]).tolist())
    if not values <= {0, 1}:  # booleans compare equal to 0 and 1
        shown = ", ".join(map(repr, sorted(values - {0, 1}, key=repr)[:5]))
        raise TrainingError(f"label column {label_column!r} must be 0/1; found {shown}")
    labels[label_column] = labels[label_column].astype("int64")
    if labels.empty:
        raise TrainingError(f"labels table {path} has no usable rows ({rejected} rejected)")
    return labels.reset_index(drop=True), rejected


def build_training_set(
    store: FeatureStore,
    *,
    feature_service: str,
    labels_path: Path,
    label_column: str = "label",
    missing: MissingPolicy = "drop",
) -> TrainingSet:
    """Join a labels table with a feature service's features as of each label's time.

    Args:
        store: The feature store (DuckDB or any offline store supporting the created filter).
        feature_service: Name of the feature service whose features the model uses.
        labels_path: Parquet with the entity key(s), ``event_timestamp`` and the label.
        label_column: Name of the 0/1 label column.
        missing: ``drop`` rows with any missing feature, or ``keep`` them as NaN (for models
            that handle nulls). Both are counted in the report.

    Raises:
        TrainingError: Bad labels, unknown service, lost rows or non-numeric features.
    """
    features = resolve_service_features(store, feature_service)
    service = store.get_feature_service(feature_service)
    required = [*features.join_keys, *features.request_fields]
    labels, rejected = load_labels(labels_path, required=required, label_column=label_column)
    report = DatasetReport(label_rows=len(labels) + rejected, rejected_null_labels=rejected)
    report.duplicate_label_rows = int(labels.duplicated([*features.join_keys, TIMESTAMP]).sum())
    entity_frame = labels.assign(**{ROW_ID: np.arange(len(labels), dtype="int64")})

    if uses_spark(store):
        joined, audit = _retrieve_on_spark(
            store, service, entity_frame, columns=[*required, TIMESTAMP, *features.columns]
        )
    else:
        joined = _retrieve(store, service, entity_frame)
        audit = audit_point_in_time(store, joined, service=service)
    # Reported, not raised here: the pipeline logs the count on the run, then refuses.
    report.leakage_rows = audit.leaking_rows
    report.audited_features = audit.audited

    frame = joined[[*features.join_keys, TIMESTAMP, *features.columns, label_column]]
    frame = frame.rename(columns=dict(zip(features.columns, features.names, strict=True)))
    frame = _numeric_features(frame, features.names)
    nulls = frame[features.names].isna()
    report.missing_by_feature = {name: int(nulls[name].sum()) for name in features.names}
    incomplete = nulls.any(axis=1)
    report.missing_rows = int(incomplete.sum())
    if missing == "drop":
        frame = frame.loc[~incomplete]
        report.dropped_missing_rows = report.missing_rows
    frame = frame.reset_index(drop=True)
    report.rows = len(frame)
    if frame.empty:
        raise TrainingError(
            f"no training rows left: {report.missing_rows} of {len(labels)} label rows have "
            "missing features (is the offline table ingested for the labels' time range?)"
        )
    return TrainingSet(
        frame=frame,
        features=features,
        label_column=label_column,
        project=store.project,
        report=report,
    )


def _retrieve(
    store: FeatureStore, service: FeatureService, entity_frame: pd.DataFrame
) -> pd.DataFrame:
    """Point-in-time join through Feast; every label row must come back exactly once."""
    job = store.get_historical_features(
        entity_df=entity_frame,
        features=service,
        full_feature_names=True,
        # A value back-filled after the label time (created later) must not be used.
        filter_by_created_timestamp=True,
    )
    joined = job.to_df()
    ids = joined[ROW_ID]
    _check_returned_rows(
        returned=len(joined), distinct=int(ids.nunique()), expected=len(entity_frame)
    )
    return _in_label_order(joined)


def _check_returned_rows(*, returned: int, distinct: int, expected: int) -> None:
    """Every label row must come back exactly once (ids are 0..expected-1)."""
    if returned != expected or distinct != returned:
        raise TrainingError(
            f"the offline store returned {returned} rows for {expected} label rows "
            f"({expected - distinct} lost, {returned - distinct} duplicated)"
        )


def _in_label_order(joined: pd.DataFrame) -> pd.DataFrame:
    joined = joined.sort_values(ROW_ID, kind="stable").reset_index(drop=True)
    joined[TIMESTAMP] = pd.to_datetime(joined[TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
    return joined


def _retrieve_on_spark(
    store: FeatureStore, service: FeatureService, entity_frame: pd.DataFrame, *, columns: list[str]
) -> tuple[pd.DataFrame, LeakageAudit]:
    """The join and the audit on the cluster; rows arrive in bounded Arrow batches."""
    from training.spark_dataset import retrieve_on_spark

    label_column = [c for c in entity_frame.columns if c not in {*columns, ROW_ID}]
    retrieval = retrieve_on_spark(
        store, service, entity_frame, row_id=ROW_ID, columns=[ROW_ID, *columns, *label_column]
    )
    _check_returned_rows(
        returned=retrieval.rows, distinct=retrieval.distinct_row_ids, expected=len(entity_frame)
    )
    audit = LeakageAudit(leaking_rows=retrieval.leaking_rows, audited=retrieval.audited)
    return _in_label_order(retrieval.frame), audit


def _numeric_features(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Cast features to float64 (one dtype for training, signature and serving)."""
    bad = [name for name in names if not pd.api.types.is_numeric_dtype(frame[name])]
    if bad:
        raise TrainingError(
            f"feature(s) {', '.join(bad)} are not numeric; the model families here need numbers"
        )
    return frame.astype(dict.fromkeys(names, "float64"))


@dataclass(frozen=True)
class LeakageAudit:
    """Result of the point-in-time audit."""

    leaking_rows: int
    audited: list[str]  # feature refs that were checked against their source table


def audit_point_in_time(
    store: FeatureStore,
    joined: pd.DataFrame,
    *,
    service: FeatureService,
) -> LeakageAudit:
    """Count rows that use a feature value not available at their label time.

    Independently of Feast's join, each batch view's source table is read again; a used
    (non-null) value is legitimate only if its entity has a source row with that value,
    an event time at or before the label time (and within the view's ttl) and, when the
    source records it, a created time at or before the label time. On-demand features are
    computed from batch values and the label time: they are covered through their inputs
    when those are in the service too (as in ``churn_v1``); ``audited`` lists exactly which
    refs were checked.

    Args:
        store: The feature store.
        joined: Feast's output with full feature names, ``event_timestamp`` and the row id.
        service: The feature service used.
    """
    from feast.errors import FeatureViewNotFoundException

    leaking: set[int] = set()
    audited: list[str] = []
    for projection in service.feature_view_projections:
        try:
            view = store.get_feature_view(projection.name)
        except FeatureViewNotFoundException:
            continue  # on-demand: derived from audited inputs and the label time
        names = [feature.name for feature in projection.features]
        source = _read_source(store, view, joined[TIMESTAMP])
        keys = [column.name for column in view.entity_columns]
        label_keys = [projection.join_key_map.get(key, key) for key in keys]
        for name in names:
            column = f"{projection.name_to_use()}__{name}"
            if column not in joined:
                continue
            leaking |= _leaking_rows(joined, source, column, name, keys, label_keys, view)
            audited.append(f"{projection.name_to_use()}:{name}")
    return LeakageAudit(leaking_rows=len(leaking), audited=audited)


def _read_source(store: FeatureStore, view: FeatureView, times: pd.Series) -> pd.DataFrame:
    """All rows of a view's batch source that could serve the label times."""
    job, mapping = source_pull(store, view, label_times=(times.min(), times.max()))
    source = view.batch_source
    assert source is not None  # checked by source_pull
    frame = job.to_df().rename(columns=mapping)
    frame = frame.rename(columns={source.timestamp_field: "_source_time"})
    if source.created_timestamp_column:
        frame = frame.rename(columns={source.created_timestamp_column: "_source_created"})
    return frame


def source_pull(
    store: FeatureStore, view: FeatureView, *, label_times: tuple[pd.Timestamp, pd.Timestamp]
) -> tuple[Any, dict[str, str]]:
    """The offline store's job reading a view's source rows that could serve the label times.

    Returns:
        The retrieval job and the source's field mapping (source column -> feature name).

    Raises:
        TrainingError: The view has no batch source.
    """
    from feast.infra.offline_stores.offline_utils import get_offline_store_from_config

    source = view.batch_source
    if source is None:
        raise TrainingError(f"feature view {view.name!r} has no batch source to audit against")
    mapping = dict(source.field_mapping or {})
    reverse = {target: original for original, target in mapping.items()}
    keys = [column.name for column in view.entity_columns]
    names = [feature.name for feature in view.features]
    ttl = view.ttl or timedelta(0)
    offline = get_offline_store_from_config(store.config.offline_store)
    job = offline.pull_all_from_table_or_query(
        config=store.config,
        data_source=source,
        join_key_columns=[reverse.get(key, key) for key in keys],
        feature_name_columns=[reverse.get(name, name) for name in names],
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column or None,
        start_date=(label_times[0] - ttl - _AUDIT_MARGIN).to_pydatetime(),
        end_date=label_times[1].to_pydatetime(),
    )
    return job, mapping


def _leaking_rows(
    joined: pd.DataFrame,
    source: pd.DataFrame,
    column: str,
    name: str,
    keys: list[str],
    label_keys: list[str],
    view: FeatureView,
) -> set[int]:
    """Row ids whose value of one feature has no source row available at the label time."""
    used = joined.loc[joined[column].notna(), [ROW_ID, TIMESTAMP, *label_keys, column]]
    used = used.rename(columns=dict(zip(label_keys, keys, strict=True)))
    used = used.assign(_value=used[column].astype("float64"))
    candidates = source.loc[source[name].notna()].assign(_value=lambda s: s[name].astype("float64"))
    time_columns = [c for c in ("_source_time", "_source_created") if c in candidates]
    pairs = used.merge(candidates[[*keys, "_value", *time_columns]], on=[*keys, "_value"])
    label_time = pairs[TIMESTAMP]
    valid = pd.to_datetime(pairs["_source_time"], utc=True) <= label_time
    if "_source_created" in pairs:
        valid &= pd.to_datetime(pairs["_source_created"], utc=True) <= label_time
    if view.ttl:
        valid &= pd.to_datetime(pairs["_source_time"], utc=True) >= label_time - view.ttl
    legitimate = set(pairs.loc[valid, ROW_ID].tolist())
    return set(used[ROW_ID].tolist()) - legitimate


def report_as_params(report: DatasetReport) -> dict[str, Any]:
    """The report as flat MLflow params."""
    return {
        "data.label_rows": report.label_rows,
        "data.rejected_null_labels": report.rejected_null_labels,
        "data.duplicate_label_rows": report.duplicate_label_rows,
        "data.missing_rows": report.missing_rows,
        "data.dropped_missing_rows": report.dropped_missing_rows,
        "data.leakage_rows": report.leakage_rows,
    }
