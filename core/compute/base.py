"""The offline-compute interface: every capability's protocol, in one type."""

from __future__ import annotations

from typing import Protocol

from core.compute.retrieval import RetrievalCompute
from core.compute.sampling import SamplingCompute
from core.compute.statistics import StatisticsCompute


class OfflineCompute(RetrievalCompute, StatisticsCompute, SamplingCompute, Protocol):
    """Offline work of the stages on one backend (see :mod:`core.compute`)."""

    name: str  # "local" or "spark"
