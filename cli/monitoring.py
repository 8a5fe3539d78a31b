"""`churn drift` and `churn evaluate`: the operator's monitoring commands."""

from __future__ import annotations

from collections.abc import Callable

# To be moved here from the stage (issue 25): the commands, their options and output.
from monitoring.drift import drift_command
from monitoring.evaluate import evaluate_command

COMMANDS: dict[str, Callable[..., None]] = {"drift": drift_command, "evaluate": evaluate_command}
