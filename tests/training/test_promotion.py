"""The promotion policy on its own: who becomes champion, and the reason given."""

from __future__ import annotations

import pytest

from training.promotion import ChampionScore, PromotionDecision, decide_promotion

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


def test_the_first_model_becomes_champion() -> None:
    assert decide_promotion(0.7, None) == PromotionDecision(True, "first champion")


def test_a_strictly_better_model_is_promoted_and_a_tie_is_not() -> None:
    better = decide_promotion(0.81, ChampionScore("3", 0.8))
    tie = decide_promotion(0.8, ChampionScore("3", 0.8))
    assert better == PromotionDecision(
        True, "beats champion v3 on this test window (0.8100 > 0.8000)"
    )
    assert tie == PromotionDecision(
        False, "does not beat champion v3 on this test window (0.8000 <= 0.8000)"
    )


def test_a_champion_that_could_not_be_scored_is_kept_with_its_reason() -> None:
    unscored = ChampionScore("3", None, "champion v3 uses other features (tenure)")
    assert decide_promotion(0.99, unscored) == PromotionDecision(
        False, "champion v3 uses other features (tenure)"
    )
