"""The data engineer's commands: generate, ingest, apply, materialize, skew-check."""

from __future__ import annotations

from collections.abc import Callable

# To be moved here from the stage (issue 25): the commands, their options and output.
from materialize.apply import apply_command
from materialize.generate import generate_command
from materialize.ingest import ingest_command
from materialize.online import materialize_command
from materialize.skew import skew_check_command

COMMANDS: dict[str, Callable[..., None]] = {
    "generate": generate_command,
    "ingest": ingest_command,
    "apply": apply_command,
    "materialize": materialize_command,
    "skew-check": skew_check_command,
}
