"""Streaming ingest: user activity from a Redis Stream into the ``user_activity`` view.

``churn stream`` runs :func:`materialize.stream.worker.run_stream`; the event model, its
validation and the per-user tiles are :mod:`materialize.stream.tiles`; the worker's Redis
scripts (read, atomic commit, outbox claims) :mod:`materialize.stream.store`; where it
writes (from the Feast registry) :mod:`materialize.stream.target`; its latencies and the
``churn_stream_freshness_seconds`` histogram :mod:`materialize.stream.metrics`; the synthetic
activity of ``churn generate --events`` is :mod:`materialize.stream.activity`.
"""
