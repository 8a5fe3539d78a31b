"""The four role pages, followed as written right after `make demo`, work.

A small platform is built the way `make demo` builds it (steps 1-3: 2000 users x 60 days
ending 7 days ago, a back-filled ingest, `churn apply`, `churn materialize` into the demo's
Redis database, `churn train` with one trial), in a folder laid out like the checkout
(``feature_repo/`` with a project of its own, ``data/``, ``.venv``). Then every ``bash``
block of each role page runs, in page order, in one ``bash`` per page started in that
folder, as a reader's fresh terminal would run them. ``CHURN_DATA_DIR`` and
``CHURN_FEAST_REPO_PATH`` stand in for the checkout the commands would otherwise default
to; nothing else of the test process leaks in (no ``CHURN_*``, no ``MLFLOW_*``, the
venv not on ``PATH``: the pages activate it). The pages share one state and run in the
order a reader would: data engineer, ML engineer, API client (against a ``churn serve``
the test starts, as the page tells the reader to), operator.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from tests.docs.blocks import ROLE_PAGES, demo_redis_url, role_page, runnable_blocks
from tests.utils.feast_repo import make_feature_repo
from tests.utils.services import delete_project_keys, redis_client, unique_name
from tests.utils.serving import churn_serve_process, free_port

# The building and the four pages take minutes on a loaded two-core machine.
pytestmark = pytest.mark.timeout(2400)

CHURN = str(Path(sys.executable).with_name("churn"))
_MARK = "=== role page block"
_LEAKING = ("CHURN_", "MLFLOW_", "FEAST_", "OMP_", "PROMETHEUS_MULTIPROC_DIR", "VIRTUAL_ENV")


@dataclass
class Checkout:
    """A folder laid out like the checkout after `make demo`, and a fresh terminal's env."""

    root: Path
    terminal: dict[str, str]
    demo_redis_url: str


@dataclass
class PageRun:
    """What one page's blocks printed, block by block, and how the shell ended."""

    returncode: int
    outputs: list[str]
    blocks: list[str]
    seconds: float
    service_exit: int | None = None  # churn serve's exit code, for the API client page

    def report(self) -> str:
        """The failing block (the last one started) and its output."""
        index = len(self.outputs) - 1
        block = self.blocks[index] if 0 <= index < len(self.blocks) else "(none)"
        output = self.outputs[index] if self.outputs else ""
        return (
            f"exit {self.returncode} in block {index + 1} after {self.seconds:.0f} s:\n"
            f"{block}\n--- output ---\n{output}"
        )


def _terminal_environment(root: Path) -> dict[str, str]:
    venv_bin = str(Path(sys.prefix) / "bin")
    environment = {key: value for key, value in os.environ.items() if not key.startswith(_LEAKING)}
    environment["PATH"] = os.pathsep.join(
        entry for entry in environment.get("PATH", "").split(os.pathsep) if entry != venv_bin
    )
    environment.update(
        CHURN_DATA_DIR=str(root / "data"),
        CHURN_FEAST_REPO_PATH=str(root / "feature_repo"),
        MLFLOW_DISABLE_TELEMETRY="true",  # the Makefile exports it
    )
    return environment


def _build_demo_state(root: Path, environment: dict[str, str]) -> None:
    """`make demo` steps 1-3, as its recipe runs them (one trial instead of six)."""
    base_end = (datetime.now(UTC) - timedelta(days=7)).strftime("%Y-%m-%d")
    steps = [
        ["generate", "--users", "2000", "--days", "60", "--end", base_end,
         "--out", "data/raw/events.parquet"],
        ["ingest", "--backfill", "data/raw/events.parquet"],
        ["apply"],
        ["materialize"],
        ["train", "--trials", "1", "--no-progress"],
    ]  # fmt: skip
    for step in steps:
        completed = subprocess.run(
            [CHURN, *step], cwd=root, env=environment, capture_output=True, text=True,
            timeout=900, check=False,
        )  # fmt: skip
        assert completed.returncode == 0, (
            f"churn {' '.join(step)}:\n{completed.stdout}{completed.stderr}"
        )


