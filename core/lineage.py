"""Model lineage: the contract training writes to MLflow and every reader parses.

Two records travel as MLflow tags (strings):

- :class:`ModelLineage` on each registered model version: the feature service, the
  model's columns in order, the Feast project, its test window and score, and the hash of
  the logged files. Serving, batch scoring, retraining and drift read it from there.
- :class:`TrainingWindow` on the training run (tags and params): where the labels came
  from and the time range of each part of the split. Drift rebuilds the champion's
  training sample from it.

Training builds the records and writes ``to_tags()``; readers call ``from_tags()``, which
names the missing or malformed tag instead of failing later on an empty string.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from core.errors import LineageError
from core.missing_values import fill_values_tag, read_fill_values
from core.model_trust import HASH_TAG

FEATURE_SERVICE_TAG = "feast.feature_service"
FEATURES_TAG = "feast.features"
PROJECT_TAG = "feast.project"
TEST_START_TAG = "data.test_start"
TEST_END_TAG = "data.test_end"
TEST_ROC_AUC_TAG = "test_roc_auc"
LABELS_PATH_TAG = "data.labels_path"
_PARTS = ("train", "val", "test")


def _utc(value: str, *, tag: str, owner: str) -> datetime:
    """An ISO 8601 tag value as an aware UTC datetime (naive values are taken as UTC)."""
    from datetime import UTC

    try:
        stamp = datetime.fromisoformat(value)
    except ValueError as error:
        raise LineageError(f"{owner}: tag {tag} {value!r} is not an ISO 8601 time") from error
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def _iso(value: datetime) -> str:
    return value.isoformat()


@dataclass(frozen=True)
class ModelLineage:
    """What a registered model version was trained on (its registry tags).

    Attributes:
        feature_service: The Feast feature service the model reads.
        features: The model's columns (Feast feature names), in model order.
        project: The Feast project it was trained on (None: the repo's own).
        test_start: First timestamp of its test window (None: not recorded).
        test_end: Last timestamp of its test window.
        test_roc_auc: Its ROC AUC on that window.
        artifact_sha256: Hash of the logged model files, checked before loading.
        fill_values: Median of each feature on the training rows, what the ``fill``
            missing-value policy puts in place of a missing value (None: not recorded).
    """

    feature_service: str
    features: tuple[str, ...]
    project: str | None = None
    test_start: datetime | None = None
    test_end: datetime | None = None
    test_roc_auc: float | None = None
    artifact_sha256: str | None = None
    fill_values: Mapping[str, float] | None = field(default=None, hash=False)

    def to_tags(self) -> dict[str, str]:
        """The registry tags (only the fields that are set)."""
        tags = {
            FEATURE_SERVICE_TAG: self.feature_service,
            FEATURES_TAG: ",".join(self.features),
        }
        if self.project is not None:
            tags[PROJECT_TAG] = self.project
        if self.test_start is not None:
            tags[TEST_START_TAG] = _iso(self.test_start)
        if self.test_end is not None:
            tags[TEST_END_TAG] = _iso(self.test_end)
        if self.test_roc_auc is not None:
            tags[TEST_ROC_AUC_TAG] = f"{self.test_roc_auc:.6f}"
        if self.artifact_sha256 is not None:
            tags[HASH_TAG] = self.artifact_sha256
        if self.fill_values is not None:
            tags.update(fill_values_tag(self.fill_values))
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str] | None, *, owner: str = "model") -> ModelLineage:
        """Parse a version's tags.

        Args:
            tags: The version's tags.
            owner: Names the version in errors (e.g. ``"model churn-predictor version 3"``).

        Raises:
            LineageError: The feature service or features are missing or empty, a feature
                repeats, or a time, score or fill value does not parse.
        """
        tags = tags or {}
        service = tags.get(FEATURE_SERVICE_TAG, "").strip()
        features = tuple(f.strip() for f in tags.get(FEATURES_TAG, "").split(",") if f.strip())
        missing = [
            tag
            for tag, value in ((FEATURE_SERVICE_TAG, service), (FEATURES_TAG, features))
            if not value
        ]
        if missing:
            raise LineageError(f"{owner} lacks tag(s) {', '.join(missing)}")
        if len(set(features)) != len(features):
            raise LineageError(f"{owner} repeats a feature in its {FEATURES_TAG} tag")
        start, end = (tags.get(TEST_START_TAG), tags.get(TEST_END_TAG))
        auc = tags.get(TEST_ROC_AUC_TAG)
        try:
            test_roc_auc = float(auc) if auc else None
        except ValueError as error:
            raise LineageError(
                f"{owner}: tag {TEST_ROC_AUC_TAG} {auc!r} is not a number"
            ) from error
        return cls(
            feature_service=service,
            features=features,
            project=tags.get(PROJECT_TAG) or None,
            test_start=_utc(start, tag=TEST_START_TAG, owner=owner) if start else None,
            test_end=_utc(end, tag=TEST_END_TAG, owner=owner) if end else None,
            test_roc_auc=test_roc_auc,
            artifact_sha256=tags.get(HASH_TAG) or None,
            fill_values=read_fill_values(tags, owner=owner),
        )


@dataclass(frozen=True)
class TimeWindow:
    """First and last timestamp of a part of the data (aware, UTC)."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class TrainingWindow:
    """Where a training run's rows came from (its tags and params).

    Attributes:
        labels_path: The labels table the training set was joined from.
        train: Time range of the rows the model was tuned on.
        val: Time range of the validation rows.
        test: Time range of the test rows.
    """

    labels_path: Path
    train: TimeWindow
    val: TimeWindow
    test: TimeWindow

    def to_tags(self) -> dict[str, str]:
        """The run tags (``data.labels_path``, ``data.<part>_start`` / ``_end``)."""
        tags = {LABELS_PATH_TAG: str(self.labels_path)}
        for part in _PARTS:
            window: TimeWindow = getattr(self, part)
            tags[f"data.{part}_start"] = _iso(window.start)
            tags[f"data.{part}_end"] = _iso(window.end)
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str], *, owner: str = "training run") -> TrainingWindow:
        """Parse a run's tags (or params: training logs the same values as both).

        Raises:
            LineageError: A window tag or the labels path is missing or does not parse.
        """
        wanted = [LABELS_PATH_TAG] + [f"data.{p}_{e}" for p in _PARTS for e in ("start", "end")]
        missing = [tag for tag in wanted if not tags.get(tag)]
        if missing:
            raise LineageError(f"{owner} lacks {', '.join(missing)}")
        windows = {
            part: TimeWindow(
                start=_utc(tags[f"data.{part}_start"], tag=f"data.{part}_start", owner=owner),
                end=_utc(tags[f"data.{part}_end"], tag=f"data.{part}_end", owner=owner),
            )
            for part in _PARTS
        }
        return cls(labels_path=Path(tags[LABELS_PATH_TAG]), **windows)
