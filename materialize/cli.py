"""The ``churn`` command line: one subcommand per pipeline stage.

Each stage module holds its pure core function and a thin Typer command; this module only
collects them. Stage modules keep heavy imports (feast, mlflow, sklearn) inside function
bodies so ``churn --help`` stays fast.
"""

from __future__ import annotations

import importlib
import re
import warnings
from typing import Any

import typer

# (command name, "module:function") of every stage command, in pipeline order.
COMMANDS: list[tuple[str, str]] = [
    ("generate", "materialize.generate:generate_command"),
    ("ingest", "materialize.ingest:ingest_command"),
    ("apply", "materialize.apply:apply_command"),
    ("materialize", "materialize.online:materialize_command"),
    ("skew-check", "materialize.skew:skew_check_command"),
    ("train", "training.train:train_command"),
    ("promote", "training.promote:promote_command"),
    ("rollback", "training.promote:rollback_command"),
    ("serve", "serving.cli:serve_command"),
    ("drift", "monitoring.drift:drift_command"),
    ("evaluate", "monitoring.evaluate:evaluate_command"),
    ("score", "serving.batch_score:score_command"),
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
    for name, target in COMMANDS:
        module_name, function_name = target.split(":")
        command = getattr(importlib.import_module(module_name), function_name)
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
