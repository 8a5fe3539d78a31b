"""Entity samples and the latest row per entity: the protocol."""

from __future__ import annotations

from typing import Protocol


class SamplingCompute(Protocol):
    """Entity samples and the latest row per entity (skew-check, materialization)."""
