"""What a ``churn score`` run produced: counts, timings, and its two files."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from serving.batch.inputs import USER_ID

# Users that could not be scored, listed in the outcome (the file lists them all).
_EXAMPLES = 20


@dataclass
class ScoreOutcome:
    """What a scoring run did, and where its time went.

    Attributes:
        path: The scores file.
        unscored_path: The list of users that could not be scored, with the reason.
        at: The point in time of the features.
        model_name: Registered model scored with.
        model_version: Its version.
        scored: Users scored.
        unscored: Users not scored, by reason (``no_features``, ``missing_features``).
        unscored_examples: The first few of them: user, reason, detail.
        reasons_note: Why no reasons were written, when none were.
        model_description: The estimator and its trees.
        engine_note: Which engine scored, and why.
        missing_note: The missing-value policy applied, and where it comes from.
        scored_with_missing: Users scored with a missing feature (taken by the model as
            missing, or filled), as the policy says.
    """

    path: Path
    unscored_path: Path
    at: datetime
    model_name: str
    model_version: str
    scored: int = 0
    unscored: dict[str, int] = field(default_factory=dict)
    unscored_examples: list[tuple[int, str, str]] = field(default_factory=list)
    reasons_note: str = ""
    model_description: str = ""
    engine_note: str = ""
    missing_note: str = ""
    scored_with_missing: int = 0
    retrieval_seconds: float = 0.0
    scoring_wait_seconds: float = 0.0
    scoring_seconds: float = 0.0
    listing_seconds: float = 0.0
    model_load_seconds: float = 0.0
    startup_seconds: float = 0.0
    seconds: float = 0.0

    def count_unscored(self, unscored: pd.DataFrame) -> None:
        """Add a list of unscored users (``user_id``, ``reason``, ``detail``)."""
        for row in unscored.head(_EXAMPLES).itertuples():
            if len(self.unscored_examples) < _EXAMPLES:
                self.unscored_examples.append((int(row.user_id), str(row.reason), str(row.detail)))
        for reason, count in unscored["reason"].value_counts().items():
            self.unscored[str(reason)] = self.unscored.get(str(reason), 0) + int(count)


def unscored_path_for(path: Path) -> Path:
    """Where the users that could not be scored are listed, beside the scores."""
    return path.with_name(f"{path.stem}.unscored.parquet")


def most_at_risk(path: Path, *, count: int) -> str:
    """The ``count`` highest churn probabilities of a scores file, with their reasons."""
    scores = pd.read_parquet(path)
    top = scores.nlargest(count, "churn_probability")
    ranks = sorted(int(c.split("_")[1]) for c in scores.columns if c.endswith("_feature"))
    lines = [f"{len(top)} users most at risk:"]
    for row in top.itertuples(index=False):
        values = row._asdict()
        reasons = "; ".join(
            f"{values[f'reason_{k}_feature']}={values[f'reason_{k}_value']:.3g} "
            f"({values[f'reason_{k}_contribution']:+.3f})"
            for k in ranks
        )
        lines.append(
            f"  user {values[USER_ID]}: {values['churn_probability']:.3f}"
            + (f"  because {reasons}" if reasons else "")
        )
    return "\n".join(lines)
