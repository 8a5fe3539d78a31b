"""Dagster jobs, schedules and the resource that runs the ``churn`` commands.

Each task runs a ``churn`` command as a subprocess, exactly as an operator would type it:
the exit codes are the commands' own (``workflow.outcomes`` maps them), each run gets a
fresh process (Feast imports a repo's modules by bare name and keeps them; MLflow and
sklearn memory is returned when the task ends), and the stage's metrics are written by the
command itself.
"""

# No `from __future__ import annotations`: Dagster reads the annotations of op functions.
import os
import subprocess
from collections.abc import Iterator, Mapping
from typing import Any

from dagster import (
    ConfigurableResource,
    DagsterRunStatus,
    DefaultScheduleStatus,
    Failure,
    In,
    JobDefinition,
    MetadataValue,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    RetryRequested,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    job,
    op,
    schedule,
)
from pydantic import Field

from workflow.outcomes import Outcome, outcome_of
from workflow.settings import WorkflowSettings

IN_PROGRESS = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]
_TAIL_LINES = 40


class ChurnCommands(ConfigurableResource):
    """Runs ``churn <command>`` with the process environment (plus ``env``)."""

    executable: str
    timeout_s: float = 6 * 3600
    env: dict[str, str] = Field(default_factory=dict)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run one command to the end; its output is captured for the step's metadata."""
        return subprocess.run(
            [self.executable, *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=self.timeout_s,
            check=False,
        )


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-_TAIL_LINES:])


def run_stage(
    context: OpExecutionContext,
    churn: ChurnCommands,
    args: list[str],
    *,
    retry_attempts: int = 0,
    retry_delay_s: float = 0.0,
) -> Iterator[Output[str]]:
    """Run a churn command and show its outcome in Dagster.

    ``ok`` and ``warning`` outcomes yield the outcome name (so later steps run), ``skipped``
    yields nothing (later steps are shown as skipped), ``failed`` raises: a retryable
    failure (unreachable online store) as ``RetryRequested`` with a delay that doubles,
    until ``retry_attempts`` retries are spent, then as a ``Failure`` naming the cause.
    """
    command = args[0]
    completed = churn.run(*args)
    outcome = outcome_of(command, completed.returncode, completed.stderr)
    metadata = {
        "command": MetadataValue.text(" ".join(["churn", *args])),
        "exit_code": MetadataValue.int(completed.returncode),
        "outcome": MetadataValue.text(outcome.name),
        "stdout": MetadataValue.md(f"```\n{_tail(completed.stdout)}\n```"),
        "stderr": MetadataValue.md(f"```\n{_tail(completed.stderr)}\n```"),
    }
    _tag_run(context, outcome)
    context.log.info(f"churn {' '.join(args)}: exit {completed.returncode} ({outcome.name})")
    if outcome.state == "failed":
        message = _last_error(completed.stderr) or f"exit code {completed.returncode}"
        if outcome.retryable and context.retry_number < retry_attempts:
            delay = retry_delay_s * 2**context.retry_number
            context.log.warning(
                f"online store unreachable (attempt {context.retry_number + 1} of "
                f"{retry_attempts + 1}); retrying in {delay:g} s: {message}"
            )
            raise RetryRequested(max_retries=retry_attempts, seconds_to_wait=delay)
        attempts = f" after {context.retry_number + 1} attempts" if outcome.retryable else ""
        raise Failure(
            description=f"churn {command}: {outcome.name}{attempts}: {message}",
            metadata=metadata,
            allow_retries=False,
        )
    if outcome.state == "warning":
        context.log.warning(f"churn {command}: {outcome.name} (exit {completed.returncode})")
    if outcome.state == "skipped":
        context.log.warning(
            f"churn {command}: {outcome.name}; the steps after it are skipped: "
            f"{_last_error(completed.stderr) or _tail(completed.stdout)}"
        )
        return
    yield Output(outcome.name, metadata=metadata)


def _tag_run(context: OpExecutionContext, outcome: Outcome) -> None:
    """The outcome as a run tag (``churn/<step>``): visible in the runs list and searchable."""
    context.instance.add_run_tags(context.run_id, {f"churn/{context.op.name}": outcome.name})


def _last_error(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [""])[-1]


def _profile_args(settings: WorkflowSettings) -> list[str]:
    return ["--profile", settings.profile] if settings.profile else []


