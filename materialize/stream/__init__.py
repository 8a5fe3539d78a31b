"""Streaming ingest: user activity from a Redis Stream into the ``user_activity`` view.

``churn stream`` runs :func:`materialize.stream.worker.run_stream`; the event model, its
validation and the per-user tiles are :mod:`materialize.stream.tiles`; the synthetic
activity of ``churn generate --events`` is :mod:`materialize.stream.activity`.
"""
