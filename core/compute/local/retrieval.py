"""Point-in-time joins, staged reads and the leakage audit's source reads on the local backend."""

from __future__ import annotations


class LocalRetrieval:
    """:class:`core.compute.retrieval.RetrievalCompute` on the local backend."""
