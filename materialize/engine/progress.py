"""Progress of a materialization: a rich bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress

from core.compute.local.sampling import ChunkPlan


class Progress(Protocol):
    """Receives the progress of one feature view's materialization."""

    def start(self, view: str, plan: ChunkPlan) -> None:
        """Materialization of ``view`` begins with this plan."""

    def advance(self, entities: int) -> None:
        """A chunk of ``entities`` entities was written."""

    def finish(self, written: int, skipped: int) -> None:
        """All chunks were written."""


def _rate(done: int, elapsed: float) -> float:
    return done / elapsed if elapsed > 0 else 0.0


class LogProgress:
    """One plain line per chunk (for logs, CI and pipes)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._view = ""
        self._plan = ChunkPlan(entities=0, rows=0, rejected_rows=0, chunks=0)
        self._started = 0.0
        self._done = 0
        self._chunk = 0

    def _line(self, text: str) -> None:
        print(f"{self._view}: {text}", file=self._stream, flush=True)

    def start(self, view: str, plan: ChunkPlan) -> None:
        """Print what the range holds."""
        self._view, self._plan = view, plan
        self._started, self._done, self._chunk = time.monotonic(), 0, 0
        self._line(
            f"{plan.entities:,} entities ({plan.rows:,} rows in range, "
            f"{plan.rejected_rows:,} rejected without a join key) in {plan.chunks} chunk(s)"
        )

    def advance(self, entities: int) -> None:
        """Print the chunk's progress, rate and time left."""
        self._done += entities
        self._chunk += 1
        elapsed = time.monotonic() - self._started
        rate = _rate(self._done, elapsed)
        left = (self._plan.entities - self._done) / rate if rate else 0.0
        share = 100.0 * self._done / self._plan.entities if self._plan.entities else 100.0
        self._line(
            f"chunk {self._chunk}/{self._plan.chunks}: {self._done:,}/{self._plan.entities:,} "
            f"rows ({share:.0f}%), {rate:,.0f} rows/s, ETA {left:.0f} s"
        )

    def finish(self, written: int, skipped: int) -> None:
        """Print the totals."""
        elapsed = time.monotonic() - self._started
        self._line(
            f"wrote {written:,} entities ({skipped:,} not newer than online) in {elapsed:.1f} s, "
            f"{_rate(self._done, elapsed):,.0f} rows/s"
        )


class BarProgress(LogProgress):
    """A rich progress bar (rows, rows/s, ETA), with the plain summary lines around it."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._bar: Any = None
        self._task: Any = None

    def start(self, view: str, plan: ChunkPlan) -> None:
        """Print the plan and open the bar."""
        super().start(view, plan)
        self._bar = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]} rows/s"),
            TimeRemainingColumn(),
            console=Console(file=self._stream),
        )
        self._bar.start()
        self._task = self._bar.add_task(view, total=plan.entities, rate="-")

    def advance(self, entities: int) -> None:
        """Move the bar."""
        self._done += entities
        self._chunk += 1
        rate = _rate(self._done, time.monotonic() - self._started)
        self._bar.update(self._task, completed=self._done, rate=f"{rate:,.0f}")

    def finish(self, written: int, skipped: int) -> None:
        """Close the bar and print the totals."""
        self._bar.stop()
        super().finish(written, skipped)


def make_progress(stream: TextIO | None = None) -> Progress:
    """A bar when ``stream`` (stderr by default) is a terminal, log lines otherwise."""
    stream = stream or sys.stderr
    return BarProgress(stream) if stream.isatty() else LogProgress(stream)
