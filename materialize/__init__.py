"""Materialize: the data engineer's stage (generate, ingest, apply, materialize, skew-check).

Each command has one typed entry point here: a frozen request in, an outcome out
(``cli/materialize.py`` builds the requests from the options and prints the outcomes). The
Feast batch engine the profiles name lives in :mod:`materialize.engine`.
"""

from __future__ import annotations

from materialize.apply import ApplyOutcome, ApplyRequest, run_apply
from materialize.generate import (
    GenerateOutcome,
    GenerateRequest,
    parse_shifts,
    run_generate,
    to_utc,
)
from materialize.ingest import IngestReport, IngestRequest, run_ingest
from materialize.online import MaterializeRequest, MaterializeResult, parse_time, run_materialize
from materialize.skew import SkewReport, SkewRequest, run_skew_check

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
