"""Point-in-time joins, staged reads and the leakage audit's source reads on the spark backend."""

from __future__ import annotations


class SparkRetrieval:
    """:class:`core.compute.retrieval.RetrievalCompute` on the spark backend."""
