"""The executors' Python daemon loads the installed pyspark when the zips match it."""

from __future__ import annotations

import pyspark

from tests.utils.spark import SparkCluster, cluster_session


def test_executors_import_the_installed_pyspark(spark_cluster: SparkCluster) -> None:
    # The profile's spark_conf names the daemon; a task reports where its pyspark came from.
    spark = cluster_session(spark_cluster)

    def _where(_: object) -> list[str]:
        import pyspark as executor_pyspark

        return [executor_pyspark.__file__ or ""]

    found = spark.sparkContext.parallelize(range(2), 2).mapPartitions(_where).collect()
    assert found == [pyspark.__file__] * 2
