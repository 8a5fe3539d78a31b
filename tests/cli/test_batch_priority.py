"""Batch commands yield the CPU to the services: ``CHURN_BATCH_NICENESS`` at one checkpoint.

Each case runs the real console entry point in a child process (a process cannot lower its
niceness back, so never in this one) and reads the niceness the command ran with.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

# The command's --help runs after the root callback; atexit reports the niceness it left.
_PROBE = (
    "import atexit, os, sys\n"
    "atexit.register(lambda: print('niceness', os.nice(0)))\n"
    "from cli.main import main\n"
    "sys.argv = ['churn', *sys.argv[1:]]\n"
    "main()\n"
)


def _niceness_of(*args: str, setting: str | None = None) -> tuple[int, str]:
    environment = {k: v for k, v in os.environ.items() if k != "CHURN_BATCH_NICENESS"}
    if setting is not None:
        environment["CHURN_BATCH_NICENESS"] = setting
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE, *args, "--help"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    printed = [line for line in completed.stdout.splitlines() if line.startswith("niceness")]
    value = int(printed[-1].split()[1]) if printed else -1
    return value, completed.stderr


BASE = os.nice(0)


@pytest.mark.parametrize("command", ["train", "materialize", "score", "drift", "estimate"])
def test_batch_commands_lower_their_priority_by_default(command: str) -> None:
    niceness, stderr = _niceness_of(command)
    assert niceness == min(19, BASE + 10), stderr


@pytest.mark.parametrize("command", ["serve", "stream"])
def test_latency_sensitive_commands_keep_theirs(command: str) -> None:
    niceness, stderr = _niceness_of(command)
    assert niceness == BASE, stderr


def test_the_setting_chooses_the_step_and_zero_leaves_it() -> None:
    assert _niceness_of("train", setting="3")[0] == min(19, BASE + 3)
    assert _niceness_of("train", setting="0")[0] == BASE


def test_an_invalid_setting_is_named_and_refused() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE, "train", "--help"],
        env={**os.environ, "CHURN_BATCH_NICENESS": "25"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    assert "niceness" in completed.stderr and "19" in completed.stderr
