"""What each ``churn`` exit code means to the scheduler: one table, easy to change.

``EXIT_OUTCOMES`` maps (command, exit code) to an outcome name; ``"*"`` is the default for
every command. ``OUTCOME_STATES`` says how the orchestrator shows each outcome:

- ``ok``: the step succeeded;
- ``warning``: the step succeeded, the outcome is a finding someone must look at (major
  drift, a model below its gate); the run stays green, a warning is logged and the run
  carries the outcome as a tag;
- ``skipped``: nothing to do yet (stale or missing data): the step succeeds without output,
  so the steps after it are shown as skipped;
- ``failed``: the step fails (red); ``bad_input`` is never retried, an unreachable online
  store is retried with exponential backoff first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from core.exits import ExitCode

State = Literal["ok", "warning", "skipped", "failed"]

EXIT_OUTCOMES: dict[tuple[str, int], str] = {
    ("*", ExitCode.OK): "ok",
    ("*", ExitCode.FAILURE): "failure",
    ("*", ExitCode.BAD_INPUT): "bad_input",
    ("*", ExitCode.BLOCKED): "failed_gate",
    ("*", ExitCode.FINDING): "major_drift",
    ("*", ExitCode.STALE_DATA): "stale_data",
    ("skew-check", ExitCode.FAILURE): "skew_mismatch",  # skew-check exits 1 on any mismatch
    ("evaluate", ExitCode.FINDING): "auc_below_gate",  # evaluate exits 4 below --min-auc
    ("evaluate", ExitCode.BAD_INPUT): "nothing_to_evaluate",  # no labelled prediction yet
    ("estimate", ExitCode.FINDING): "estimated_harm",  # estimate exits 4 on estimated harm
    ("estimate", ExitCode.BAD_INPUT): "nothing_to_estimate",  # no prediction in the window
}

OUTCOME_STATES: dict[str, State] = {
    "ok": "ok",
    "major_drift": "warning",
    "failed_gate": "warning",
    "auc_below_gate": "warning",
    "stale_data": "skipped",
    "nothing_to_evaluate": "skipped",
    "estimated_harm": "warning",
    "nothing_to_estimate": "skipped",
    "skew_mismatch": "failed",
    "bad_input": "failed",
    "failure": "failed",
    "unknown_exit_code": "failed",
}

# What `churn materialize` prints (exit 1) when the online store cannot be reached.
UNREACHABLE = re.compile(r"cannot reach the .*online store|lost the .*online store")


@dataclass(frozen=True)
class Outcome:
    """How one command's exit is shown."""

    command: str
    exit_code: int
    name: str
    state: State
    retryable: bool


def outcome_of(command: str, exit_code: int, stderr: str = "") -> Outcome:
    """Classify a finished ``churn`` command."""
    name = EXIT_OUTCOMES.get(
        (command, exit_code), EXIT_OUTCOMES.get(("*", exit_code), "unknown_exit_code")
    )
    state = OUTCOME_STATES[name]
    retryable = state == "failed" and name == "failure" and bool(UNREACHABLE.search(stderr))
    return Outcome(command, exit_code, name, state, retryable)
