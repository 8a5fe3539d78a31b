"""The trusted types cover every model family training fits."""

from __future__ import annotations

import pytest
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier

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
        assert untrusted_types_of(model.fit(frame, labels)) == []
    assert len(TRUSTED_TYPES) == 2
