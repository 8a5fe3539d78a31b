"""Entity samples and the latest row per entity on the spark backend."""

from __future__ import annotations


class SparkSampling:
    """:class:`core.compute.sampling.SamplingCompute` on the spark backend."""
