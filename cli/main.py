"""The ``churn`` command line: one subcommand per pipeline stage, the top layer.

Each stage has one module here (``cli/materialize.py``, ``cli/training.py``,
``cli/serving.py``, ``cli/monitoring.py``) holding its Typer commands: options in, the
stage's typed entry point called, its outcome printed and turned into an exit code. This
module only collects them (the import-linter contract in pyproject keeps every stage below
the cli).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from typing import Any

import typer

from cli import materialize, monitoring, serving, training

# Every command under its name, in pipeline order: one cli module per stage. A cli module
# imports its stage inside each command's body, so `churn --help` loads no stage.
COMMANDS: list[tuple[str, Callable[..., None]]] = [
    *materialize.COMMANDS.items(),
    *training.COMMANDS.items(),
    *serving.COMMANDS.items(),
    *monitoring.COMMANDS.items(),
]


# Commands that answer while someone waits (a request, an event): they keep the priority
# they were started with; every other command is batch work and yields the CPU to them.
LATENCY_SENSITIVE = frozenset({"serve", "stream"})


def lower_batch_priority(context: typer.Context) -> None:
    """Add ``CHURN_BATCH_NICENESS`` to a batch command's niceness before it runs.

    On a machine shared with ``churn serve``, a retraining or a materialization otherwise
    takes both cores and the service's p99 with them (the soak benchmark measured 10 s).
    """
    if context.invoked_subcommand in LATENCY_SENSITIVE or context.resilient_parsing:
        return
    from cli.errors import exit_on_error
    from core.settings import BatchSettings

    with exit_on_error():
        niceness = BatchSettings().niceness
    if niceness:
        os.nice(niceness)


def build_app() -> typer.Typer:
    """Assemble the root Typer application from the stage commands."""
    app = typer.Typer(
        name="churn",
        help="Churn platform: data, features, training, serving and monitoring.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback()(lower_batch_priority)
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
