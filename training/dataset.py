"""Stage: build a point-in-time correct training set from any Feast repo.

The entity frame is a labels table (entity keys, ``event_timestamp``, a label column). The
features come from ``get_historical_features`` with a feature service, so they are the
definitions served online, joined as of each label's time. Nothing here knows feature or
entity names: they are read from the feature service (resolved by
``core.feast_adapter.services``, as every stage does). The point-in-time audit of the
joined rows is ``training.leakage``. The join runs on the store's offline-compute backend
(:mod:`core.compute`), the same code for every profile.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from feast import FeatureStore

from core.compute import offline_compute
from core.errors import InputError, TableReadError
from core.feast_adapter.services import ServiceFeatures, resolve_service_features
from core.tables import LABEL
from training.config import MissingPolicy
from training.leakage import ROW_ID, TIMESTAMP, LeakageAudit, audit_point_in_time

__all__ = [
    "ROW_ID",
    "TIMESTAMP",
    "DatasetReport",
    "LeakageAudit",
    "ServiceFeatures",
    "TrainingSet",
    "audit_point_in_time",
    "build_training_set",
    "load_labels",
    "report_as_params",
]


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


def load_labels(path: Path, *, required: list[str], label_column: str) -> tuple[pd.DataFrame, int]:
    """Read and check the labels table; return it with the count of rejected null labels.

    Raises:
        TableReadError: The file is missing or unreadable, columns are missing, or
            timestamps are not datetimes.
        InputError: Labels are not 0/1, or no row is usable.
    """
    if not path.is_file():
        raise TableReadError(f"labels table {path} does not exist (run `churn ingest` first?)")
    try:
        labels = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for a bad file
        raise TableReadError(f"labels table {path} is not readable Parquet: {error}") from error
    missing = [column for column in [*required, TIMESTAMP, label_column] if column not in labels]
    if missing:
        raise TableReadError(
            f"labels table {path} lacks column(s) {', '.join(missing)} "
            f"(has {', '.join(map(str, labels.columns))})"
        )
    if not pd.api.types.is_datetime64_any_dtype(labels[TIMESTAMP]):
        raise TableReadError(
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
        raise InputError(f"label column {label_column!r} must be 0/1; found {shown}")
    labels[label_column] = labels[label_column].astype("int64")
    if labels.empty:
        raise InputError(f"labels table {path} has no usable rows ({rejected} rejected)")
    return labels.reset_index(drop=True), rejected


def build_training_set(
    store: FeatureStore,
    *,
    feature_service: str,
    labels_path: Path,
    label_column: str = LABEL,
    missing: MissingPolicy = "drop",
) -> TrainingSet:
    """Join a labels table with a feature service's features as of each label's time.

    The join, the row count and the leakage audit run on the store's offline-compute
    backend (:func:`core.compute.offline_compute`): in this process, or on the cluster with
    only counts and the columns kept coming back.

    Args:
        store: The feature store (DuckDB or any offline store supporting the created filter).
        feature_service: Name of the feature service whose features the model uses.
        labels_path: Parquet with the entity key(s), ``event_timestamp`` and the label.
        label_column: Name of the 0/1 label column.
        missing: ``drop`` rows with any missing feature, or ``keep`` them as NaN (for models
            that handle nulls). Both are counted in the report.

    Raises:
        InputError: Bad labels, unknown service, lost rows or non-numeric features.
    """
    features = resolve_service_features(store, feature_service)
    service = features.feast_service
    required = [*features.join_keys, *features.request_fields]
    labels, rejected = load_labels(labels_path, required=required, label_column=label_column)
    entity_frame = labels.assign(**{ROW_ID: np.arange(len(labels), dtype="int64")})
    columns = [ROW_ID, *required, TIMESTAMP, *features.columns, label_column]

    with offline_compute(store).point_in_time_join(
        entity_frame,
        features=service,
        label="training",
        # A value back-filled after the label time (created later) must not be used.
        filter_by_created_timestamp=True,
    ) as joined:
        _check_returned_rows(
            returned=joined.count(), distinct=joined.count_distinct(ROW_ID), expected=len(labels)
        )
        # Reported, not raised here: the pipeline logs the count on the run, then refuses.
        audit = audit_point_in_time(
            store, joined, service=service, label_times=entity_frame[TIMESTAMP]
        )
        rows = _in_label_order(joined.to_pandas(columns))

    frame = rows[[*features.join_keys, TIMESTAMP, *features.columns, label_column]]
    frame = frame.rename(columns=dict(zip(features.columns, features.names, strict=True)))
    frame = _numeric_features(frame, features.names)
    nulls = frame[features.names].isna()
    incomplete = nulls.any(axis=1)
    missing_rows = int(incomplete.sum())
    if missing == "drop":
        frame = frame.loc[~incomplete]
    frame = frame.reset_index(drop=True)
    if frame.empty:
        raise InputError(
            f"no training rows left: {missing_rows} of {len(labels)} label rows have "
            "missing features. Is the offline table ingested for the labels' time range? "
            "A value counts only once created (ingested) by the label time: load a history "
            "with `churn ingest --backfill` so its rows count from their event time"
        )
    report = DatasetReport(
        label_rows=len(labels) + rejected,
        rejected_null_labels=rejected,
        duplicate_label_rows=int(labels.duplicated([*features.join_keys, TIMESTAMP]).sum()),
        missing_rows=missing_rows,
        missing_by_feature={name: int(nulls[name].sum()) for name in features.names},
        dropped_missing_rows=missing_rows if missing == "drop" else 0,
        leakage_rows=audit.leaking_rows,
        audited_features=list(audit.audited),
        rows=len(frame),
    )
    return TrainingSet(
        frame=frame,
        features=features,
        label_column=label_column,
        project=store.project,
        report=report,
    )


def _check_returned_rows(*, returned: int, distinct: int, expected: int) -> None:
    """Every label row must come back exactly once (ids are 0..expected-1)."""
    if returned != expected or distinct != returned:
        raise InputError(
            f"the offline store returned {returned} rows for {expected} label rows "
            f"({expected - distinct} lost, {returned - distinct} duplicated)"
        )


def _in_label_order(joined: pd.DataFrame) -> pd.DataFrame:
    joined = joined.sort_values(ROW_ID, kind="stable").reset_index(drop=True)
    joined[TIMESTAMP] = pd.to_datetime(joined[TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
    return joined


def _numeric_features(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Cast features to float64 (one dtype for training, signature and serving)."""
    # A column with no value at all (an on-demand feature over missing inputs comes back
    # as all-None objects) is missing data, counted as such, not a type error.
    bad = [
        name
        for name in names
        if not pd.api.types.is_numeric_dtype(frame[name]) and not frame[name].isna().all()
    ]
    if bad:
        raise InputError(
            f"feature(s) {', '.join(bad)} are not numeric; the model families here need numbers"
        )
    return frame.astype(dict.fromkeys(names, "float64"))


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
