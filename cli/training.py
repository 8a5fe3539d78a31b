"""`churn train`, `promote`, `rollback`: the ML engineer's commands."""

from __future__ import annotations

from collections.abc import Callable

# To be moved here from the stage (issue 25): the commands, their options and output.
from training.promote import promote_command, rollback_command
from training.train import train_command

COMMANDS: dict[str, Callable[..., None]] = {
    "train": train_command,
    "promote": promote_command,
    "rollback": rollback_command,
}
