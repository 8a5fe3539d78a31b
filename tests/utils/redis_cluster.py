"""A real Redis Cluster on loopback for the cluster-profile tests.

``redis-server --cluster-enabled yes`` on free ports, joined by ``redis-cli --cluster
create`` (no mock): three masters, optionally one replica each (for failover tests). One
cluster of three masters per test run, shared by every pytest-xdist worker like the Spark
cluster (tests/utils/spark.py): the first worker that asks starts it, the controller stops
it when the run ends (tests/conftest.py). Tests isolate themselves by Feast project (every
key ends with the project name). A test that kills nodes starts its own cluster with
:func:`private_cluster`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from tests.utils.shared import exclusive, is_xdist_worker, run_folder_of
from tests.utils.spark import stop_processes

MASTERS = 3
_START_TIMEOUT_S = 30.0


@dataclass
class ClusterNodes:
    """A running cluster: its nodes' ports and processes (those this process started)."""

    ports: list[int]
    work_dir: Path
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def connection_string(self) -> str:
        """Feast's form of the nodes: ``host:port,host:port,...``."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def client(self) -> RedisCluster:
        """A synchronous cluster client (the caller closes it)."""
        return cluster_client(self.connection_string)

    def masters(self) -> list[int]:
        """Ports of the nodes that are masters now (read from a live node)."""
        for port in self.ports:
            with suppress(redis.RedisError):
                node = redis.Redis(port=port, socket_timeout=2)
                try:
                    lines = node.execute_command("CLUSTER", "NODES")
                finally:
                    node.close()
                text = lines.decode() if isinstance(lines, bytes) else str(lines)
                return [
                    int(parts[1].split("@")[0].rsplit(":", 1)[1])
                    for parts in (line.split() for line in text.splitlines())
                    if "master" in parts[2] and "fail" not in parts[2]
                ]
        raise RuntimeError("no cluster node answers")

    def kill(self, port: int) -> None:
        """SIGKILL one node this process started (a crash, not a shutdown)."""
        process = self.processes[port]
        process.kill()
        process.wait()

    def start(self, port: int) -> None:
        """Start a killed node again with its own config (it rejoins the cluster)."""
        self.processes[port] = _start_node(self.work_dir, port)


def cluster_client(connection_string: str) -> RedisCluster:
    """A synchronous client of the cluster whose nodes Feast's string names."""
    ports = [int(part.rsplit(":", 1)[1]) for part in connection_string.split(",") if ":" in part]
    return RedisCluster(
        startup_nodes=[ClusterNode("127.0.0.1", port) for port in ports], socket_timeout=5
    )


def delete_cluster_project_keys(connection_string: str, project: str) -> int:
    """Delete every key Feast wrote for ``project`` on the cluster (keys end with it)."""
    client = cluster_client(connection_string)
    deleted = 0
    try:
        for key in client.scan_iter(match=f"*{project}", count=1000):
            deleted += int(client.delete(key))
    finally:
        client.close()
    return deleted


def cluster_hashes(connection_string: str, project: str) -> dict[bytes, dict[bytes, bytes]]:
    """Every hash stored for ``project`` on the cluster, by key (project suffix removed)."""
    client = cluster_client(connection_string)
    suffix = project.encode()
    try:
        return {
            key[: -len(suffix)]: client.hgetall(key)
            for key in client.scan_iter(match=f"*{project}", count=1000)
        }
    finally:
        client.close()


def cluster_ttls(connection_string: str, project: str) -> dict[bytes, int]:
    """Remaining time to live (seconds) of every key of ``project`` on the cluster."""
    client = cluster_client(connection_string)
    suffix = project.encode()
    try:
        return {
            key[: -len(suffix)]: int(client.ttl(key))
            for key in client.scan_iter(match=f"*{project}", count=1000)
        }
    finally:
        client.close()


def _free_port(taken: set[int]) -> int:
    """A port whose cluster bus port (port + 10000) is free too (so both below 65536)."""
    while True:
        port = random.randrange(20_000, 45_000)
        if port in taken or port + 10_000 in taken:
            continue
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 10_000))
        except OSError:
            continue
        taken.update((port, port + 10_000))
        return port


def _start_node(work_dir: Path, port: int) -> subprocess.Popen[bytes]:
    node_dir = work_dir / str(port)
    node_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            "redis-server",
            *("--port", str(port), "--bind", "127.0.0.1"),
            *("--cluster-enabled", "yes"),
            *("--cluster-config-file", str(node_dir / "nodes.conf")),
            # A killed master is declared failed (and its replica promoted) after 1 s.
            *("--cluster-node-timeout", "1000"),
            *("--dir", str(node_dir), "--save", "", "--appendonly", "no"),
            *("--logfile", str(node_dir / "redis.log")),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_ping(port: int, deadline: float) -> None:
    while True:
        try:
            node = redis.Redis(port=port, socket_timeout=1)
            node.ping()
            node.close()
            return
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not start") from None
            time.sleep(0.05)


