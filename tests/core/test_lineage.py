"""Model lineage: the tags training writes parse back to the same record, and bad tags are named."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.lineage import LineageError, ModelLineage, TimeWindow, TrainingWindow
from core.model_trust import HASH_TAG

pytestmark = pytest.mark.unit

_START = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
_END = datetime(2026, 3, 8, tzinfo=UTC)


def test_model_lineage_round_trips_through_its_tags() -> None:
    lineage = ModelLineage(
        feature_service="churn_v1",
        features=("feature_2", "feature_1"),
        project="churn",
        test_start=_START,
        test_end=_END,
        test_roc_auc=0.8125,
        artifact_sha256="ab" * 32,
    )
    tags = lineage.to_tags()
    assert tags["feast.features"] == "feature_2,feature_1"
    assert tags["data.test_start"] == "2026-03-01T12:30:00+00:00"
    assert tags[HASH_TAG] == "ab" * 32
    assert ModelLineage.from_tags(tags) == lineage


def test_model_lineage_reads_the_minimum_a_version_needs() -> None:
    lineage = ModelLineage.from_tags(
        {"feast.feature_service": " churn_v1 ", "feast.features": "a, b,", "feast.project": ""}
    )
    assert lineage == ModelLineage(feature_service="churn_v1", features=("a", "b"))
    assert set(lineage.to_tags()) == {"feast.feature_service", "feast.features"}


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({}, r"m v3 lacks tag\(s\) feast\.feature_service, feast\.features"),
        (
            {"feast.feature_service": "s", "feast.features": " , "},
            r"lacks tag\(s\) feast\.features",
        ),
        ({"feast.feature_service": "s", "feast.features": "a,b,a"}, "repeats a feature"),
        (
            {"feast.feature_service": "s", "feast.features": "a", "data.test_start": "monday"},
            r"data\.test_start 'monday' is not an ISO 8601 time",
        ),
        (
            {"feast.feature_service": "s", "feast.features": "a", "test_roc_auc": "high"},
            r"test_roc_auc 'high' is not a number",
        ),
    ],
)
def test_model_lineage_names_the_bad_tag(tags: dict[str, str], message: str) -> None:
    with pytest.raises(LineageError, match=message):
        ModelLineage.from_tags(tags, owner="m v3")


def test_naive_times_are_read_as_utc() -> None:
    lineage = ModelLineage.from_tags(
        {"feast.feature_service": "s", "feast.features": "a", "data.test_end": "2026-03-08"}
    )
    assert lineage.test_end == _END


def test_training_window_round_trips_and_requires_every_part() -> None:
    window = TrainingWindow(
        labels_path=Path("/data/offline/labels.parquet"),
        train=TimeWindow(_START, _START),
        val=TimeWindow(_START, _END),
        test=TimeWindow(_END, _END),
    )
    tags = window.to_tags()
    assert tags["data.labels_path"] == "/data/offline/labels.parquet"
    assert TrainingWindow.from_tags({**tags, "unrelated": "x"}) == window
    del tags["data.val_end"]
    with pytest.raises(LineageError, match=r"run 7 lacks data\.val_end"):
        TrainingWindow.from_tags(tags, owner="run 7")
