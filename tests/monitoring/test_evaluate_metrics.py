"""Predictions joined with late labels, ROC AUC and calibration, in-process."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from core.compute import offline_compute
from core.errors import InputError
from monitoring.evaluate import (
    evaluate_predictions,
    join_labels,
    read_label_window,
)
from tests.utils.monitoring import START, write_parquet

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`

T = pd.Timestamp(START)


def _frame(rows: list[tuple[int, pd.Timestamp]], **columns: list[float]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "event_timestamp"])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame.assign(**columns)


def test_a_prediction_gets_the_label_of_the_snapshot_it_was_served_from() -> None:
    labels = _frame(
        [(1, T), (1, T + timedelta(days=3)), (2, T), (3, T - timedelta(days=10))],
        label=[0, 1, 1, 1],
    )
    predictions = _frame(
        [
            (1, T + timedelta(days=2)),  # served from day 0's snapshot
            (1, T + timedelta(days=3)),  # at the snapshot time: that snapshot
            (2, T - timedelta(hours=1)),  # before any label of user 2: none
            (3, T),  # user 3's only label is 10 days old: too old
            (4, T),  # no label at all
        ],
        churn_probability=[0.2, 0.7, 0.5, 0.5, 0.5],
    )
    joined = join_labels(predictions, labels, max_label_age=timedelta(days=7))
    assert joined["label"].tolist()[:2] == [0, 1]
    assert joined["label"].isna().tolist() == [False, False, True, True, True]
    assert joined["label_timestamp"].tolist()[:2] == [T, T + timedelta(days=3)]
    assert joined["churn_probability"].tolist() == [0.2, 0.7, 0.5, 0.5, 0.5]  # order kept


def test_metrics_match_sklearn_and_reliability_adds_up() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random(500)
    labels = (rng.random(500) < scores).astype(float)
    labels[:20] = np.nan  # not yet arrived
    joined = pd.DataFrame(
        {"churn_probability": scores, "label": labels, "model_version": ["3"] * 500}
    )
    evaluation = evaluate_predictions(joined, window=("a", "b"), min_rows=100)
    known = ~np.isnan(labels)
    assert (evaluation.predictions, evaluation.matched, evaluation.unmatched) == (500, 480, 20)
    assert evaluation.roc_auc == pytest.approx(roc_auc_score(labels[known], scores[known]))
    assert evaluation.brier == pytest.approx(brier_score_loss(labels[known], scores[known]))
    assert sum(item.count for item in evaluation.reliability) == 480
    assert evaluation.expected_calibration_error < 0.1  # these scores are calibrated
    assert evaluation.by_version["3"]["roc_auc"] == pytest.approx(evaluation.roc_auc)
    top = evaluation.reliability[-1]
    in_top = known & (scores >= 0.9)
    assert top.count == int(in_top.sum())
    assert top.observed_rate == pytest.approx(labels[in_top].mean())
    # Beside each realized figure, what was estimated for the same predictions.
    auc = evaluation.estimated["roc_auc"]
    assert auc["realized"] == evaluation.roc_auc
    assert auc["low"] < auc["estimate"] < auc["high"]
    assert auc["inside"] == (auc["low"] <= evaluation.roc_auc <= auc["high"])
    assert evaluation.estimated["churn_rate"]["realized"] == pytest.approx(labels[known].mean())


def test_below_the_minimum_no_figure_is_claimed_overall_or_per_version() -> None:
    # The demo once printed "version 1: 7 rows, ROC AUC 1.0000".
    rng = np.random.default_rng(1)
    scores = rng.random(600)
    labels = (rng.random(600) < scores).astype(float)
    versions = ["1"] * 7 + ["2"] * 593
    joined = pd.DataFrame({"churn_probability": scores, "label": labels, "model_version": versions})

    evaluation = evaluate_predictions(joined, window=("a", "b"), min_rows=500)
    assert evaluation.status == "ok" and evaluation.roc_auc is not None
    assert evaluation.by_version["1"] == {"rows": 7, "status": "insufficient_data", "roc_auc": None}
    assert evaluation.by_version["2"]["roc_auc"] is not None

    few = evaluate_predictions(joined.iloc[:7], window=("a", "b"), min_rows=500)
    assert few.status == "insufficient_data"
    assert (few.roc_auc, few.brier, few.expected_calibration_error) == (None, None, None)
    assert few.estimated == {} and few.reliability == []
    assert "7 labelled predictions, fewer than the minimum 500" in (few.note or "")


def test_no_label_yet_is_a_clear_error() -> None:
    joined = pd.DataFrame({"churn_probability": [0.3], "label": [np.nan]})
    with pytest.raises(InputError, match="none of the 1 predictions has a label"):
        evaluate_predictions(joined, window=("a", "b"))


@pytest.mark.parametrize("naive", [False, True])
def test_only_the_labels_of_the_window_are_read(tmp_path: Path, naive: bool) -> None:
    stamps = pd.to_datetime([T - timedelta(days=30), T, T + timedelta(days=2)], utc=True)
    labels = pd.DataFrame(
        {
            "user_id": [1, 2, 3],
            "event_timestamp": stamps.tz_convert(None) if naive else stamps,
            "label": [1, 0, 1],
            "other": ["a", "b", "c"],
        }
    )
    path = tmp_path / "labels.parquet"
    write_parquet(labels, path)

    window = read_label_window(str(path), start=T, end=T + timedelta(days=2))

    assert window.columns.tolist() == ["user_id", "event_timestamp", "label"]
    assert window["user_id"].tolist() == [2, 3]  # both ends inclusive, the old label left out
    assert window["event_timestamp"].tolist() == list(stamps[1:])
    with pytest.raises(InputError, match="no label between"):
        read_label_window(str(path), start=T + timedelta(days=3), end=T + timedelta(days=9))
    with pytest.raises(InputError, match="does not exist"):
        read_label_window(str(tmp_path / "nope.parquet"), start=T, end=T)
    write_parquet(labels.drop(columns="label"), path)
    with pytest.raises(InputError, match="lacks label"):
        read_label_window(str(path), start=T, end=T)


def test_a_location_only_the_cluster_reads_needs_the_spark_profile() -> None:
    duckdb_store = SimpleNamespace(
        config=SimpleNamespace(offline_store=SimpleNamespace(type="duckdb"))
    )
    with pytest.raises(InputError, match="needs --profile spark"):
        read_label_window(
            "s3a://lake/labels", start=T, end=T, compute=offline_compute(duckdb_store)
        )
