"""Serving: predictions online (``churn serve``, a FastAPI app) and in batch (``churn score``).

The stage's entry points, for the command line above it:

- :func:`run_server` (:class:`ServeRequest` in, :class:`ServeOutcome` out): the prediction
  API until interrupted; :func:`create_app` builds the app itself.
- :func:`run_score` (:class:`ScoreRequest` in, :class:`ScoreOutcome` out): every user scored
  at one point in time (:mod:`serving.batch`).

The names are imported when first used (PEP 562): the batch scoring process imports one
module of :mod:`serving.batch` through this package, and ``churn serve`` must choose how
prometheus-client stores metrics before the app imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.lazy import lazy_attributes

if TYPE_CHECKING:
    from serving.app import create_app
    from serving.batch import ScoreOutcome, ScoreRequest, run_score
    from serving.server import ServeOutcome, ServeRequest, run_server

__all__ = [
    "ScoreOutcome",
    "ScoreRequest",
    "ServeOutcome",
    "ServeRequest",
    "create_app",
    "run_score",
    "run_server",
]

_HOMES = {
    "ScoreOutcome": "serving.batch",
    "ScoreRequest": "serving.batch",
    "ServeOutcome": "serving.server",
    "ServeRequest": "serving.server",
    "create_app": "serving.app",
    "run_score": "serving.batch",
    "run_server": "serving.server",
}


__getattr__ = lazy_attributes(__name__, _HOMES)
