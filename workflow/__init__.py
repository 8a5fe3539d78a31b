"""The platform's schedule on Dagster: hourly materialization, nightly skew check and drift
(with retraining behind its gate), daily evaluation. ``workflow.definitions`` is what
``dagster dev -m workflow.definitions`` (``make workflow``) loads.
"""
