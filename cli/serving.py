"""`churn serve` and `churn score`: predictions online and in batch."""

from __future__ import annotations

from collections.abc import Callable

# To be moved here from the stage (issue 25): the commands, their options and output.
from serving.batch_score import score_command
from serving.cli import serve_command

COMMANDS: dict[str, Callable[..., None]] = {"serve": serve_command, "score": score_command}
