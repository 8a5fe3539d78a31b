"""Turning an error that escapes a command into a printed message and its exit code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from core.errors import ChurnError
from core.exits import ExitCode, exit_code_for


@contextmanager
def exit_on_error(*, also_bad_input: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Print an escaping error on stderr and exit with its code.

    Args:
        also_bad_input: Further error types (of other libraries) that mean bad input here.

    Exit codes raised inside (``typer.Exit``) pass through untouched. Errors of our own
    hierarchy print their message alone; anything else is printed with its type, since
    the message of an unexpected error rarely says what failed.
    """
    try:
        yield
    except typer.Exit:
        raise
    except Exception as error:
        code = ExitCode.BAD_INPUT if isinstance(error, also_bad_input) else exit_code_for(error)
        ours = isinstance(error, (ChurnError, *also_bad_input))
        message = str(error) if ours else f"{type(error).__name__}: {error}"
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(int(code)) from error