def wait_cluster_ok(ports: list[int], *, timeout_s: float = _START_TIMEOUT_S) -> None:
    """Wait until every given live node reports ``cluster_state:ok``."""
    deadline = time.monotonic() + timeout_s
    for port in ports:
        while True:
            with suppress(redis.RedisError):
                node = redis.Redis(port=port, socket_timeout=1)
                info = node.execute_command("CLUSTER", "INFO")
                node.close()
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" in text:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster node {port} did not reach cluster_state:ok")
            time.sleep(0.1)


def _launch(work_dir: Path, *, replicas: int) -> ClusterNodes:
    """Start ``MASTERS * (1 + replicas)`` nodes and join them into one cluster."""
    work_dir.mkdir(parents=True, exist_ok=True)
    taken: set[int] = set()
    ports = [_free_port(taken) for _ in range(MASTERS * (1 + replicas))]
    nodes = ClusterNodes(ports=ports, work_dir=work_dir)
    try:
        for port in ports:
            nodes.processes[port] = _start_node(work_dir, port)
        deadline = time.monotonic() + _START_TIMEOUT_S
        for port in ports:
            _wait_ping(port, deadline)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in ports),
                *("--cluster-replicas", str(replicas)),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=_START_TIMEOUT_S,
        )
        wait_cluster_ok(ports)
    except BaseException:
        stop_processes(list(nodes.processes.values()))
        raise
    return nodes


@contextmanager
def private_cluster(work_dir: Path, *, replicas: int = 1) -> Iterator[ClusterNodes]:
    """A cluster of this test's own (three masters, ``replicas`` replicas each), stopped after."""
    nodes = _launch(work_dir, replicas=replicas)
    try:
        yield nodes
    finally:
        stop_processes(list(nodes.processes.values()))
        shutil.rmtree(work_dir, ignore_errors=True)


_STATE = "redis-cluster.json"
# The shared cluster's nodes, kept referenced in the worker that started them (a collected
# Popen of a running process warns): the controller stops them at the end of the run.
_shared_nodes: list[subprocess.Popen[bytes]] = []


def shared_cluster(run_folder: Path) -> ClusterNodes:
    """The run's one cluster: started by the first worker that asks, reused by the others.

    Its nodes outlive the worker that started them; :func:`stop_shared_cluster` (called by
    the controller at the end of the run) stops them.
    """
    state = run_folder / _STATE
    with exclusive(run_folder / "redis-cluster.lock"):
        if state.exists():
            saved = json.loads(state.read_text())
            return ClusterNodes(ports=saved["ports"], work_dir=Path(saved["work_dir"]))
        nodes = _launch(run_folder / "redis-cluster", replicas=0)
        _shared_nodes.extend(nodes.processes.values())
        state.write_text(
            json.dumps(
                {
                    "ports": nodes.ports,
                    "work_dir": str(nodes.work_dir),
                    "pids": [process.pid for process in nodes.processes.values()],
                }
            )
        )
        return nodes


def stop_shared_cluster(run_folder: Path) -> None:
    """Stop the run's shared cluster, if one was started, and delete its folder."""
    state = run_folder / _STATE
    if not state.exists():
        return
    saved = json.loads(state.read_text())
    for port in saved["ports"]:
        # Through its own port: a recycled pid is never signalled.
        with suppress(redis.RedisError):
            redis.Redis(port=port, socket_timeout=2).shutdown(nosave=True)
    deadline = time.monotonic() + 10
    while any(_is_node(pid) for pid in saved["pids"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in saved["pids"]:
        if _is_node(pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(saved["work_dir"], ignore_errors=True)
    state.unlink(missing_ok=True)  # another session may be clearing old temp folders


def _is_node(pid: int) -> bool:
    """Whether ``pid`` is still a running redis-server (not a zombie, not a recycled pid)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"redis-server" in command and status[status.rindex(")") + 2] != "Z"


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterNodes]:
    """One three-master Redis Cluster for the whole test run (shared by xdist workers)."""
    if not is_xdist_worker():
        with private_cluster(tmp_path_factory.mktemp("redis-cluster"), replicas=0) as nodes:
            yield nodes
        return
    yield shared_cluster(run_folder_of(tmp_path_factory))


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.utils.redis_cluster start|stop FOLDER`` (``make demo-cluster``).

    ``start`` launches a three-master cluster whose state lives in FOLDER and prints its
    nodes in Feast's form; ``stop`` shuts it down and deletes FOLDER's cluster files.
    """
    import sys

    command, folder = (argv if argv is not None else sys.argv[1:])[:2]
    run_folder = Path(folder).resolve()
    run_folder.mkdir(parents=True, exist_ok=True)
    if command == "start":
        print(shared_cluster(run_folder).connection_string)
    else:
        stop_shared_cluster(run_folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
