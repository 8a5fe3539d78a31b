"""The drift job's performance signals: the window's estimate, its realized figure where
labels landed, and the harm they show against the champion's reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.estimate_shift import CalibrationTerm, logit_moments
from monitoring.drift import DriftRequest
from monitoring.performance import window_performance
from monitoring.snapshots import ChampionLineage
from tests.utils.monitoring import START, write_parquet

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


def _lineage(
    test_roc_auc: float,
    term: CalibrationTerm | None = None,
    ranges: dict[str, tuple[float, float]] | None = None,
) -> ChampionLineage:
    return ChampionLineage(
        model_name="churn-predictor",
        alias="champion",
        version="3",
        run_id="run",
        feature_service="churn_v1",
        feast_project=None,
        features=["feature_1"],
        labels_path=Path("labels.parquet"),
        train_start=pd.Timestamp(START),
        train_end=pd.Timestamp(START),
        test_roc_auc=test_roc_auc,
        estimate_term=term or CalibrationTerm(),
        ranges=ranges or {},
    )


def _window(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.beta(1.2, 4.0, size=rows)
    frame = pd.DataFrame(
        {
            "user_id": np.arange(1, rows + 1),
            "event_timestamp": pd.Timestamp(START).tz_convert("UTC"),
            "churn_probability": scores,
        }
    )
    return frame, (rng.random(rows) < scores).astype(np.int64)


def test_an_estimate_well_below_the_reference_is_harm_and_labels_give_the_realized_figure(
    tmp_path: Path,
) -> None:
    frame, labels = _window(3000, seed=1)
    write_parquet(
        frame[["user_id", "event_timestamp"]].assign(label=labels),
        tmp_path / "data" / "offline" / "labels.parquet",
    )

    # These scores rank at about 0.76: a champion tested at 0.90 has lost ground.
    harmed = window_performance(frame, _lineage(0.90), DriftRequest())
    assert harmed.estimate is not None and harmed.estimate.status == "ok"
    assert (
        harmed.harm.estimated is not None and "below the champion's 0.9000" in harmed.harm.estimated
    )
    assert harmed.realized["rows"] == 3000 and harmed.realized["roc_auc"] < 0.85
    assert harmed.harm.realized is not None
    assert harmed.harmful
    assert "Estimated performance (no labels)" in harmed.render_html()

    fine = window_performance(frame, _lineage(0.76), DriftRequest())
    assert not fine.harmful and fine.harm.estimated is None
    assert (
        fine.to_dict()["estimate"]["roc_auc"]["low"]
        < 0.76
        < fine.to_dict()["estimate"]["roc_auc"]["high"]
    )


def test_no_probability_or_no_labels_is_said_never_an_error() -> None:
    frame, _ = _window(3000, seed=2)
    unscored = window_performance(frame.drop(columns="churn_probability"), None, DriftRequest())
    assert unscored.estimate is None and "no churn_probability column" in (unscored.note or "")
    unlabelled = window_performance(frame, None, DriftRequest())
    assert unlabelled.estimate is not None and unlabelled.realized == {}
    assert "no realized figure" in (unlabelled.note or "")
    assert not unlabelled.harmful  # no reference: no harm claimed


def test_the_champions_calibration_term_widens_the_drift_jobs_estimate() -> None:
    frame, _ = _window(3000, seed=3)
    mean, sd = logit_moments(frame["churn_probability"].to_numpy())
    # The held-out logits sat one SD lower: distance 1, so the window's term is 0.02.
    term = CalibrationTerm(per_distance=0.02, logit_mean=mean - sd, logit_sd=sd)
    plain = window_performance(frame, _lineage(0.76), DriftRequest())
    widened = window_performance(frame, _lineage(0.76, term), DriftRequest())
    assert plain.estimate is not None and widened.estimate is not None
    assert plain.estimate.roc_auc is not None and widened.estimate.roc_auc is not None
    width = {
        name: item.estimate.roc_auc.high - item.estimate.roc_auc.low  # type: ignore[union-attr]
        for name, item in (("plain", plain), ("widened", widened))
    }
    assert width["widened"] > width["plain"] + 0.03
    assert widened.to_dict()["reference"]["bias_per_distance"] == 0.02
    assert widened.to_dict()["estimate"]["calibration_sd"] == pytest.approx(0.02)
    assert plain.to_dict()["estimate"]["calibration_sd"] == 0.0


def test_rows_outside_the_champions_training_range_give_no_figure_and_no_harm() -> None:
    frame, _ = _window(3000, seed=4)
    # 80% of the rows below the champion's training minimum of feature_1.
    frame["feature_1"] = np.where(np.arange(3000) < 2400, -1.0, 5.0)
    lineage = _lineage(0.90, ranges={"feature_1": (0.0, 10.0)})

    refused = window_performance(frame, lineage, DriftRequest())

    assert refused.estimate is not None and refused.estimate.status == "out_of_support"
    assert refused.harm.estimated is None and not refused.harmful  # 0.76 vs 0.90: not claimed
    assert refused.harm.unsupported is not None and "feature_1 80.0%" in refused.harm.unsupported
    assert refused.harm.figures["out_of_range"] == {"feature_1": pytest.approx(0.8)}
    assert refused.to_dict()["estimate"]["roc_auc"] is None
    assert "out of support: no figure claimed" in refused.render_html()
    inside = window_performance(frame.assign(feature_1=5.0), lineage, DriftRequest())
    assert inside.estimate is not None and inside.estimate.status == "ok" and inside.harmful
