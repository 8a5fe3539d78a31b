"""The domain classifier (multivariate drift) against cases with a known answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from monitoring.multivariate import delong_interval, detect_domain_shift
from monitoring.settings import MonitoringSettings

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`

SETTINGS = MonitoringSettings()
FEATURES = ["usage", "tenure", "engagement", "plan", "region"]


def make_window(rows: int, *, seed: int, engagement_shift: float = 0.0) -> pd.DataFrame:
    """Independent features (so one shifted feature is the only separating one)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "usage": rng.gamma(2.0, 10.0, rows),
            "tenure": rng.normal(24.0, 6.0, rows),
            "engagement": rng.normal(5.0, 2.0, rows) + engagement_shift,
            "plan": rng.integers(0, 4, rows).astype(np.float64),
            "region": rng.choice(["north", "south", "east"], rows),
        }
    )


def test_delong_matches_the_rank_auc_and_shrinks_with_the_sample() -> None:
    rng = np.random.default_rng(0)
    widths = []
    for rows in (400, 4000):
        labels = rng.integers(0, 2, rows)
        scores = np.round(rng.random(rows) + 0.3 * labels, 2)  # ties included
        auc, low, high = delong_interval(labels, scores)
        assert auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        assert low < auc < high
        widths.append(high - low)
    # The half-width goes as 1 / sqrt(n): ten times the rows, about a third of the width.
    assert widths[1] == pytest.approx(widths[0] / np.sqrt(10), rel=0.25)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_two_windows_of_one_distribution_give_an_interval_around_one_half(seed: int) -> None:
    result = detect_domain_shift(
        make_window(1500, seed=seed), make_window(1500, seed=seed + 10), FEATURES, SETTINGS
    )
    assert result.status == "ok"
    assert result.low is not None and result.high is not None
    assert result.low <= 0.5 <= result.high
    assert result.severity == "none" and not result.drift_detected
    assert result.top_features == ()
    assert len(result.fold_auroc) == SETTINGS.multivariate_folds


def test_the_same_rows_on_both_sides_are_exactly_inseparable() -> None:
    # Equal rows share a fold: never learned with one label and tested with the other.
    window = make_window(800, seed=4)
    result = detect_domain_shift(window, window.copy(), FEATURES, SETTINGS)
    assert result.auroc == pytest.approx(0.5)
    assert result.low is not None and result.high is not None
    assert result.low <= 0.5 <= result.high
    assert result.severity == "none"


def test_a_planted_shift_is_found_and_its_feature_named_first() -> None:
    result = detect_domain_shift(
        make_window(2000, seed=5),
        make_window(2000, seed=6, engagement_shift=3.0),  # 1.5 SD: best AUROC 0.86
        FEATURES,
        SETTINGS,
    )
    assert result.auroc is not None and result.low is not None
    assert result.auroc >= SETTINGS.multivariate_auc_major and result.low > 0.5
    assert result.severity == "major"
    assert result.separation[0].feature == "engagement"
    assert result.top_features == ("engagement",)  # the others are noise
    assert result.separation[0].importance > 0.2
    assert "domain classifier AUROC" in result.reasons[0]


def test_a_change_in_how_features_go_together_is_found_when_every_marginal_is_equal() -> None:
    # usage and tenure keep their distributions, but tenure follows usage in the current
    # window: no univariate test can see it, the classifier does.
    reference = make_window(2000, seed=7)
    current = make_window(2000, seed=8)
    order = np.argsort(np.argsort(current["usage"].to_numpy()))
    current["tenure"] = np.sort(current["tenure"].to_numpy())[order]
    result = detect_domain_shift(reference, current, FEATURES, SETTINGS)
    assert result.severity != "none"
    assert set(result.top_features[:2]) == {"usage", "tenure"}


def test_thresholds_come_from_the_settings() -> None:
    reference = make_window(2000, seed=5)
    current = make_window(2000, seed=6, engagement_shift=2.0)
    strict = MonitoringSettings(multivariate_auc_minor=0.99, multivariate_auc_major=0.995)
    result = detect_domain_shift(reference, current, FEATURES, strict)
    assert result.severity == "none" and result.top_features == ()
    assert result.thresholds["auc_major"] == 0.995


def test_too_few_rows_are_insufficient_data() -> None:
    result = detect_domain_shift(
        make_window(20, seed=1), make_window(500, seed=2), FEATURES, SETTINGS
    )
    assert result.status == "insufficient_data"
    assert result.severity == "none" and result.auroc is None
    assert "fewer than 30 rows" in (result.note or "")
    document = result.to_dict()
    assert document["auroc"] == {"estimate": None, "low": None, "high": None}


def test_missing_values_are_a_signal_not_an_error() -> None:
    reference = make_window(1500, seed=9)
    current = make_window(1500, seed=10)
    current.loc[current.index[:300], "usage"] = np.nan
    current.loc[current.index[300:600], "usage"] = np.inf  # missing too, not an error
    result = detect_domain_shift(reference, current, FEATURES, SETTINGS)
    assert result.severity != "none"
    assert result.separation[0].feature == "usage"
