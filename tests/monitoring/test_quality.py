"""Data-quality checks of the current window against the reference, with known shares."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.comparison import compare_frames
from monitoring.settings import MonitoringSettings

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`

SETTINGS = MonitoringSettings()


def make_window(rows: int, *, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "usage": rng.uniform(0.0, 100.0, rows),
            "tenure": rng.uniform(1.0, 48.0, rows),
            "plan": rng.choice([1.0, 2.0, 3.0], rows),
            "region": rng.choice(["north", "south"], rows),
        }
    )


def test_planted_nulls_out_of_range_values_and_unseen_categories_are_reported() -> None:
    reference = make_window(2000, seed=1)
    current = make_window(1000, seed=2)
    current.loc[:149, "usage"] = np.nan  # 15% nulls: minor
    # Inside the reference's range, but for the planted values below.
    current["tenure"] = current["tenure"].clip(reference["tenure"].min(), reference["tenure"].max())
    current.loc[200:249, "tenure"] = 60.0  # 50 of 1000 above the reference's maximum
    current.loc[300:329, "tenure"] = -5.0  # 30 below its minimum: 8% outside, minor
    current.loc[400:519, "plan"] = 4.0  # 120 of 1000 in a plan training never had: major
    current.loc[600:619, "region"] = "west"  # 2%: minor

    report = compare_frames(reference, current, SETTINGS)
    quality = {item.feature: item for item in report.quality.features}

    usage = quality["usage"]
    assert usage.current_null_rate == pytest.approx(0.15)
    assert usage.reference_null_rate == 0.0
    assert usage.severity == "minor" and dict(usage.checks)["nulls"] == "minor"
    tenure = quality["tenure"].to_dict()
    assert tenure["out_of_range"]["above"] == 50 and tenure["out_of_range"]["below"] == 30
    assert tenure["out_of_range"]["share"] == pytest.approx(0.08)
    assert tenure["out_of_range"]["reference_max"] == reference["tenure"].max()
    assert tenure["out_of_range"]["expected_share"] == pytest.approx(2 / 2001)
    assert tenure["severity"] == "minor"
    plan = quality["plan"].to_dict()
    assert plan["unseen_categories"] == {"categories": ["4"], "count": 120, "share": 0.12}
    assert plan["severity"] == "major"
    region = quality["region"].to_dict()
    assert region["unseen_categories"]["categories"] == ["west"]
    assert region["unseen_categories"]["share"] == pytest.approx(0.02)
    assert region["severity"] == "minor"

    summary = report.summary()["quality"]
    assert summary["severity"] == "major"
    assert summary["major"] == ["plan"]
    assert summary["minor"] == ["usage", "tenure", "region"]
    assert "null rate 15.0% (reference 0.0%)" in summary["findings"]["usage"]


def test_a_window_like_the_reference_has_no_quality_finding() -> None:
    report = compare_frames(make_window(2000, seed=3), make_window(1000, seed=4), SETTINGS)
    summary = report.summary()["quality"]
    assert summary["severity"] == "none" and summary["findings"] == {}
    # Values beyond a finite sample's extremes happen by chance: about 2 / (n + 1) of them.
    tenure = next(item for item in report.quality.features if item.feature == "tenure")
    assert tenure.coverage is not None and tenure.coverage.share < 0.01


def test_nulls_that_training_had_too_are_not_a_finding() -> None:
    reference = make_window(1000, seed=5)
    current = make_window(1000, seed=6)
    reference.loc[:299, "usage"] = np.nan
    current.loc[:339, "usage"] = np.nan  # 34% against 30%: below the 5-point threshold
    report = compare_frames(reference, current, SETTINGS)
    usage = next(item for item in report.quality.features if item.feature == "usage")
    assert usage.severity == "none"
    assert usage.to_dict()["null_rate"]["increase"] == pytest.approx(0.04)


def test_a_column_gone_null_is_major_and_thresholds_are_settings() -> None:
    reference = make_window(500, seed=7)
    current = make_window(500, seed=8)
    current["usage"] = np.nan
    report = compare_frames(reference, current, SETTINGS)
    assert report.quality.names_with("major") == ["usage"]
    lenient = MonitoringSettings(quality_null_minor=0.999, quality_null_major=1.0)
    assert compare_frames(reference, current, lenient).quality.names_with("major") == ["usage"]
    off = MonitoringSettings(quality_null_minor=1.0, quality_null_major=1.0)
    current.loc[:0, "usage"] = 5.0  # 499 of 500 missing: below 1.0
    assert compare_frames(reference, current, off).quality.severity == "none"


def test_a_tiny_current_window_is_insufficient_data() -> None:
    current = make_window(10, seed=9)
    current["usage"] = np.nan
    report = compare_frames(make_window(500, seed=10), current, SETTINGS)
    assert report.quality.severity == "none"
    assert "usage" in report.summary()["quality"]["insufficient_data"]
