"""`make test` keeps a group on one worker (the Spark cluster's tests, a module's fixtures).

tests/conftest.py marks every test with an ``xdist_group`` at collection, and ``--dist
loadgroup`` must send each group to a single worker. pytest 9.2 stopped honouring that
(pytest-xdist issue 1386: xdist renames the node id, which pytest 9.2 no longer reads), and
nothing failed: the Spark tests ran side by side on the shared cluster and one saw the
other's application. This runs the installed pytest and pytest-xdist on a group marked the
same way and checks where its tests ran.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

_CONFTEST = """
import pytest

@pytest.hookimpl(tryfirst=True)  # as tests/conftest.py: before pytest-xdist reads the marks
def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group("together"))
"""

_TESTS = """
import os
from pathlib import Path

def _record(name):
    Path(name).write_text(os.environ["PYTEST_XDIST_WORKER"])

"""


def test_one_group_runs_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(_CONFTEST)
    names = [f"t{n}" for n in range(8)]
    body = "".join(f"def test_{name}():\n    _record({name!r})\n\n" for name in names)
    (tmp_path / "test_grouped.py").write_text(_TESTS + body)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "2",
            "--dist",
            "loadgroup",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "-q",
            "-W",
            "error",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    workers = {name: (tmp_path / name).read_text() for name in names}
    assert len(set(workers.values())) == 1, f"one group ran on several workers: {workers}"