def _materialize_op(view: str, settings: WorkflowSettings) -> Any:
    @op(
        name=f"materialize_{view}",
        out=Out(str, is_required=False),
        description=f"churn materialize --view {view} (incremental)",
        tags={"churn/view": view},
    )
    def _materialize(context: OpExecutionContext, churn: ChurnCommands) -> Iterator[Output[str]]:
        yield from run_stage(
            context,
            churn,
            ["materialize", "--view", view, *_profile_args(settings)],
            retry_attempts=settings.retry_attempts,
            retry_delay_s=settings.retry_delay_s,
        )

    return _materialize


def build_materialize_job(settings: WorkflowSettings) -> JobDefinition:
    """Hourly incremental materialization: one step per feature view."""
    steps = [_materialize_op(view, settings) for view in settings.feature_views]

    @job(
        name="hourly_materialize",
        description="Incremental materialization per feature view.",
        tags={"churn/job": "hourly_materialize"},
    )
    def hourly_materialize() -> None:
        for step in steps:
            step()

    return hourly_materialize


def build_nightly_job(settings: WorkflowSettings) -> JobDefinition:
    """Nightly: the skew check, then drift with retraining behind the gate."""

    @op(out=Out(str, is_required=False), description="churn skew-check")
    def skew_check(context: OpExecutionContext, churn: ChurnCommands) -> Iterator[Output[str]]:
        args = ["skew-check", "--sample", str(settings.skew_sample)]
        args += ["--service", settings.skew_service, *_profile_args(settings)]
        yield from run_stage(context, churn, args)

    @op(
        ins={"after": In(Nothing)},
        out=Out(str, is_required=False),
        description="churn drift --retrain",
    )
    def drift(context: OpExecutionContext, churn: ChurnCommands) -> Iterator[Output[str]]:
        args = ["drift", "--retrain"]
        if settings.drift_window:
            args += ["--window", settings.drift_window]
        if settings.drift_trials:
            args += ["--trials", str(settings.drift_trials)]
        yield from run_stage(context, churn, [*args, *_profile_args(settings)])

    @job(
        name="nightly_drift",
        description="Skew check, then drift with gated retraining.",
        tags={"churn/job": "nightly_drift"},
    )
    def nightly_drift() -> None:
        drift(after=skew_check())

    return nightly_drift


def build_evaluate_job(settings: WorkflowSettings) -> JobDefinition:
    """Daily: the window's performance estimated from its probabilities, and the served
    predictions against the labels that have landed."""

    @op(out=Out(str, is_required=False), description="churn estimate")
    def estimate(context: OpExecutionContext, churn: ChurnCommands) -> Iterator[Output[str]]:
        yield from run_stage(context, churn, ["estimate", "--window", settings.evaluate_window])

    @op(out=Out(str, is_required=False), description="churn evaluate")
    def evaluate(context: OpExecutionContext, churn: ChurnCommands) -> Iterator[Output[str]]:
        args = ["evaluate", "--window", settings.evaluate_window]
        args += ["--max-label-age", settings.evaluate_max_label_age]
        args += ["--min-auc", str(settings.evaluate_min_auc)]
        yield from run_stage(context, churn, args)

    @job(
        name="daily_evaluate",
        description="ROC AUC of served predictions on landed labels.",
        tags={"churn/job": "daily_evaluate"},
    )
    def daily_evaluate() -> None:
        estimate()
        evaluate()

    return daily_evaluate


def build_schedule(
    job_def: JobDefinition, cron: str, timezone: str, *, running: bool = True
) -> ScheduleDefinition:
    """A schedule that skips a tick while a run of the same job is still in progress.

    ``running``: the schedule is on as soon as Dagster loads it (Dagster's default is off).
    """

    @schedule(
        name=f"{job_def.name}_schedule",
        job=job_def,
        cron_schedule=cron,
        execution_timezone=timezone,
        default_status=DefaultScheduleStatus.RUNNING if running else DefaultScheduleStatus.STOPPED,
    )
    def _tick(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        running = context.instance.get_run_records(
            RunsFilter(job_name=job_def.name, statuses=IN_PROGRESS), limit=1
        )
        if running:
            return SkipReason(
                f"{job_def.name} run {running[0].dagster_run.run_id} is still in progress: "
                "no overlapping runs"
            )
        return RunRequest()

    return _tick


def build_resources(settings: WorkflowSettings) -> Mapping[str, Any]:
    """The resources every job needs."""
    return {
        "churn": ChurnCommands(
            executable=settings.churn_executable, timeout_s=settings.command_timeout_s
        )
    }
