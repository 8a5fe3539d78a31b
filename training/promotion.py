"""Promotion policy: register a gated model, make it challenger, champion if it wins.

The decision (:func:`decide_promotion`) is a pure function of the two scores on this run's
test window; :func:`register_and_promote` applies it to the registry under the model's
champion lock (taken by the caller). The champion is only scored when its lineage allows a
fair comparison: same features available, and not fitted on rows of this test window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import mlflow
import pandas as pd

from core.errors import UntrustedModelError
from core.lineage import LineageError, ModelLineage
from core.models import ModelRegistry
from training.dataset import TrainingSet
from training.models import evaluate
from training.registry import (
    CHAMPION,
    alias_version,
    register_version,
    set_challenger,
    set_champion,
)
from training.split import TimeSplit


@dataclass(frozen=True)
class ChampionScore:
    """The champion's ROC AUC on this run's test rows, or why it has none."""

    version: str
    roc_auc: float | None
    note: str = ""


@dataclass(frozen=True)
class PromotionDecision:
    """Whether the new version becomes champion, and why."""

    promote: bool
    why: str


@dataclass(frozen=True)
class Registration:
    """What the registry holds after a gated model was registered.

    Attributes:
        version: The new version.
        promoted: Whether it became champion (else it is challenger).
        reason: One line for the terminal and the run's ``registry.outcome`` tag.
        champion_test_roc_auc: The former champion's score on this test window, if scored.
    """

    version: str
    promoted: bool
    reason: str
    champion_test_roc_auc: float | None


def decide_promotion(new_auc: float, champion: ChampionScore | None) -> PromotionDecision:
    """Promote when there is no champion or the new model beats it on the same rows.

    A champion that could not be scored is kept (promotion then needs a person).
    """
    if champion is None:
        return PromotionDecision(True, "first champion")
    if champion.roc_auc is None:
        return PromotionDecision(False, champion.note)
    if new_auc > champion.roc_auc:
        return PromotionDecision(
            True,
            f"beats champion v{champion.version} on this test window "
            f"({new_auc:.4f} > {champion.roc_auc:.4f})",
        )
    return PromotionDecision(
        False,
        f"does not beat champion v{champion.version} on this test window "
        f"({new_auc:.4f} <= {champion.roc_auc:.4f})",
    )


def register_and_promote(
    registry: ModelRegistry,
    *,
    model_name: str,
    model_uri: str,
    run_id: str,
    lineage: ModelLineage,
    training_set: TrainingSet,
    split: TimeSplit,
) -> Registration:
    """Register a new version, make it challenger, and champion if it beats the champion.

    Call under the model's champion lock: another training, a retraining, a promotion
    or a rollback finishing at the same time waits, then decides against the champion
    this one left (so the best version wins and no history entry is lost).

    Args:
        registry: The registry to register in (and load the champion from).
        model_name: The registered model.
        model_uri: The logged model of this run.
        run_id: This run.
        lineage: The new version's lineage (its tags).
        training_set: This run's training set.
        split: Its split (the champion is scored on the test part).
    """
    client = registry.client
    champion = alias_version(client, model_name, CHAMPION)
    score = (
        score_champion(registry, champion, training_set, split) if champion is not None else None
    )
    version = register_version(
        client,
        name=model_name,
        model_uri=model_uri,
        run_id=run_id,
        tags=lineage.to_tags(),
        description=f"Classifier on Feast feature service {lineage.feature_service}.",
    )
    new_version = str(version.version)
    set_challenger(client, model_name, new_version)
    if score is not None and score.roc_auc is not None:
        mlflow.log_metric("champion_test_roc_auc", score.roc_auc)
    decision = decide_promotion(float(lineage.test_roc_auc or 0.0), score)
    if decision.promote:
        expected = str(champion.version) if champion is not None else None
        set_champion(client, model_name, new_version, reason=decision.why, expected=expected)
    role = "champion" if decision.promote else "challenger"
    return Registration(
        version=new_version,
        promoted=decision.promote,
        reason=f"registered {model_name} v{new_version} as {role}: {decision.why}",
        champion_test_roc_auc=score.roc_auc if score is not None else None,
    )


def score_champion(
    registry: ModelRegistry, champion: Any, training_set: TrainingSet, split: TimeSplit
) -> ChampionScore:
    """The champion's test ROC AUC on this run's test rows, or None and why not.

    The champion is loaded through the model checkpoint (:class:`core.models.ModelRegistry`):
    a version whose files changed or that needs untrusted types is not scored.
    """
    version = str(champion.version)
    try:
        lineage = ModelLineage.from_tags(champion.tags, owner=f"champion v{version}")
    except LineageError as error:
        return ChampionScore(version, None, f"{error}; promote by hand if wanted")
    features = list(lineage.features)
    missing = [f for f in features if f not in split.test.columns]
    if missing:
        return ChampionScore(
            version,
            None,
            f"champion v{version} uses other features ({', '.join(missing)}) and cannot be "
            "scored on this test window; promote by hand if wanted",
        )
    # The champion was refit on every row before its own test window: scoring it on rows it
    # was fitted on would inflate its score (a back-fill or a shorter labels file).
    test_start = split.boundaries()["data.test_start"]
    fitted_before = lineage.test_start
    if fitted_before is not None and pd.Timestamp(fitted_before) > pd.Timestamp(test_start):
        return ChampionScore(
            version,
            None,
            f"champion v{version} was fitted on rows up to {_iso(fitted_before)}, inside "
            f"this test window (from {test_start}), so it cannot be compared fairly; "
            "promote by hand if wanted",
        )
    try:
        _, model = registry.load_version(str(champion.name), version=version)
    except UntrustedModelError as error:
        return ChampionScore(
            version,
            None,
            f"champion v{version} cannot be loaded safely ({error}); promote by hand if wanted",
        )
    try:
        metrics = evaluate(model, split.test[features], split.test[training_set.label_column])
    except ValueError as error:  # e.g. a model without null support on rows kept with nulls
        return ChampionScore(
            version, None, f"champion v{version} cannot score this test window: {error}"
        )
    return ChampionScore(version, metrics["roc_auc"])


def _iso(value: datetime) -> str:
    return value.isoformat()
