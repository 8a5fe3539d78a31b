"""A Spark standalone cluster on localhost for the spark-profile tests.

A master and two workers are launched from the pyspark package itself (its ``spark-class``),
so code under test runs in separate executor processes, not only in ``local[*]``. The sizes
fit a 2-core machine: one core and 1 GB per worker, small daemon heaps. One cluster per
test run: under pytest-xdist the first worker that needs it starts it and the others use
the same one (tests/utils/shared.py); the controller stops it when the run ends
(tests/conftest.py). Every JVM started here is stopped at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import PROJECT_ROOT
from tests.utils.shared import exclusive, is_xdist_worker, run_folder_of

WORKERS = 2
# Each application gets DEFAULT_APP_CORES (one executor on each worker, spread out), and the
# workers offer room for eight applications at once: a test's own Spark session stays up
# while the `churn`/`feast` processes it starts run their own driver, and two test workers
# can each hold a session and start drivers. With room for two, two test workers' sessions
# took every core and their `feast apply` drivers waited for ever. Cores and memory here are
# slots the master hands out, not what the machine has: the executors are mostly idle.
WORKER_CORES = 8
WORKER_MEMORY = "8g"
DEFAULT_APP_CORES = 2
_START_TIMEOUT_S = 300.0  # JVM starts take minutes when the 2 cores are saturated


@dataclass(frozen=True)
class SparkCluster:
    """A running standalone cluster."""

    master_url: str  # spark://127.0.0.1:<port>
    web_url: str  # the master's status page (JSON under /json/)
    workers: int
    work_dir: Path  # the workers' folders (worker-N/<app id>/<executor id>/stderr) are here

    @property
    def conf_dir(self) -> Path:
        """The SPARK_CONF_DIR of the drivers run against this cluster (JVM options)."""
        return self.work_dir / "conf"


# Every test application is small and short: the drivers' and executors' JVMs spend more
# CPU on the optimizing JIT (C2) than it saves, as the daemons would (-XX:TieredStopAtLevel
# above). Executors stop at C1 level 2, not 1: level 1 is the materialization engine's own
# option, which test_spark_pipeline checks no other application's executors get.
_SPARK_DEFAULTS = """\
spark.driver.defaultJavaOptions -XX:TieredStopAtLevel=1 -XX:+UseSerialGC
spark.executor.defaultJavaOptions -XX:TieredStopAtLevel=2 -XX:+UseSerialGC
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _spark_class() -> Path:
    from pyspark.find_spark_home import _find_spark_home

    return Path(_find_spark_home()) / "bin" / "spark-class"


def _environment(work_dir: Path) -> dict[str, str]:
    """Daemon environment: loopback only, logs in the work dir, executors on this Python."""
    environment = dict(os.environ)
    environment.update(
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_LOG_DIR=str(work_dir / "logs"),
        SPARK_NO_DAEMONIZE="1",
        SPARK_DAEMON_MEMORY="256m",
        # Small daemons: quick-start JIT and serial GC. No REST submission server (its fixed
        # port 6066 would clash between two test sessions on one machine).
        SPARK_DAEMON_JAVA_OPTS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        SPARK_MASTER_OPTS=(
            f"-Dspark.master.rest.enabled=false -Dspark.deploy.defaultCores={DEFAULT_APP_CORES}"
        ),
        # Executors must import pyarrow, feast and this project: the test's own venv.
        PYSPARK_PYTHON=sys.executable,
    )
    # Coverage measures the test processes and the `churn` commands they run, not the
    # executors' Python daemons (forked workers that exit without writing their data).
    for variable in ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START"):
        environment.pop(variable, None)
    return environment


