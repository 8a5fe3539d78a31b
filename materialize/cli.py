"""The ``churn`` command line: one subcommand per pipeline stage.

Each stage module holds its pure core function and a thin Typer command; this module only
collects them. Stage modules keep heavy imports (feast, mlflow, sklearn) inside function
bodies so ``churn --help`` stays fast.
"""

from __future__ import annotations

import importlib
import warnings

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
_SILENCED_WARNINGS: list[tuple[str, type[Warning]]] = [
    (r"fetch_arrow_table\(\) is deprecated", DeprecationWarning),  # ibis inside Feast
    (r"The ``noload`` loader strategy is deprecated", Warning),  # MLflow's SQL store
    (r"On demand feature view is an experimental feature", RuntimeWarning),  # Feast
]


def main() -> None:
    """Console-script entry point."""
    for message, category in _SILENCED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    build_app()()
