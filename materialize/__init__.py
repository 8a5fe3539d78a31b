"""Materialize: the data engineer's stage (generate, ingest, apply, materialize, skew-check).

Each command has one typed entry point here: a frozen request in, an outcome out
(``cli/materialize.py`` builds the requests from the options and prints the outcomes). The
Feast batch engine the profiles name lives in :mod:`materialize.engine`.

The names are imported on first use (PEP 562): the executors of the engine's spark backend
import ``materialize.engine.backends.spark_tasks``, which imports this package first, and
must not import Feast (about 4 s per Python worker).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from materialize.apply import ApplyOutcome, ApplyRequest, run_apply
    from materialize.generate import (
        GenerateOutcome,
        GenerateRequest,
        parse_shifts,
        run_generate,
        to_utc,
    )
    from materialize.ingest import IngestReport, IngestRequest, run_ingest
    from materialize.online import (
        MaterializeRequest,
        MaterializeResult,
        parse_time,
        run_materialize,
    )
    from materialize.skew import SkewReport, SkewRequest, run_skew_check

_HOMES = {
    "ApplyOutcome": "materialize.apply",
    "ApplyRequest": "materialize.apply",
    "run_apply": "materialize.apply",
    "GenerateOutcome": "materialize.generate",
    "GenerateRequest": "materialize.generate",
    "parse_shifts": "materialize.generate",
    "run_generate": "materialize.generate",
    "to_utc": "materialize.generate",
    "IngestReport": "materialize.ingest",
    "IngestRequest": "materialize.ingest",
    "run_ingest": "materialize.ingest",
    "MaterializeRequest": "materialize.online",
    "MaterializeResult": "materialize.online",
    "parse_time": "materialize.online",
    "run_materialize": "materialize.online",
    "SkewReport": "materialize.skew",
    "SkewRequest": "materialize.skew",
    "run_skew_check": "materialize.skew",
}

__all__ = [
    "ApplyOutcome",
    "ApplyRequest",
    "GenerateOutcome",
    "GenerateRequest",
    "IngestReport",
    "IngestRequest",
    "MaterializeRequest",
    "MaterializeResult",
    "SkewReport",
    "SkewRequest",
    "parse_shifts",
    "parse_time",
    "run_apply",
    "run_generate",
    "run_ingest",
    "run_materialize",
    "run_skew_check",
    "to_utc",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