def _alive_workers(web_url: str) -> int:
    with suppress(OSError, ValueError), urllib.request.urlopen(f"{web_url}/json/", timeout=2) as r:
        status = json.load(r)
        return sum(1 for worker in status.get("workers", []) if worker.get("state") == "ALIVE")
    return 0


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    """Terminate the processes this process started; kill those that linger."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _launch(work_dir: Path, workers: int) -> tuple[SparkCluster, list[subprocess.Popen[bytes]]]:
    """Start a master and ``workers`` workers and wait until all registered.

    Raises:
        RuntimeError: The cluster did not come up in time (the daemons' logs are quoted).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "conf").mkdir(exist_ok=True)
    (work_dir / "conf" / "spark-defaults.conf").write_text(_SPARK_DEFAULTS)
    environment = _environment(work_dir)
    spark_class = str(_spark_class())
    port, web_port = _free_port(), _free_port()
    master_url = f"spark://127.0.0.1:{port}"
    web_url = f"http://127.0.0.1:{web_port}"
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []

    def launch(name: str, *args: str) -> None:
        log = work_dir / f"{name}.log"
        logs.append(log)
        with log.open("wb") as out:
            # spark-class execs the JVM: the Popen pid is the java process itself.
            processes.append(
                subprocess.Popen(
                    [spark_class, *args], env=environment, stdout=out, stderr=subprocess.STDOUT
                )
            )

    try:
        launch(
            "master",
            "org.apache.spark.deploy.master.Master",
            *("--host", "127.0.0.1", "--port", str(port), "--webui-port", str(web_port)),
        )
        for index in range(workers):
            worker_dir = work_dir / f"worker-{index}"
            worker_dir.mkdir(exist_ok=True)
            launch(
                f"worker-{index}",
                "org.apache.spark.deploy.worker.Worker",
                master_url,
                *("--host", "127.0.0.1", "--webui-port", str(_free_port())),
                *("--cores", str(WORKER_CORES), "--memory", WORKER_MEMORY),
                *("--work-dir", str(worker_dir)),
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while _alive_workers(web_url) < workers:
            exited = [p.args for p in processes if p.poll() is not None]
            if exited or time.monotonic() > deadline:
                tails = "\n".join(f"--- {log.name}\n{log.read_text()[-1500:]}" for log in logs)
                raise RuntimeError(f"Spark standalone cluster did not start ({exited=}):\n{tails}")
            time.sleep(0.5)
    except BaseException:
        stop_processes(processes)
        raise
    cluster = SparkCluster(
        master_url=master_url, web_url=web_url, workers=workers, work_dir=work_dir
    )
    return cluster, processes


@contextmanager
def standalone_cluster(work_dir: Path, *, workers: int = WORKERS) -> Iterator[SparkCluster]:
    """Start a master and ``workers`` workers, wait until all registered, stop them after.

    Raises:
        RuntimeError: The cluster did not come up in time (the daemons' logs are quoted).
    """
    cluster, processes = _launch(work_dir, workers)
    try:
        yield cluster
    finally:
        try:
            _stop_driver_session()
        finally:
            stop_processes(processes)
            shutil.rmtree(work_dir, ignore_errors=True)


_STATE = "spark-cluster.json"
# The shared cluster's daemons, kept referenced in the worker that started them: the
# controller stops them at the end of the run, after this worker is gone.
_shared_daemons: list[subprocess.Popen[bytes]] = []


def shared_cluster(run_folder: Path, *, workers: int = WORKERS) -> SparkCluster:
    """The run's one cluster: started by the first worker that asks, reused by the others.

    Its daemons outlive the worker that started them; :func:`stop_shared_cluster`, called
    by the controller at the end of the run, stops them.
    """
    state = run_folder / _STATE
    with exclusive(run_folder / "spark-cluster.lock"):
        if state.exists():
            saved = json.loads(state.read_text())
            return SparkCluster(
                master_url=saved["master_url"],
                web_url=saved["web_url"],
                workers=saved["workers"],
                work_dir=Path(saved["work_dir"]),
            )
        cluster, processes = _launch(run_folder / "spark-cluster", workers)
        _shared_daemons.extend(processes)
        daemons = [[p.pid, _start_time(p.pid)] for p in processes]
        state.write_text(
            json.dumps(
                {
                    "master_url": cluster.master_url,
                    "web_url": cluster.web_url,
                    "workers": cluster.workers,
                    "work_dir": str(cluster.work_dir),
                    "daemons": daemons,
                }
            )
        )
        return cluster


def stop_shared_cluster(run_folder: Path) -> None:
    """Stop the run's shared cluster, if one was started, and delete its folder."""
    state = run_folder / _STATE
    if not state.exists():
        return
    saved = json.loads(state.read_text())
    # Only the processes started for the cluster: a recycled pid has another start time.
    daemons = [pid for pid, started in saved["daemons"] if _start_time(pid) == started]
    for pid in daemons:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while any(_running(pid) for pid in daemons) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in daemons:
        if _running(pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(saved["work_dir"], ignore_errors=True)
    state.unlink()


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # the fields after the command name


def _start_time(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[19] if fields else None  # field 22 of proc(5): start time in ticks


def _running(pid: int) -> bool:
    fields = _proc_stat(pid)
    return fields is not None and fields[0] != "Z"  # a zombie has exited


def applications(cluster: SparkCluster) -> dict[str, str]:
    """Every application the cluster's master lists, running or completed: id -> name."""
    with urllib.request.urlopen(f"{cluster.web_url}/json/", timeout=10) as response:
        status = json.load(response)
    return {
        app["id"]: app.get("name", "")
        for app in status.get("activeapps", []) + status.get("completedapps", [])
    }


def executor_commands(cluster: SparkCluster, app_id: str) -> list[str]:
    """The JVM command line of every executor the cluster ran for one application.

    Read from the first line of each executor's stderr in the workers' folders
    (``Spark Executor Command: ...``).
    """
    commands = []
    for stderr in sorted(cluster.work_dir.glob(f"worker-*/{app_id}/*/stderr")):
        with stderr.open() as lines:
            commands.append(next(lines, "").strip())
    return commands


def cluster_session(cluster: SparkCluster) -> Any:
    """This process's Spark session on the cluster, with the spark profile's settings.

    Feast opens its session from the same ``spark_conf`` (it reuses an active one), so
    the tests that build Spark frames directly see what the profile sees.
    """
    from pyspark.sql import SparkSession

    profile = yaml.safe_load(
        (PROJECT_ROOT / "feature_repo" / "feature_store.spark.yaml").read_text()
    )
    conf = dict(profile["offline_store"]["spark_conf"], **{"spark.master": cluster.master_url})
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, str(value))
    return builder.getOrCreate()


def _stop_driver_session() -> None:
    """Stop this process's Spark session (its executors live on the workers)."""
    if "pyspark" not in sys.modules:
        return
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        with suppress(Exception):  # a driver that already failed must not keep the JVMs up
            session.stop()


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkCluster]:
    """One standalone cluster (master + two workers) for the whole test run.

    Drivers (this process and the ``churn``/``feast`` processes it starts) bind to the
    loopback address, as the daemons do, and run executors' Python on this venv's Python.
    Under pytest-xdist every worker uses the run's one cluster (the tests that use it run in
    one xdist group, one at a time: see tests/conftest.py); this worker's own Spark session
    is stopped when its session ends, the daemons when the run ends.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        patch.setenv("PYSPARK_PYTHON", sys.executable)
        if not is_xdist_worker():
            with standalone_cluster(tmp_path_factory.mktemp("spark-cluster")) as cluster:
                patch.setenv("SPARK_CONF_DIR", str(cluster.conf_dir))
                yield cluster
            return
        try:
            cluster = shared_cluster(run_folder_of(tmp_path_factory))
            patch.setenv("SPARK_CONF_DIR", str(cluster.conf_dir))
            yield cluster
        finally:
            _stop_driver_session()
