"""What the monitoring commands share: turning exceptions into documented exit codes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

EXIT_ERROR = 1
EXIT_BAD_INPUT = 2


@contextmanager
def exit_on_error(bad_input: tuple[type[BaseException], ...]) -> Iterator[None]:
    """Print an error and exit 2 for bad input (the given types), 1 for anything else.

    Exit codes raised inside (``typer.Exit``) pass through untouched.
    """
    try:
        yield
    except typer.Exit:
        raise
    except bad_input as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from error
    except Exception as error:
        typer.echo(f"error: {type(error).__name__}: {error}", err=True)
        raise typer.Exit(EXIT_ERROR) from error
