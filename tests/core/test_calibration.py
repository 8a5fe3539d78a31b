"""The calibrator training fits: chosen on held-out rows, or none when not needed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from core.calibration import calibrate, reliability, split_calibrated

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


def _rows(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    return pd.DataFrame(x, columns=["a", "b"]), 1 / (1 + np.exp(-(1.5 * x[:, 0] - x[:, 1])))


def test_a_miscalibrated_model_gets_a_calibrator_and_a_calibrated_one_none() -> None:
    rng = np.random.default_rng(0)
    train, p_train = _rows(4000, 1)
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0)
    model.fit(train, rng.random(len(train)) < p_train)
    held_out, p_held = _rows(3000, 2)

    # Held-out churn is a third of what the model learnt: its probabilities are too high.
    shifted, choice = calibrate(model, held_out, rng.random(3000) < p_held / 3, seed=0)
    assert choice.method in ("sigmoid", "isotonic")
    inner, calibrator = split_calibrated(shifted)
    assert inner is model and calibrator is not None
    assert shifted.predict_proba(held_out)[:, 1].mean() == pytest.approx(
        (p_held / 3).mean(), abs=0.03
    )

    # Held-out churn exactly as the model predicts it: its own probabilities are kept.
    own = model.predict_proba(held_out)[:, 1]
    kept, choice = calibrate(model, held_out, rng.random(3000) < own, seed=0)
    assert choice.method == "none" and kept is model
    assert set(choice.log_loss) == {"none", "sigmoid", "isotonic"}


def test_reliability_bins_and_ece() -> None:
    bins, ece = reliability(np.array([0, 1, 1, 0]), np.array([0.05, 0.95, 0.55, 0.45]), bins=2)
    assert [item.count for item in bins] == [2, 2]
    # Bin [0, .5): mean 0.25, observed 0; bin [.5, 1]: mean 0.75, observed 1.
    assert ece == pytest.approx(0.25)
