"""The ``churn`` command line: one subcommand per pipeline stage, the top layer.

Each stage module holds its pure core function and a thin Typer command; this module only
imports and collects them (the import-linter contract in pyproject keeps every stage
below it). Stage modules keep heavy imports (feast, mlflow, sklearn) inside function
bodies so ``churn --help`` stays fast.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

import typer

from materialize.apply import apply_command
from materialize.generate import generate_command
from materialize.ingest import ingest_command
from materialize.online import materialize_command
from materialize.skew import skew_check_command
from monitoring.drift import drift_command
from monitoring.evaluate import evaluate_command
from serving.batch_score import score_command
from serving.cli import serve_command
from training.promote import promote_command, rollback_command
from training.train import train_command

# Every stage command under its name, in pipeline order.
COMMANDS: list[tuple[str, Callable[..., None]]] = [
    ("generate", generate_command),
    ("ingest", ingest_command),
    ("apply", apply_command),
    ("materialize", materialize_command),
    ("skew-check", skew_check_command),
    ("train", train_command),
    ("promote", promote_command),
    ("rollback", rollback_command),
    ("serve", serve_command),
    ("drift", drift_command),
    ("evaluate", evaluate_command),
    ("score", score_command),
]


def build_app() -> typer.Typer:
    """Assemble the root Typer application from the stage commands."""
    app = typer.Typer(
        name="churn",
        help="Churn platform: data, features, training, serving and monitoring.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for name, command in COMMANDS:
        app.command(name)(command)
    return app


# Third-party deprecation notices that users of the command line cannot act on; the test
# suite still sees them (pyproject filterwarnings says why each is tolerated there).
_SILENCED_WARNINGS = re.compile(
    r"fetch_arrow_table\(\) is deprecated"  # ibis inside Feast's DuckDB store
    r"|The ``noload`` loader strategy is deprecated"  # MLflow's SQL tracking store
    r"|On demand feature view is an experimental feature"  # Feast, on every retrieval
)


def _install_warning_display() -> None:
    """Drop the silenced notices at display time.

    Feast calls ``warnings.simplefilter`` when its modules are imported, which puts its own
    filters in front of any installed earlier, so the notices are dropped where they are
    shown instead.
    """
    show = warnings.showwarning

    def _show(message: Warning | str, *args: Any, **kwargs: Any) -> None:
        if not _SILENCED_WARNINGS.search(str(message)):
            show(message, *args, **kwargs)

    warnings.showwarning = _show


def main() -> None:
    """Console-script entry point."""
    _install_warning_display()
    build_app()()
