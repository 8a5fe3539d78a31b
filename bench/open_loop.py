"""An open-loop, constant-rate HTTP load generator: latency without coordinated omission.

Request ``i`` is due at ``start + i / rate`` whatever happened to the requests before it,
and its latency is measured from that intended time, not from when it was actually sent: a
stalled server (or a stalled generator) shows up as latency of every request that should
have gone out meanwhile, instead of silently lowering the rate as a closed-loop client
(wrk, hey) does. Connections are kept alive and opened on demand (up to a cap) when every
open one is busy; waiting for one counts as latency too.

Plain HTTP/1.1 over asyncio streams (no client library), on uvloop (installed with
``uvicorn[standard]``; ``run_with_uvloop``), keeps the generator's own CPU per request small
on a machine it shares with the server.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import uvloop

_T = TypeVar("_T")

_REQUEST_ID = b'"request_id":"'


@dataclass
class Outcome:
    """One request: when it was due (seconds from the start), its status (0: no answer)."""

    due_s: float
    status: int
    latency_s: float
    request_id: str | None = None
    # From due to written on a connection: the generator's own share of latency_s (its
    # timer ticks in milliseconds, and a connection may have to be opened first).
    send_lag_s: float = 0.0


@dataclass
class OpenLoopRun:
    """Every request's outcome, in due order."""

    rate: float
    outcomes: list[Outcome] = field(default_factory=list)
    behind_s: float = 0.0  # most the generator's sends lagged their due time
    shed: int = 0  # due while max_in_flight were unanswered: counted failed, not sent


class _Pool:
    """Keep-alive connections to one server, opened when none is idle (at most ``limit``)."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0
        self._freed = asyncio.Condition()

    async def take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with self._freed:
            while not self.idle and self.opened >= self.limit:
                await self._freed.wait()
            while self.idle:
                connection = self.idle.pop()
                if not connection[0].at_eof():
                    return connection
                # Closed by the server while idle (its keep-alive timeout): not a failure.
                connection[1].close()
                self.opened -= 1
            self.opened += 1
        try:
            return await asyncio.open_connection(self.host, self.port)
        except BaseException:  # refused, or the request's timeout while connecting
            await self.discard(None)
            raise

    async def give_back(
        self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter]
    ) -> None:
        async with self._freed:
            self.idle.append(connection)
            self._freed.notify()

    async def discard(
        self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None
    ) -> None:
        if connection is not None:
            connection[1].close()
        async with self._freed:
            self.opened -= 1
            self._freed.notify()


async def run_open_loop(
    host: str,
    port: int,
    path: str,
    body_of: Callable[[int], bytes],
    *,
    rate: float,
    duration_s: float,
    max_connections: int = 256,
    timeout_s: float = 10.0,
    max_in_flight: int = 4096,
) -> OpenLoopRun:
    """POST ``body_of(i)`` to ``path`` at ``rate`` requests/s for ``duration_s`` seconds.

    A request due while ``max_in_flight`` others are unanswered is not sent: it counts as
    failed (status 0) with the timeout as its latency, so a stalled server cannot make the
    generator pile up unbounded work (and its own stall hide in the figures).
    """
    pool = _Pool(host, port, max_connections)
    run = OpenLoopRun(rate)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    # time.perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds, which
    # would round every latency (and a p99 goal of a few ms) to the millisecond.
    clock = time.perf_counter
    # The generator's own collections would pause its reading of answers (tens of ms over
    # hundreds of thousands of outcomes) and show up as the server's latency: off for the run.
    gc.collect()
    gc.disable()
    start = clock()

    async def send(index: int, due: float) -> None:
        body = body_of(index)
        request = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
        outcome = Outcome(due - start, 0, 0.0)
        run.outcomes[index] = outcome
        connection = None
        try:
            async with asyncio.timeout(timeout_s):
                connection = await pool.take()
                reader, writer = connection
                outcome.send_lag_s = clock() - due
                writer.write(request)
                headers = await reader.readuntil(b"\r\n\r\n")
                status = int(headers[9:12])
                length = 0
                keep = True
                for line in headers.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection" and value.strip().lower() == b"close":
                        keep = False
                payload = await reader.readexactly(length)
            outcome.status = status
            outcome.latency_s = clock() - due
            if status == 200:
                at = payload.find(_REQUEST_ID)
                if at >= 0:
                    begin = at + len(_REQUEST_ID)
                    outcome.request_id = payload[begin : payload.index(b'"', begin)].decode()
            if keep:
                await pool.give_back(connection)
            else:
                await pool.discard(connection)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            outcome.latency_s = clock() - due
            if connection is not None:
                await pool.discard(connection)

    try:
        total = int(rate * duration_s)
        run.outcomes = [Outcome(0.0, 0, 0.0)] * total
        in_flight: set[asyncio.Task[None]] = set()
        for index in range(total):
            due = start + index / rate
            delay = due - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                run.behind_s = max(run.behind_s, -delay)
                await asyncio.sleep(0)  # behind: still let the requests and the events run
            if len(in_flight) >= max_in_flight:
                run.outcomes[index] = Outcome(due - start, 0, timeout_s)
                run.shed += 1
                continue
            task = asyncio.create_task(send(index, due))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        tasks = list(in_flight)
        await asyncio.gather(*tasks)
        for connection in pool.idle:
            connection[1].close()
    finally:
        gc.enable()
    return run


def announce_saturation_run(name: str) -> bool:
    """Print the benchmark's heading (time, cores, load); False when wrk, which measures the
    saturation the open-loop rate is derived from, is missing (said on stderr)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if not shutil.which("wrk"):
        print("wrk is needed to measure the saturation: apt-get install wrk", file=sys.stderr)
        return False
    print(
        f"{name} benchmark {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    return True


def run_with_uvloop(main: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run`` on uvloop: the generator then takes a fraction of the CPU it takes on
    the default loop, CPU the measured server would otherwise lose."""
    return uvloop.run(main)


def percentile(values: list[float], share: float) -> float:
    """The ``share`` quantile (0-1) of ``values`` (nearest rank); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
