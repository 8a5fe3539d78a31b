"""The spark backend: the work runs on the cluster; the driver gets counts, aggregates or
bounded Arrow batches (:mod:`core.compute.spark.io`). pyspark is imported only where a
Spark frame is built, so importing this package needs no JVM."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.compute.spark.retrieval import SparkRetrieval
from core.compute.spark.sampling import SparkSampling
from core.compute.spark.statistics import SparkStatistics

if TYPE_CHECKING:
    from feast import FeatureStore


class SparkCompute(SparkRetrieval, SparkStatistics, SparkSampling):
    """:class:`core.compute.OfflineCompute` on the spark profile's cluster."""

    name = "spark"

    def __init__(self, store: FeatureStore):
        self.store = store
