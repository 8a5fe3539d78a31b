"""Point-in-time joins, staged reads and the leakage audit's source reads: the protocol."""

from __future__ import annotations

from typing import Protocol


class RetrievalCompute(Protocol):
    """Point-in-time joins, staged reads and the leakage audit's source reads."""
