"""Windows of rows and their summaries, quantile edges and bin counts: the protocol."""

from __future__ import annotations

from typing import Protocol


class StatisticsCompute(Protocol):
    """Windows of rows and their summaries, quantile edges and bin counts (drift, evaluation)."""
