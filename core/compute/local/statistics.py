"""Windows of rows and their summaries, quantile edges and bin counts on the local backend."""

from __future__ import annotations


class LocalStatistics:
    """:class:`core.compute.statistics.StatisticsCompute` on the local backend."""
