"""Entity samples and the latest row per entity on the local backend."""

from __future__ import annotations


class LocalSampling:
    """:class:`core.compute.sampling.SamplingCompute` on the local backend."""
