"""The stream worker's latencies: a Prometheus histogram and the figures of its summary.

``churn_stream_freshness_seconds`` (event time to servable, one observation per applied
event, taken when its batch's online write commits) lives in the process's default
Prometheus registry, served on ``/metrics`` when ``CHURN_STREAM_METRICS_PORT`` is set. A
batch's observations are binned with numpy and added at once: observing events one by one
costs more than the rest of their processing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

FRESHNESS_NAME = "churn_stream_freshness_seconds"
FRESHNESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


class BatchHistogram:
    """A Prometheus histogram fed a batch of observations at a time (a custom collector)."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = np.array(buckets, dtype=np.float64)
        self.counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # the last is +Inf
        self.total = 0.0
        self._lock = threading.Lock()

    def observe(self, values: np.ndarray) -> None:
        """Add observations."""
        if not len(values):
            return
        binned = np.bincount(
            np.searchsorted(self.bounds, values, side="left"), minlength=len(self.counts)
        )
        with self._lock:
            self.counts += binned
            self.total += float(values.sum())

    def collect(self) -> Iterator[Any]:
        """The histogram as Prometheus reads it (cumulative buckets)."""
        from prometheus_client.core import HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        with self._lock:
            cumulative = np.cumsum(self.counts).tolist()
            total = self.total
        names = [floatToGoString(bound) for bound in self.bounds] + ["+Inf"]
        yield HistogramMetricFamily(
            self.name,
            self.documentation,
            buckets=list(zip(names, cumulative, strict=True)),
            sum_value=total,
        )


_FRESHNESS: BatchHistogram | None = None
_REGISTERING = threading.Lock()


def freshness() -> BatchHistogram:
    """The process's ``churn_stream_freshness_seconds`` (registered on first use)."""
    global _FRESHNESS
    with _REGISTERING:
        if _FRESHNESS is None:
            from prometheus_client import REGISTRY

            _FRESHNESS = BatchHistogram(
                FRESHNESS_NAME,
                "Event time to servable online (its batch committed by churn stream), seconds.",
                FRESHNESS_BUCKETS,
            )
            REGISTRY.register(_FRESHNESS)
        return _FRESHNESS


class Latencies:
    """Milliseconds at 1 ms resolution up to a minute (longer counts as a minute), and max.

    For the worker's summary: percentiles over every event, not one per batch.
    """

    SPAN_MS = 60_000

    def __init__(self) -> None:
        self.counts = np.zeros(self.SPAN_MS + 1, dtype=np.int64)
        self.worst = 0.0

    def add(self, milliseconds: np.ndarray) -> None:
        """Add observations."""
        if not len(milliseconds):
            return
        self.worst = max(self.worst, float(milliseconds.max()))
        binned = np.bincount(np.clip(milliseconds, 0, self.SPAN_MS).astype(np.int64))
        self.counts[: len(binned)] += binned

    def percentiles(self) -> tuple[float, float, float]:
        """p50, p99 (upper edge of their millisecond) and max; zeros when empty."""
        total = int(self.counts.sum())
        if not total:
            return (0.0, 0.0, 0.0)
        cumulative = np.cumsum(self.counts)
        pick = [float(np.searchsorted(cumulative, q * total) + 1) for q in (0.5, 0.99)]
        return (min(pick[0], self.worst), min(pick[1], self.worst), self.worst)
