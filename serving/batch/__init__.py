"""Batch scoring (``churn score``): every user scored at one point in time, with reasons.

The entry point is :func:`run_score` (a :class:`ScoreRequest` in, a :class:`ScoreOutcome`
out). The modules, in the order a run uses them:

- :mod:`serving.batch.settings`: ``CHURN_SCORING_*`` (the model's own settings are
  ``core.settings.ModelSettings``).
- :mod:`serving.batch.inputs`: ``--at`` and the users file.
- :mod:`serving.batch.run`: the request, the two processes.
- :mod:`serving.batch.registry`: the version's lineage and its trusted model.
- :mod:`serving.batch.offline`: who is scored, and their features (offline compute).
- :mod:`serving.batch.chunks`: the chunk loop and the output pair.
- :mod:`serving.batch.worker`: the scoring process's tasks.
- :mod:`serving.batch.scorer`: one chunk's scores and reasons.
- :mod:`serving.batch.outcome`: what a run produced.

The names below are imported when first used: the scoring process imports
:mod:`serving.batch.worker` through this package and must not load Feast on the way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.lazy import lazy_attributes

if TYPE_CHECKING:
    from serving.batch.inputs import parse_at, read_users_file
    from serving.batch.outcome import ScoreOutcome, most_at_risk, unscored_path_for
    from serving.batch.run import ScoreRequest, run_score
    from serving.batch.settings import ScoringSettings

__all__ = [
    "ScoreOutcome",
    "ScoreRequest",
    "ScoringSettings",
    "most_at_risk",
    "parse_at",
    "read_users_file",
    "run_score",
    "unscored_path_for",
]

_HOMES = {
    "ScoreOutcome": "serving.batch.outcome",
    "ScoreRequest": "serving.batch.run",
    "ScoringSettings": "serving.batch.settings",
    "most_at_risk": "serving.batch.outcome",
    "parse_at": "serving.batch.inputs",
    "read_users_file": "serving.batch.inputs",
    "run_score": "serving.batch.run",
    "unscored_path_for": "serving.batch.outcome",
}


__getattr__ = lazy_attributes(__name__, _HOMES)
