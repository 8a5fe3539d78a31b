"""The exit codes of every ``churn`` command, and the one mapping from errors to them.

Schedulers branch on these numbers (``workflow/outcomes.py``), so they mean the same thing
for every command:

====  ============  =============================================================
code  name          meaning
====  ============  =============================================================
0     OK            the command did its work
1     FAILURE       a store, a service or a file failed; or a check found mismatches
2     BAD_INPUT     arguments, input files, profile or registry state are unusable
3     BLOCKED       the work ran and was refused: a model below the quality gate,
                    an online store out of memory
4     FINDING       the work ran and found something to act on: major drift, an AUC
                    below the minimum
5     STALE_DATA    the data needed is not there yet (nothing done)
====  ============  =============================================================

A stage marks its own errors by deriving them from :class:`InputError`,
:class:`UnavailableError` or :class:`BlockedError`; :func:`exit_code_for` then maps any
error, and :func:`exit_on_error` turns it into a printed message and the exit code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum


class ExitCode(IntEnum):
    """Exit code of a ``churn`` command (the table in this module's docstring)."""

    OK = 0
    FAILURE = 1
    BAD_INPUT = 2
    BLOCKED = 3
    FINDING = 4
    STALE_DATA = 5


class InputError(ValueError):
    """Base of the errors caused by what the user gave (exit 2)."""


class UnavailableError(RuntimeError):
    """Base of the errors of a store, service or file that failed (exit 1)."""


class BlockedError(RuntimeError):
    """Base of the errors of work that ran and was refused (exit 3)."""


class StaleDataError(RuntimeError):
    """The data a command needs has not arrived yet (exit 5)."""


_OURS = (InputError, UnavailableError, BlockedError, StaleDataError)


def _foreign_input_errors() -> tuple[type[BaseException], ...]:
    """Errors of libraries that mean bad input: invalid settings."""
    from pydantic import ValidationError

    return (ValidationError,)


def exit_code_for(error: BaseException) -> ExitCode:
    """The exit code a command ends with when ``error`` escapes it."""
    if isinstance(error, (InputError, *_foreign_input_errors())):
        return ExitCode.BAD_INPUT
    if isinstance(error, BlockedError):
        return ExitCode.BLOCKED
    if isinstance(error, StaleDataError):
        return ExitCode.STALE_DATA
    return ExitCode.FAILURE


@contextmanager
def exit_on_error(*, also_bad_input: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Print an escaping error on stderr and exit with its code.

    Args:
        also_bad_input: Further error types (of other libraries) that mean bad input here.

    Exit codes raised inside (``typer.Exit``) pass through untouched. Errors of our own
    hierarchy print their message alone; anything else is printed with its type, since
    the message of an unexpected error rarely says what failed.
    """
    import typer  # here, not at the top: Spark executors import this module's errors

    try:
        yield
    except typer.Exit:
        raise
    except Exception as error:
        code = ExitCode.BAD_INPUT if isinstance(error, also_bad_input) else exit_code_for(error)
        ours = isinstance(error, (*_OURS, *also_bad_input))
        message = str(error) if ours else f"{type(error).__name__}: {error}"
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(int(code)) from error