def _run_page(name: str, root: Path, environment: dict[str, str]) -> PageRun:
    blocks = [block.text for block in runnable_blocks(role_page(name).read_text())]
    script = ["set -eo pipefail"]
    for number, block in enumerate(blocks, start=1):
        script += [f"echo '{_MARK} {number}'", block]
    started = time.monotonic()
    completed = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", "\n".join(script)],
        cwd=root, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=1800, check=False,
    )  # fmt: skip
    outputs = re.split(rf"^{_MARK} \d+\n", completed.stdout, flags=re.M)[1:]
    return PageRun(completed.returncode, outputs, blocks, time.monotonic() - started)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Checkout]:
    redis_client().ping()  # fail, never skip, without Redis
    root = tmp_path_factory.mktemp("checkout")
    project = unique_name("churn_docs")
    demo_url = demo_redis_url()
    demo_db = int(re.search(r"db=(\d+)", demo_url)[1])  # type: ignore[index]
    make_feature_repo(root, project=project, redis_db=demo_db)
    (root / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    terminal = _terminal_environment(root)
    try:
        _build_demo_state(root, {**terminal, "CHURN_REDIS_URL": demo_url})
        yield Checkout(root=root, terminal=terminal, demo_redis_url=demo_url)
    finally:
        delete_project_keys(project, db=demo_db)


@pytest.fixture(scope="module")
def page_runs(checkout: Checkout) -> dict[str, PageRun]:
    """Run the four pages once, in order, on the shared state."""
    runs: dict[str, PageRun] = {}
    for name in ROLE_PAGES:
        if name != "api-client":
            runs[name] = _run_page(name, checkout.root, checkout.terminal)
            continue
        port = free_port()
        service = {
            **checkout.terminal,
            "CHURN_REDIS_URL": checkout.demo_redis_url,  # the page's own "export" line
            "CHURN_SERVING_PORT": str(port),
        }
        with churn_serve_process(service, "--workers", "1") as (_url, process):
            runs[name] = _run_page(
                name, checkout.root, {**checkout.terminal, "CHURN_SERVING_PORT": str(port)}
            )
        # A graceful stop writes the buffered predictions the operator page evaluates.
        runs[name].service_exit = process.returncode
    return runs


def _assert_ran(run: PageRun) -> None:
    assert run.returncode == 0 and len(run.outputs) == len(run.blocks), run.report()


def test_data_engineer_page(page_runs: dict[str, PageRun]) -> None:
    run = page_runs["data-engineer"]
    _assert_ran(run)
    apply_and_read, late_batch, skew = run.outputs[1], run.outputs[2], run.outputs[3]

    # Right after the demo the incremental run has nothing new, and the store the
    # registry belongs to serves user 1 (into another database it served nothing).
    assert "wrote 0 entities" in apply_and_read
    online = json.loads(apply_and_read[apply_and_read.index("{") : apply_and_read.rindex("}") + 1])
    assert online["user_id"] == [1]
    assert isinstance(online["feature_1"][0], float), online
    written = [int(n.replace(",", "")) for n in re.findall(r"wrote ([\d,]+) entities", late_batch)]
    assert written and written[-1] > 0, late_batch  # the explicit range loads the late batch
    assert "OK: online and offline agree on every sampled value" in skew


def test_ml_engineer_page(page_runs: dict[str, PageRun], checkout: Checkout) -> None:
    run = page_runs["ml-engineer"]
    _assert_ran(run)
    training_set, train, registry, promote, score = run.outputs[1:6]

    assert re.search(r"^\(\d+, 10\)$", training_set, re.M), training_set
    assert re.search(r"registered churn-predictor v2 as (champion|challenger)", train), train
    assert re.search(r"^v1: test ROC AUC 0\.\d+", registry, re.M), registry
    assert re.search(r"^v2: test ROC AUC 0\.\d+", registry, re.M), registry
    assert "rolled back from v2" in promote, promote
    scores = pd.read_parquet(checkout.root / "data" / "scores" / "now.parquet")
    assert len(scores) > 1000 and scores["churn_probability"].between(0, 1).all()
    assert {"reason_1_feature", "reason_3_contribution"} <= set(scores.columns), score


def test_api_client_page(page_runs: dict[str, PageRun]) -> None:
    run = page_runs["api-client"]
    _assert_ran(run)
    assert run.service_exit in (0, -signal.SIGTERM), "churn serve did not stop gracefully"
    ready, predict, explain, batch, hundred, errors = run.outputs

    assert json.loads(ready)["ready"] is True
    one = json.loads(predict)
    assert one["user_id"] == 1 and 0 <= one["churn_probability"] <= 1
    reasons = json.loads(explain)["reasons"]
    assert len(reasons) == 7 and "base_value" in json.loads(explain)
    both = json.loads(batch)
    assert [p["user_id"] for p in both["predictions"]] == [1, 2]
    assert both["errors"] == [
        {"user_id": 999999, "kind": "unknown_user",
         "detail": "user 999999 has no features in the online store"}
    ]  # fmt: skip
    counted = re.search(r"^(\d+) predictions, (\d+) errors$", hundred, re.M)
    assert counted and int(counted[1]) + int(counted[2]) == 100 and int(counted[1]) > 90
    statuses = re.findall(r"(\{.*\}) (\d{3})$", errors, re.M)
    assert [status for _, status in statuses] == ["404", "422", "422"], errors
    assert json.loads(statuses[0][0])["kind"] == "unknown_user"
    assert json.loads(statuses[2][0])["detail"][0]["type"] == "too_long"


def test_operator_page(page_runs: dict[str, PageRun]) -> None:
    run = page_runs["operator"]
    _assert_ran(run)
    _shell, materialize, drift, evaluate = run.outputs

    assert "user_features:" in materialize
    drift_exit = re.search(r"^churn drift exited (\d+)", drift, re.M)
    assert drift_exit and drift_exit[1] in {"0", "4"}, drift  # no major drift, or major drift
    evaluate_exit = re.search(r"^churn evaluate exited (\d+)", evaluate, re.M)
    # The API client page's predictions are matched to the labels that landed.
    assert evaluate_exit and evaluate_exit[1] in {"0", "4"}, evaluate
