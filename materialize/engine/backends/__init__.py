"""The engine's backends other than the local one: ``spark`` runs it inside Spark tasks.

Feast loads the spark backend's engine by its path in the profile's ``batch_engine:`` block
(``materialize.engine.backends.spark.SparkEngine``). It stays beside the stage rather than
in ``core.compute``: its executors run the stage's encoding and Redis writer.
"""
