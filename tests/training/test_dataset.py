"""Training sets from Feast: point-in-time correctness, the leakage audit, missing features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.compute import offline_compute
from core.errors import InputError
from core.feast_store import open_feature_store
from tests.training.conftest import ChurnRepo
from tests.utils.feast_repo import TestRepo
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.training import (
    BACKFILLED_USER,
    LATER_SNAPSHOT_USER,
    NO_FEATURES_USER,
    write_parquet,
)
from training.dataset import (
    ROW_ID,
    audit_point_in_time,
    build_training_set,
)

FEATURE_1 = "user_features__feature_1"  # as Feast names it with full feature names


def test_values_written_after_the_label_time_are_not_used(
    churn_repo: ChurnRepo, tmp_path: Path
) -> None:
    labels = write_parquet(churn_repo.planted_labels, tmp_path / "labels.parquet")
    store = open_feature_store(churn_repo.repo.feast)

    training_set = build_training_set(
        store, feature_service="churn_v1", labels_path=labels, missing="keep"
    )

    frame = training_set.frame.set_index("user_id")
    # A later snapshot (99.0) and a back-filled row created after the label (77.0) exist;
    # only the value available at the label time may be used.
    assert frame.loc[LATER_SNAPSHOT_USER, "feature_1"] == 1.0
    assert frame.loc[BACKFILLED_USER, "feature_1"] == 1.0
    assert training_set.report.leakage_rows == 0
    assert training_set.report.audited_features == [
        "user_features:feature_1",
        "user_features:feature_2",
    ]
    assert training_set.feature_names == CHURN_V1_FEATURES
    assert list(training_set.frame.columns) == [
        "user_id",
        "event_timestamp",
        *CHURN_V1_FEATURES,
        "label",
    ]
    assert (training_set.frame[CHURN_V1_FEATURES].dtypes == "float64").all()


def test_the_audit_counts_a_back_filled_value_that_a_join_used(churn_repo: ChurnRepo) -> None:
    store = open_feature_store(churn_repo.repo.feast)
    service = store.get_feature_service("churn_v1")
    entity_frame = churn_repo.planted_labels.assign(**{ROW_ID: np.arange(3)})
    # Without the created-timestamp filter Feast picks the back-filled row: a real leak.
    with offline_compute(store).point_in_time_join(
        entity_frame, features=service, label="test", filter_by_created_timestamp=False
    ) as leaky:
        used = leaky.to_pandas(["user_id", FEATURE_1]).set_index("user_id")[FEATURE_1]
        assert used[BACKFILLED_USER] == 77.0

        audit = audit_point_in_time(
            store, leaky, service=service, label_times=entity_frame["event_timestamp"]
        )

    assert audit.leaking_rows == 1


def test_rows_without_features_are_counted_then_dropped_or_kept(
    churn_repo: ChurnRepo, tmp_path: Path
) -> None:
    labels = write_parquet(churn_repo.planted_labels, tmp_path / "labels.parquet")
    store = open_feature_store(churn_repo.repo.feast)

    dropped = build_training_set(store, feature_service="churn_v1", labels_path=labels)
    kept = build_training_set(store, feature_service="churn_v1", labels_path=labels, missing="keep")

    assert dropped.report.missing_rows == 1
    assert dropped.report.dropped_missing_rows == 1
    assert dropped.report.missing_by_feature["feature_1"] == 1
    assert dropped.report.missing_by_feature["is_weekend"] == 0  # from the label time
    assert NO_FEATURES_USER not in set(dropped.frame["user_id"])
    assert kept.report.rows == 3
    assert np.isnan(kept.frame.set_index("user_id").loc[NO_FEATURES_USER, "feature_1"])


def test_labels_with_no_feature_available_are_reported_as_missing_not_as_bad_types(
    churn_repo: ChurnRepo, tmp_path: Path
) -> None:
    # Every row lacks features (as when a history was ingested without --backfill, so each
    # row was created after its label time): the on-demand features then come back as
    # all-None object columns, which are missing values, not non-numeric features.
    planted = churn_repo.planted_labels
    only_missing = planted.loc[planted["user_id"] == NO_FEATURES_USER]
    labels = write_parquet(only_missing, tmp_path / "labels.parquet")
    store = open_feature_store(churn_repo.repo.feast)

    kept = build_training_set(store, feature_service="churn_v1", labels_path=labels, missing="keep")
    assert (kept.frame[CHURN_V1_FEATURES].dtypes == "float64").all()
    assert kept.frame["feature_ratio"].isna().all()
    with pytest.raises(InputError, match=r"no training rows left: 1 of 1 .*--backfill"):
        build_training_set(store, feature_service="churn_v1", labels_path=labels)


def test_bad_labels_are_rejected_with_the_reason(churn_repo: ChurnRepo, tmp_path: Path) -> None:
    store = open_feature_store(churn_repo.repo.feast)
    no_label = write_parquet(
        churn_repo.planted_labels.drop(columns="label"), tmp_path / "a.parquet"
    )
    not_binary = write_parquet(
        churn_repo.planted_labels.assign(label=[0, 1, 2]), tmp_path / "b.parquet"
    )

    with pytest.raises(InputError, match="lacks column\\(s\\) label"):
        build_training_set(store, feature_service="churn_v1", labels_path=no_label)
    with pytest.raises(InputError, match="must be 0/1; found 2"):
        build_training_set(store, feature_service="churn_v1", labels_path=not_binary)
    with pytest.raises(InputError, match=r"'nope' not found .*\(known: churn_v1, churn_v2\)"):
        build_training_set(store, feature_service="nope", labels_path=not_binary)


def test_a_row_ingested_late_is_not_used_before_it_arrived_and_the_audit_catches_it(
    feature_repo: TestRepo, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    import pandas as pd

    from materialize.apply import apply_feature_repo
    from materialize.ingest import ingest_raw_events
    from tests.utils.data import raw_events

    day = timedelta(days=1)
    t = datetime(2026, 5, 1, 10, tzinfo=UTC)
    history = raw_events([(1, t, 1.0, 2.0, 0), (2, t, 3.0, 4.0, 1)])
    ingest_raw_events(history, data=feature_repo.data, now=t + day, backfill=True)
    # User 1's next snapshot (event time t + 1 day) arrives three days after it happened.
    late = raw_events([(1, t + day, 50.0, 60.0, 1)])
    ingest_raw_events(late, data=feature_repo.data, now=t + 4 * day)
    apply_feature_repo(feature_repo.feast)
    labels = pd.DataFrame(
        {
            "user_id": [1, 1, 2],
            # before the late row arrived, after it arrived, another user
            "event_timestamp": pd.to_datetime([t + 2 * day, t + 5 * day, t + 2 * day], utc=True),
            "label": [0, 1, 1],
        }
    )
    labels_path = write_parquet(labels, tmp_path / "labels.parquet")
    store = open_feature_store(feature_repo.feast)

    training_set = build_training_set(
        store, feature_service="churn_v1", labels_path=labels_path, missing="keep"
    )

    assert training_set.frame["feature_1"].tolist() == [1.0, 50.0, 3.0]
    assert training_set.report.leakage_rows == 0
    # A join that ignores arrival times uses the late value at t + 2 days: the audit sees it.
    service = store.get_feature_service("churn_v1")
    with offline_compute(store).point_in_time_join(
        labels.assign(**{ROW_ID: np.arange(3)}),
        features=service,
        label="test",
        filter_by_created_timestamp=False,
    ) as leaky:
        assert sorted(leaky.to_pandas([FEATURE_1])[FEATURE_1].tolist()) == [3.0, 50.0, 50.0]
        audit = audit_point_in_time(
            store, leaky, service=service, label_times=labels["event_timestamp"]
        )
    assert audit.leaking_rows == 1
