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

The errors themselves are in :mod:`core.errors`; :func:`exit_code_for` is the one mapping
from them to these codes, and ``cli.errors.exit_on_error`` turns an escaping error into a
printed message and the exit code.
"""

from __future__ import annotations

from enum import IntEnum

from core.errors import BlockedError, InputError, StaleDataError


class ExitCode(IntEnum):
    """Exit code of a ``churn`` command (the table in this module's docstring)."""

    OK = 0
    FAILURE = 1
    BAD_INPUT = 2
    BLOCKED = 3
    FINDING = 4
    STALE_DATA = 5


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
