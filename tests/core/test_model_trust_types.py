"""The trusted types cover every model family training fits."""

from __future__ import annotations

import pytest
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier

from core.calibration import calibrate
from core.model_trust import (
    TRUSTED_TYPES,
    untrusted_types_of,
)
from tests.utils.serving import training_frame

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


def test_the_trusted_types_cover_every_model_family_training_fits() -> None:
    frame, labels = training_frame(rows=200, seed=1)
    for model in (
        GradientBoostingClassifier(n_estimators=3),
        HistGradientBoostingClassifier(max_iter=3),
    ):
        fitted = model.fit(frame[:150], labels[:150])
        assert untrusted_types_of(fitted) == []
        # Both calibrators training may choose, around either family.
        for method in ("sigmoid", "isotonic"):
            from sklearn.calibration import CalibratedClassifierCV
            from sklearn.frozen import FrozenEstimator

            wrapped = CalibratedClassifierCV(FrozenEstimator(fitted), method=method)
            assert untrusted_types_of(wrapped.fit(frame[150:], labels[150:])) == []
        calibrated, _ = calibrate(fitted, frame[150:], labels[150:], seed=0)
        assert untrusted_types_of(calibrated) == []
    assert len(TRUSTED_TYPES) == 4
