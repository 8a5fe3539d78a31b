"""Windows of rows and their summaries, quantile edges and bin counts on the spark backend."""

from __future__ import annotations


class SparkStatistics:
    """:class:`core.compute.statistics.StatisticsCompute` on the spark backend."""
