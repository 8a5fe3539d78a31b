"""Benchmark: memory of a real ``churn serve`` over 20 hot swaps of the champion.

It measures what ships, as a user runs it: the demo data (``churn generate``, ``ingest``,
``apply``, ``materialize``) and two versions trained by ``churn train`` (the default family;
``--seed`` differs) in one MLflow registry. Then ``churn serve`` (default workers and
settings, the alias polled every 0.5 s) answers a steady trickle of ``/predict`` requests
while ``churn promote --version N`` moves the champion back and forth ``--swaps`` times.
After the 2nd and after the last swap the resident memory (RSS) of the server's processes
(the parent and its workers) is read. Goal: memory after 20 swaps within 5% of memory
after 2. Three runs; the median and spread of the growth are printed, with the heap
re-freeze pause each swap cost (from the service log).

The servers run the code of a git commit (``--ref``, default ``HEAD``: exported with
``git archive`` and put first on ``PYTHONPATH``, so edits in the checkout during a run do
not change it). With ``--baseline REF`` the same runs are made, interleaved, by another
commit's code: a figure from before a change, beside ours.

    .venv/bin/python -m bench.hot_swap
    .venv/bin/python -m bench.hot_swap --baseline fbcbdb0~1

Everything it creates (temp folder, Redis keys of its project) is removed at the end.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.serve import (
    BIN,
    ROOT,
    Workspace,
    _churn,
    _delete_project_keys,
    prepare,
    wait_until_ready,
)

GOAL_GROWTH = 0.05
_PAUSE = re.compile(r"heap re-frozen in (\d+) ms")


@dataclass(frozen=True)
class SwapRun:
    """One server's memory after the 2nd and the last swap."""

    rss_after_2_mb: float
    rss_after_last_mb: float
    pauses_ms: list[int]
    failed_requests: int

    @property
    def growth(self) -> float:
        """Relative growth from the 2nd swap to the last."""
        return self.rss_after_last_mb / self.rss_after_2_mb - 1.0


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its children, in MB."""
    import psutil

    parent = psutil.Process(pid)
    processes = [parent, *parent.children(recursive=True)]
    return sum(process.memory_info().rss for process in processes) / 1e6


def _served_version(url: str) -> str | None:
    import httpx

    try:
        return str(httpx.get(f"{url}/model", timeout=5).json()["version"])
    except (httpx.HTTPError, KeyError, ValueError):
        return None


def _wait_for_version(url: str, version: str, timeout: float = 120) -> None:
    """Until every worker serves ``version`` (several answers in a row say so)."""
    deadline = time.monotonic() + timeout
    streak = 0
    while time.monotonic() < deadline:
        streak = streak + 1 if _served_version(url) == version else 0
        if streak >= 8:
            return
        time.sleep(0.1)
    raise RuntimeError(f"version {version} was not served within {timeout:.0f} s")


def _trickle(url: str, users: list[int], stop: threading.Event, failures: list[int]) -> None:
    """About 50 requests/s: requests are in flight while the model swaps."""
    import httpx

    with httpx.Client(base_url=url, timeout=10) as client:
        index = 0
        while not stop.is_set():
            response = client.post("/predict", json={"user_id": users[index % len(users)]})
            if response.status_code not in (200, 404):
                failures.append(response.status_code)
            index += 1
            time.sleep(0.02)


def run_swaps(
    work: Workspace, *, versions: tuple[str, str], swaps: int, pythonpath: Path | None
) -> SwapRun:
    """Start ``churn serve``, swap ``swaps`` times under a trickle, read memory."""
    port = 18000 + int(uuid.uuid4().int % 1000)
    url = f"http://127.0.0.1:{port}"
    environment = dict(work.environment)
    environment.update(
        CHURN_SERVING_PORT=str(port),
        CHURN_SERVING_POLL_INTERVAL_S="0.5",
        CHURN_PREDICTION_LOG_DIR=str(work.folder / "predictions" / uuid.uuid4().hex),
    )
    if pythonpath is not None:
        environment["PYTHONPATH"] = str(pythonpath)
    _churn(environment, "promote", "--version", versions[0])
    log = work.folder / f"serve-{uuid.uuid4().hex[:6]}.log"
    with log.open("w") as stream:
        server = subprocess.Popen(
            [str(BIN / "churn"), "serve", "--log-level", "info"],
            env=environment,
            cwd=work.folder,  # not the checkout: its packages would shadow PYTHONPATH's
            stdout=stream,
            stderr=subprocess.STDOUT,
        )
    stop = threading.Event()
    failures: list[int] = []
    try:
        try:
            wait_until_ready(f"{url}/ready", server, timeout=300)
        except RuntimeError:
            print(log.read_text()[-3000:])
            raise
        _wait_for_version(url, versions[0])
        load = threading.Thread(target=_trickle, args=(url, list(range(1, 200)), stop, failures))
        load.start()
        after_2 = 0.0
        for swap in range(1, swaps + 1):
            version = versions[swap % 2]
            _churn(environment, "promote", "--version", version)
            _wait_for_version(url, version)
            if swap == 2:
                time.sleep(1.0)
                after_2 = tree_rss_mb(server.pid)
        time.sleep(1.0)
        after_last = tree_rss_mb(server.pid)
        stop.set()
        load.join(timeout=30)
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=60)
    pauses = [int(match) for match in _PAUSE.findall(log.read_text())]
    return SwapRun(after_2, after_last, pauses, len(failures))


def _export(ref: str, folder: Path) -> Path:
    """The tree of a git commit, exported into ``folder`` (for ``PYTHONPATH``)."""
    target = folder / f"baseline-{ref.replace('/', '_').replace('~', '_')}"
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def _report(label: str, runs: list[SwapRun], swaps: int) -> None:
    growths = [run.growth * 100 for run in runs]
    pauses = [pause for run in runs for pause in run.pauses_ms]
    print(
        f"{label}: RSS after 2 swaps {statistics.median(r.rss_after_2_mb for r in runs):.0f} MB, "
        f"after {swaps} swaps {statistics.median(r.rss_after_last_mb for r in runs):.0f} MB; "
        f"growth median {statistics.median(growths):+.1f}% (runs "
        + ", ".join(f"{g:+.1f}%" for g in growths)
        + f"); failed requests {sum(r.failed_requests for r in runs)}"
        + (
            f"; re-freeze pause per swap median {statistics.median(pauses)} ms, "
            f"max {max(pauses)} ms"
            if pauses
            else ""
        )
    )
    verdict = "met" if statistics.median(growths) <= GOAL_GROWTH * 100 else "MISSED"
    print(f"  goal (within {GOAL_GROWTH:.0%} after {swaps} swaps): {verdict}")


def main() -> None:
    """Prepare, then run the swaps (ours, and the baseline when asked)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--ref", default="HEAD", help="git ref of the code measured")
    parser.add_argument("--baseline", default=None, help="git ref of the code to compare with")
    parser.add_argument("--redis-url", default="127.0.0.1:6379,db=0")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-hot-swap-") as scratch:
        folder = Path(scratch)
        work = prepare(
            folder,
            redis_url=options.redis_url,
            trials=options.trials,
            families=["hist_gradient_boosting"],
        )
        environment = {
            **work.environment,
            "MLFLOW_TRACKING_URI": work.champions["hist_gradient_boosting"].tracking_uri,
        }
        first = work.champions["hist_gradient_boosting"].version
        _churn(
            environment, "train", "--trials", str(options.trials), "--seed", "7", "--no-progress"
        )
        second = str(int(first) + 1)
        work = Workspace(
            work.folder, work.project, work.feast, environment, work.champions, work.users
        )
        targets: list[tuple[str, Path | None]] = [(options.ref, _export(options.ref, folder))]
        if options.baseline:
            targets.append((options.baseline, _export(options.baseline, folder)))
        try:
            results: dict[str, list[SwapRun]] = {label: [] for label, _ in targets}
            for _ in range(options.runs):
                for label, path in targets:  # interleaved: both see the same machine state
                    run = run_swaps(
                        work, versions=(first, second), swaps=options.swaps, pythonpath=path
                    )
                    results[label].append(run)
                    print(
                        f"  {label}: {run.rss_after_2_mb:.0f} MB after 2 swaps, "
                        f"{run.rss_after_last_mb:.0f} MB after {options.swaps} "
                        f"({run.growth:+.1%}), {run.failed_requests} failed requests",
                        flush=True,
                    )
            for label, runs in results.items():
                _report(label, runs, options.swaps)
        finally:
            _delete_project_keys(options.redis_url, work.project)


if __name__ == "__main__":
    main()
