"""`churn ingest`: every raw row is written, skipped as present, or quarantined with a reason."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import SchemaError, UnreadableInputError
from core.settings import DataSettings
from core.tables import LABELS, USER_FEATURES
from materialize.generate import generate_raw_events
from materialize.ingest import IngestReport, ingest_raw_events
from tests.utils.data import GOOD_ROWS_START, good_rows, raw_events, write_raw_events

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
T = GOOD_ROWS_START
HOUR = timedelta(hours=1)


@pytest.fixture
def data(tmp_path: Path) -> DataSettings:
    return DataSettings(data_dir=tmp_path / "data")


def _features(data: DataSettings) -> pd.DataFrame:
    return pd.read_parquet(data.user_features_path)


def _labels(data: DataSettings) -> pd.DataFrame:
    return pd.read_parquet(data.labels_path)


def _quarantine(report: IngestReport) -> pd.DataFrame:
    assert report.quarantine_path is not None
    return pd.read_parquet(report.quarantine_path)


def _quarantined(report: IngestReport) -> dict[str, int]:
    return {reason: count for reason, count in report.quarantined.items() if count}


def _accounted(report: IngestReport) -> int:
    features = report.features
    return report.rows_quarantined + features.new + features.corrected + features.already_present


def _assert_nothing_written(data: DataSettings) -> None:
    assert not data.offline_dir.exists()
    assert not data.quarantine_dir.exists()


# --- whole-file errors: nothing is written -----------------------------------------------


def test_missing_columns_are_named_and_nothing_is_written(data: DataSettings) -> None:
    frame = raw_events(good_rows(3)).drop(columns=["label", "feature_2"])

    with pytest.raises(SchemaError, match=r"missing column\(s\): feature_2, label"):
        ingest_raw_events(frame, data=data, now=NOW)
    _assert_nothing_written(data)


def test_mistyped_columns_are_named_and_nothing_is_written(data: DataSettings) -> None:
    frame = raw_events(good_rows(3))
    frame["user_id"] = frame["user_id"].astype(str)
    frame["event_date"] = frame["event_date"].astype(str)
    frame["label"] = frame["label"].astype(bool)

    with pytest.raises(SchemaError) as raised:
        ingest_raw_events(frame, data=data, now=NOW)

    problems = raised.value.problems
    assert len(problems) == 3
    assert problems[0].startswith("user_id: expected integers")
    assert problems[1].startswith("label: expected numbers")
    assert problems[2].startswith("event_date: expected timestamps")
    _assert_nothing_written(data)


def test_fractional_user_ids_are_a_schema_error(data: DataSettings) -> None:
    frame = raw_events(good_rows(2))
    frame["user_id"] = [1.0, 2.5]

    with pytest.raises(SchemaError, match="user_id: expected integers, got fractional"):
        ingest_raw_events(frame, data=data, now=NOW)


def test_unreadable_inputs(tmp_path: Path, data: DataSettings) -> None:
    with pytest.raises(UnreadableInputError, match="no such file"):
        ingest_raw_events(tmp_path / "absent.parquet", data=data, now=NOW)
    text = tmp_path / "events.txt"
    text.write_text("user_id\n1\n")
    with pytest.raises(UnreadableInputError, match="unsupported format"):
        ingest_raw_events(text, data=data, now=NOW)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(UnreadableInputError, match="cannot read"):
        ingest_raw_events(broken, data=data, now=NOW)
    _assert_nothing_written(data)


# --- row-level errors: quarantined with a reason, the rest is written --------------------


def test_null_user_id_is_quarantined(data: DataSettings) -> None:
    rows = [*good_rows(3), (None, T, 1.0, 2.0, 0)]

    report = ingest_raw_events(raw_events(rows), data=data, now=NOW)

    assert _quarantined(report) == {"null_user_id": 1}
    assert report.features.new == 3
    assert len(_features(data)) == 3
    quarantine = _quarantine(report)
    assert quarantine["reason"].tolist() == ["null_user_id"]
    assert quarantine["source_row"].tolist() == [3]
    assert quarantine["user_id"].isna().all()


def test_null_event_date_is_quarantined(data: DataSettings) -> None:
    rows = [*good_rows(3), (9, None, 1.0, 2.0, 0), (10, None, 1.0, 2.0, 1)]

    report = ingest_raw_events(raw_events(rows), data=data, now=NOW)

    assert _quarantined(report) == {"null_event_date": 2}
    assert _quarantine(report)["user_id"].tolist() == [9, 10]
    assert set(_features(data)["user_id"]) == {1, 2, 3}


def test_repeated_key_keeps_the_first_row_and_quarantines_the_rest(
    data: DataSettings,
) -> None:
    rows = [*good_rows(2), (1, T + HOUR, 50.0, 5.0, 0), (1, T + HOUR, 60.0, 6.0, 1)]

    report = ingest_raw_events(raw_events(rows), data=data, now=NOW)

    assert _quarantined(report) == {"duplicate_key": 2}
    features = _features(data)
    assert features.loc[features["user_id"] == 1, "feature_1"].tolist() == [2.0]
    assert _quarantine(report)["feature_1"].tolist() == [50.0, 60.0]
    assert _quarantine(report)["source_row"].tolist() == [2, 3]


def test_infinite_features_are_quarantined_but_null_features_are_kept(
    data: DataSettings,
) -> None:
    rows = [
        *good_rows(2),
        (7, T, np.inf, 1.0, 0),
        (8, T, 1.0, -np.inf, 0),
        (9, T, np.nan, np.nan, 1),
    ]

    report = ingest_raw_events(raw_events(rows), data=data, now=NOW)

    assert _quarantined(report) == {"non_finite_feature": 2}
    features = _features(data)
    assert set(features["user_id"]) == {1, 2, 9}
    assert features.loc[features["user_id"] == 9, ["feature_1", "feature_2"]].isna().all(axis=None)
    assert 9 in set(_labels(data)["user_id"])


def test_future_timestamps_are_quarantined(data: DataSettings) -> None:
    future = NOW + timedelta(seconds=1)
    rows = [*good_rows(2), (5, future, 1.0, 1.0, 0), (6, NOW, 1.0, 1.0, 0)]

    report = ingest_raw_events(raw_events(rows), data=data, now=NOW)

    assert _quarantined(report) == {"future_timestamp": 1}
    assert _quarantine(report)["user_id"].tolist() == [5]
    assert 6 in set(_features(data)["user_id"])  # exactly `now` is not in the future


def test_null_or_invalid_label_keeps_features_but_writes_no_label(data: DataSettings) -> None:
    rows = [*good_rows(3), (7, T, 1.0, 1.0, None), (8, T, 1.0, 1.0, 2), (9, T, 1.0, 1.0, -1)]

    report = ingest_raw_events(raw_events(rows), data=data, now=NOW)

    assert report.rows_quarantined == 0
    assert (report.labels_null, report.labels_invalid) == (1, 2)
    assert report.features.new == 6
    assert report.labels.new == 3
    assert set(_features(data)["user_id"]) == {1, 2, 3, 7, 8, 9}
    assert set(_labels(data)["user_id"]) == {1, 2, 3}


def test_null_rate_above_20_percent_warns_and_still_ingests(
    data: DataSettings, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [
        (user, T + user * HOUR, None if user <= 3 else 1.0, None if user <= 2 else 2.0, 0)
        for user in range(1, 11)
    ]

    with caplog.at_level(logging.WARNING, logger="materialize.ingest"):
        report = ingest_raw_events(raw_events(rows), data=data, now=NOW)

    # feature_1: 3 of 10 null (30%) warns; feature_2: 2 of 10 (exactly 20%) does not.
    assert report.null_counts["feature_1"] == 3
    assert report.null_counts["feature_2"] == 2
    assert len(report.warnings) == 1
    assert report.warnings[0].startswith("feature_1 is null in 3 of 10 rows")
    assert [record.getMessage() for record in caplog.records] == report.warnings
    assert report.features.new == 10


def test_every_row_is_accounted_for_in_a_mixed_batch(data: DataSettings) -> None:
    rows = [
        *good_rows(5),
        (None, T, 1.0, 1.0, 0),
        (6, None, 1.0, 1.0, 0),
        (7, NOW + HOUR, 1.0, 1.0, 0),
        (8, T, np.inf, 1.0, 0),
        (1, T + HOUR, 9.0, 9.0, 0),
        (9, T, 1.0, 1.0, 3),
    ]

    report = ingest_raw_events(raw_events(rows), data=data, now=NOW)

    assert report.rows_in == 11
    assert _quarantined(report) == {
        "null_user_id": 1,
        "null_event_date": 1,
        "future_timestamp": 1,
        "non_finite_feature": 1,
        "duplicate_key": 1,
    }
    assert _accounted(report) == report.rows_in
    assert report.labels.new + report.labels_invalid + report.labels_null == 6
    assert len(_quarantine(report)) == 5


# --- the offline tables -------------------------------------------------------------------


def test_tables_have_the_contract_schema_and_order(data: DataSettings) -> None:
    rows = [(2, T, 1.0, 2.0, 1), (1, T, 3.0, 4.0, 0), (1, T - HOUR, 5.0, 6.0, 1)]

    ingest_raw_events(raw_events(rows), data=data, now=NOW, backfill=True)

    features, labels = _features(data), _labels(data)
    # Timestamps are stored in microseconds (Spark, on the spark profile, refuses Parquet
    # nanoseconds); pandas reads them back as microsecond datetimes.
    assert features.dtypes.astype(str).to_dict() == {
        "user_id": "int64",
        "event_timestamp": "datetime64[us, UTC]",
        "created": "datetime64[us, UTC]",
        "feature_1": "float64",
        "feature_2": "float64",
        "ingested_at": "datetime64[us, UTC]",
    }
    assert labels.dtypes.astype(str).to_dict() == {
        "user_id": "int64",
        "event_timestamp": "datetime64[us, UTC]",
        "label": "int64",
    }
    # The one definition readers use (core.tables) is what ingest writes, column order too.
    for table, frame in ((USER_FEATURES, features), (LABELS, labels)):
        assert list(frame.columns) == table.names
        assert frame.dtypes.astype(str).to_dict() == table.dtypes
    assert list(zip(features["user_id"], features["feature_1"], strict=True)) == [
        (1, 5.0),
        (1, 3.0),
        (2, 1.0),
    ]
    assert (features["created"] == features["event_timestamp"]).all()  # back-fill
    assert (features["ingested_at"] == pd.Timestamp(NOW)).all()
    assert labels["label"].tolist() == [1, 0, 1]
    assert (labels["event_timestamp"] == features["event_timestamp"]).all()


def test_rerun_leaves_both_tables_byte_identical(tmp_path: Path, data: DataSettings) -> None:
    raw = generate_raw_events(users=60, days=21, end="2026-06-01", seed=5)
    path = write_raw_events(tmp_path / "raw.parquet", raw)
    first = ingest_raw_events(path, data=data, now=NOW)
    before = (data.user_features_path.read_bytes(), data.labels_path.read_bytes())

    again = ingest_raw_events(path, data=data, now=NOW + timedelta(days=1))

    assert first.features.new == first.labels.new == len(raw)
    assert again.features.already_present == again.labels.already_present == len(raw)
    assert (again.features.written, again.labels.written) == (0, 0)
    assert (data.user_features_path.read_bytes(), data.labels_path.read_bytes()) == before


def test_new_batch_appends_without_duplicating(tmp_path: Path, data: DataSettings) -> None:
    base = generate_raw_events(users=60, days=21, end="2026-05-25", seed=5)
    later = generate_raw_events(users=60, days=14, end="2026-06-01", seed=5)  # overlaps 7 days
    ingest_raw_events(write_raw_events(tmp_path / "base.parquet", base), data=data, now=NOW)

    report = ingest_raw_events(write_raw_events(tmp_path / "b.csv", later), data=data, now=NOW)

    overlap = int((later["event_date"] < pd.Timestamp("2026-05-25", tz="UTC")).sum())
    assert 0 < overlap < len(later)
    assert report.features.already_present == report.labels.already_present == overlap
    assert report.features.new == report.labels.new == len(later) - overlap
    features, labels = _features(data), _labels(data)
    union = pd.concat([base, later]).drop_duplicates(["user_id", "event_date"])
    assert len(features) == len(labels) == len(union)
    assert not features.duplicated(["user_id", "event_timestamp"]).any()
    assert features.equals(
        features.sort_values(["event_timestamp", "user_id"], kind="stable").reset_index(drop=True)
    )


def test_csv_and_parquet_inputs_give_the_same_tables(tmp_path: Path) -> None:
    raw = generate_raw_events(users=30, days=14, end="2026-06-01", seed=9)
    from_parquet = DataSettings(data_dir=tmp_path / "p")
    from_csv = DataSettings(data_dir=tmp_path / "c")

    ingest_raw_events(write_raw_events(tmp_path / "r.parquet", raw), data=from_parquet, now=NOW)
    ingest_raw_events(write_raw_events(tmp_path / "r.csv", raw), data=from_csv, now=NOW)

    pd.testing.assert_frame_equal(_features(from_csv), _features(from_parquet))
    pd.testing.assert_frame_equal(_labels(from_csv), _labels(from_parquet))


def test_unparseable_csv_timestamp_is_a_schema_error(tmp_path: Path, data: DataSettings) -> None:
    path = tmp_path / "raw.csv"
    path.write_text(
        "user_id,feature_1,feature_2,label,event_date\n"
        "1,1.0,2.0,0,2026-05-01T10:00:00Z\n"
        "2,1.0,2.0,0,yesterday\n"
    )

    with pytest.raises(SchemaError, match=r"event_date: 1 value\(s\) are not timestamps"):
        ingest_raw_events(path, data=data, now=NOW)
    _assert_nothing_written(data)


def test_changed_values_are_corrections_with_a_newer_created(data: DataSettings) -> None:
    ingest_raw_events(raw_events(good_rows(3)), data=data, now=NOW, backfill=True)
    corrected_rows = [
        (1, T + HOUR, 99.0, 3.0, 0),  # features and label changed
        (2, T + 2 * HOUR, 3.0, 3.0, 1),  # only the label changed
        (3, T + 3 * HOUR, 4.0, 3.0, 1),  # unchanged
    ]
    later = NOW + timedelta(hours=2)

    report = ingest_raw_events(raw_events(corrected_rows), data=data, now=later)

    assert (report.features.corrected, report.features.already_present) == (1, 2)
    assert (report.labels.corrected, report.labels.already_present) == (2, 1)
    features = _features(data)
    user_1 = features[features["user_id"] == 1]
    assert user_1["feature_1"].tolist() == [2.0, 99.0]
    assert user_1["created"].tolist() == [pd.Timestamp(T + HOUR), pd.Timestamp(later)]
    labels = _labels(data)
    assert not labels.duplicated(["user_id", "event_timestamp"]).any()
    assert labels.set_index("user_id")["label"].to_dict() == {1: 0, 2: 1, 3: 1}

    # The same correction again is already present; a correction back is a new version.
    before = data.user_features_path.read_bytes()
    repeat = ingest_raw_events(raw_events(corrected_rows), data=data, now=later)
    assert (repeat.features.already_present, repeat.labels.already_present) == (3, 3)
    assert data.user_features_path.read_bytes() == before
    back = ingest_raw_events(raw_events(good_rows(1)), data=data, now=later)
    assert back.features.corrected == 1
    created = _features(data).query("user_id == 1")["created"]
    assert created.is_monotonic_increasing and created.is_unique


def test_concurrent_ingests_of_different_batches_lose_no_rows(
    tmp_path: Path, data: DataSettings
) -> None:
    batches = [
        write_raw_events(
            tmp_path / f"batch{index}.parquet",
            raw_events(good_rows(40, start=T + index * 50 * HOUR)),
        )
        for index in range(4)
    ]

    with ThreadPoolExecutor(max_workers=4) as pool:
        reports = list(pool.map(lambda path: ingest_raw_events(path, data=data, now=NOW), batches))

    assert [report.features.new for report in reports] == [40, 40, 40, 40]
    assert len(_features(data)) == len(_labels(data)) == 160


# --- keys and times the stores cannot represent (issue 10, items 2 and 3) -----------------

BIG = 2**53 + 1  # the first integer float64 cannot hold


def test_csv_ids_above_2_53_stay_exact_when_the_column_has_a_null(
    tmp_path: Path, data: DataSettings
) -> None:
    path = tmp_path / "raw.csv"
    path.write_text(
        "user_id,feature_1,feature_2,label,event_date\n"
        f"{BIG},1.0,2.0,0,2026-05-01T10:00:00Z\n"
        f"{BIG + 2},3.0,4.0,1,2026-05-01T10:00:00Z\n"
        ",5.0,6.0,0,2026-05-01T10:00:00Z\n"
        " +999999999999999999 ,7.0,8.0,1,2026-05-01T10:00:00Z\n"
    )

    report = ingest_raw_events(path, data=data, now=NOW)

    ids = [BIG, BIG + 2, 999_999_999_999_999_999]
    assert sorted(_features(data)["user_id"].tolist()) == ids
    assert sorted(_labels(data)["user_id"].tolist()) == ids
    assert _quarantined(report) == {"null_user_id": 1}


def test_ids_beyond_int64_are_quarantined_with_their_text(
    tmp_path: Path, data: DataSettings
) -> None:
    path = tmp_path / "raw.csv"
    path.write_text(
        "user_id,feature_1,feature_2,label,event_date\n"
        f"{2**63},1.0,2.0,0,2026-05-01T10:00:00Z\n"
        f"{2**64 + 5},1.0,2.0,0,2026-05-01T11:00:00Z\n"
        f"{2**63 - 1},3.0,4.0,1,2026-05-01T10:00:00Z\n"
        "-7,3.0,4.0,1,2026-05-01T10:00:00Z\n"
    )

    report = ingest_raw_events(path, data=data, now=NOW)

    assert _quarantined(report) == {"unrepresentable_user_id": 2}
    assert "unrepresentable_user_id 2" in "\n".join(report.summary_lines())
    quarantine = _quarantine(report)
    assert quarantine["user_id_raw"].tolist() == [str(2**63), str(2**64 + 5)]
    assert quarantine["source_row"].tolist() == [0, 1]
    assert sorted(_features(data)["user_id"].tolist()) == [-7, 2**63 - 1]


def test_unsigned_and_inexact_float_ids_are_quarantined(tmp_path: Path, data: DataSettings) -> None:
    unsigned = raw_events(good_rows(2))
    unsigned["user_id"] = np.array([2**64 - 1, 5], dtype="uint64")
    floats = raw_events(good_rows(2, start=T + 10 * HOUR))
    floats["user_id"] = [float(2**53 + 2), 6.0]

    first = ingest_raw_events(
        write_raw_events(tmp_path / "u.parquet", unsigned), data=data, now=NOW
    )
    second = ingest_raw_events(floats, data=data, now=NOW)

    assert _quarantined(first) == _quarantined(second) == {"unrepresentable_user_id": 1}
    assert sorted(_features(data)["user_id"].tolist()) == [5, 6]


def test_year_3024_in_parquet_is_quarantined_not_a_crash(
    tmp_path: Path, data: DataSettings
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "user_id": pa.array([1, 2], pa.int64()),
            "feature_1": [1.0, 2.0],
            "feature_2": [3.0, 4.0],
            "label": pa.array([0, 1], pa.int64()),
            "event_date": pa.array(
                [datetime(3024, 1, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC)],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    path = tmp_path / "raw.parquet"
    pq.write_table(table, path)

    report = ingest_raw_events(path, data=data, now=NOW)

    assert _quarantined(report) == {"unorderable_timestamp": 1}
    assert _quarantine(report)["event_date_raw"].tolist() == ["3024-01-01T00:00:00+00:00"]
    assert _features(data)["user_id"].tolist() == [2]


def test_out_of_range_csv_timestamps_are_quarantined_not_a_schema_error(
    tmp_path: Path, data: DataSettings
) -> None:
    path = tmp_path / "raw.csv"
    path.write_text(
        "user_id,feature_1,feature_2,label,event_date\n"
        "1,1.0,2.0,0,3024-01-01T00:00:00Z\n"
        "2,1.0,2.0,0,2026-05-01T10:00:00Z\n"
    )

    report = ingest_raw_events(path, data=data, now=NOW)

    assert _quarantined(report) == {"unorderable_timestamp": 1}
    assert _quarantine(report)["event_date_raw"].tolist() == ["3024-01-01T00:00:00Z"]


def test_timestamps_at_or_before_1970_are_quarantined(data: DataSettings) -> None:
    rows = [
        (1, datetime(1969, 12, 31, 23, 59, tzinfo=UTC), 1.0, 2.0, 0),
        (2, datetime(1970, 1, 1, tzinfo=UTC), 1.0, 2.0, 0),
        (3, datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC), 1.0, 2.0, 0),
    ]

    report = ingest_raw_events(raw_events(rows), data=data, now=NOW)

    assert _quarantined(report) == {"unorderable_timestamp": 2}
    assert _features(data)["user_id"].tolist() == [3]
    assert _accounted(report) == 3


# --- late arrivals (issue 10, item 4) -------------------------------------------------------


def test_incremental_ingest_makes_rows_available_from_their_arrival(
    data: DataSettings,
) -> None:
    arrival = T + timedelta(days=3)  # the row arrives three days after its event time

    report = ingest_raw_events(raw_events([(1, T, 1.0, 2.0, 0)]), data=data, now=arrival)

    features = _features(data)
    assert features["created"].tolist() == [pd.Timestamp(arrival)]
    assert features["ingested_at"].tolist() == [pd.Timestamp(arrival)]
    assert not report.backfill
    assert any(line.startswith("incremental:") for line in report.summary_lines())


def test_backfill_declares_rows_available_at_their_event_time_and_says_so(
    data: DataSettings,
) -> None:
    arrival = T + timedelta(days=3)

    report = ingest_raw_events(
        raw_events([(1, T, 1.0, 2.0, 0)]), data=data, now=arrival, backfill=True
    )

    features = _features(data)
    assert features["created"].tolist() == [pd.Timestamp(T)]
    assert features["ingested_at"].tolist() == [pd.Timestamp(arrival)]
    assert any(line.startswith("back-fill: 1 new rows") for line in report.summary_lines())


def test_tables_written_before_arrivals_were_recorded_are_extended(
    data: DataSettings,
) -> None:
    old = pd.DataFrame(
        {
            "user_id": [1],
            "event_timestamp": [pd.Timestamp(T)],
            "created": [pd.Timestamp(T)],
            "feature_1": [1.0],
            "feature_2": [2.0],
        }
    )
    data.offline_dir.mkdir(parents=True)
    old.to_parquet(data.user_features_path, index=False)

    ingest_raw_events(raw_events([(2, T, 1.0, 2.0, 0)]), data=data, now=NOW)

    features = _features(data)
    assert features.set_index("user_id")["ingested_at"].isna().to_dict() == {1: True, 2: False}
