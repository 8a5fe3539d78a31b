"""What Dagster loads: ``dagster dev -m workflow.definitions`` (``make workflow``).

Settings are read from the environment when Dagster loads this module (that is when a
Dagster code location is built), not when the stages run.
"""

from __future__ import annotations

from dagster import Definitions

from workflow.jobs import (
    build_evaluate_job,
    build_materialize_job,
    build_nightly_job,
    build_resources,
    build_schedule,
)
from workflow.settings import WorkflowSettings


def build_definitions(settings: WorkflowSettings | None = None) -> Definitions:
    """Jobs, schedules and resources of the platform's schedule."""
    settings = settings or WorkflowSettings()
    materialize = build_materialize_job(settings)
    nightly = build_nightly_job(settings)
    evaluate = build_evaluate_job(settings)
    on = settings.schedules_running
    return Definitions(
        jobs=[materialize, nightly, evaluate],
        schedules=[
            build_schedule(materialize, settings.hourly_cron, settings.timezone, running=on),
            build_schedule(nightly, settings.nightly_cron, settings.timezone, running=on),
            build_schedule(evaluate, settings.evaluate_cron, settings.timezone, running=on),
        ],
        resources=build_resources(settings),
    )


defs = build_definitions()
