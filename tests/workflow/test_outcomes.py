"""How each exit code shows in Dagster, and the schedules' no-overlap rule.

The `churn` command is replaced by a stub script here: what is under test is the mapping
of exit codes to outcomes; tests/workflow/test_workflow_e2e.py runs the real commands.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunRequest,
    SkipReason,
    build_schedule_context,
    instance_for_test,
)

from core.exits import ExitCode
from tests.utils.workflow import workflow_settings
from workflow.definitions import build_definitions
from workflow.jobs import (
    ChurnCommands,
    build_evaluate_job,
    build_materialize_job,
    build_nightly_job,
    build_schedule,
)
from workflow.outcomes import EXIT_OUTCOMES, outcome_of

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


@pytest.fixture
def stub(tmp_path: Path) -> str:
    """A `churn` that prints its arguments and exits with $STUB_EXIT (per command)."""
    script = tmp_path / "churn"
    script.write_text(
        "#!/bin/sh\n"
        'echo "args: $*"\n'
        'code=$(eval echo "\\${STUB_EXIT_$(echo "$1" | tr - _):-${STUB_EXIT:-0}}")\n'
        '[ "$code" = 0 ] || echo "error: stub failure $code" >&2\n'
        'exit "$code"\n'
    )
    script.chmod(0o755)
    return str(script)


def _run(job, stub: str, **env: str):  # type: ignore[no-untyped-def]
    instance = DagsterInstance.ephemeral()
    result = job.execute_in_process(
        instance=instance,
        resources={"churn": ChurnCommands(executable=stub, env=env)},
        raise_on_error=False,
    )
    run = instance.get_run_by_id(result.run_id)
    return result, dict(run.tags)


def _output_metadata(result, step: str):  # type: ignore[no-untyped-def]
    [event] = [
        e for e in result.all_events if e.event_type_value == "STEP_OUTPUT" and e.step_key == step
    ]
    return event.event_specific_data.metadata


def test_the_table_maps_every_documented_exit_code() -> None:
    assert outcome_of("drift", 0).name == "ok"
    assert outcome_of("drift", 4).state == "warning"
    assert outcome_of("train", 3).name == "failed_gate"
    assert outcome_of("train", 3).state == "warning"
    assert outcome_of("evaluate", 4).name == "auc_below_gate"
    assert outcome_of("drift", ExitCode.STALE_DATA).state == "skipped"
    assert outcome_of("drift", 2).state == "failed" and not outcome_of("drift", 2).retryable
    assert outcome_of("skew-check", 1).name == "skew_mismatch"
    assert outcome_of("materialize", 1, "error: cannot reach the Redis online store at x").retryable
    assert not outcome_of("materialize", 1, "error: offline table unreadable").retryable
    assert outcome_of("drift", 77).name == "unknown_exit_code"
    assert {code for _, code in EXIT_OUTCOMES} == {0, 1, 2, 3, 4, 5}


def test_major_drift_is_a_green_run_with_the_finding_as_its_outcome(stub: str) -> None:
    job = build_nightly_job(workflow_settings())
    result, tags = _run(job, stub, STUB_EXIT_drift="4")
    assert result.success
    assert result.output_for_node("drift") == "major_drift"
    assert tags["churn/drift"] == "major_drift"
    metadata = _output_metadata(result, "drift")
    assert (metadata["exit_code"].value, metadata["outcome"].value) == (4, "major_drift")
    assert metadata["command"].value == "churn drift --retrain --trials 2"


def test_stale_data_skips_the_steps_after_it(stub: str) -> None:
    job = build_nightly_job(workflow_settings())
    result, tags = _run(job, stub, **{"STUB_EXIT_skew_check": str(ExitCode.STALE_DATA)})
    assert result.success
    assert tags["churn/skew_check"] == "stale_data"
    skipped = [e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"]
    assert skipped == ["drift"]
    assert "churn/drift" not in tags


def test_bad_input_fails_at_once_without_retries(stub: str) -> None:
    job = build_materialize_job(workflow_settings(retry_attempts=3, retry_delay_s=0))
    result, tags = _run(job, stub, STUB_EXIT="2")
    assert not result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    failure = result.failure_data_for_node("materialize_user_features")
    assert failure.user_failure_data.description == (
        "churn materialize: bad_input: error: stub failure 2"
    )
    assert tags["churn/materialize_user_features"] == "bad_input"


def test_a_skew_mismatch_fails_the_night_before_drift(stub: str) -> None:
    result, tags = _run(build_nightly_job(workflow_settings()), stub, STUB_EXIT_skew_check="1")
    assert not result.success
    assert tags["churn/skew_check"] == "skew_mismatch"
    assert "churn/drift" not in tags


def test_one_materialization_step_per_view_with_the_view_argument(stub: str) -> None:
    job = build_materialize_job(workflow_settings(feature_views=["a_view", "b_view"]))
    result, _ = _run(job, stub)
    assert result.success
    assert sorted(node.name for node in job.nodes) == ["materialize_a_view", "materialize_b_view"]
    commands = {
        event.step_key: event.event_specific_data.metadata["command"].value
        for event in result.all_events
        if event.event_type_value == "STEP_OUTPUT"
    }
    assert commands == {
        "materialize_a_view": "churn materialize --view a_view",
        "materialize_b_view": "churn materialize --view b_view",
    }


def test_evaluate_passes_the_gate_and_windows_from_settings(stub: str) -> None:
    settings = workflow_settings(evaluate_window="2d", evaluate_min_auc=0.8, profile="team")
    result, _ = _run(build_evaluate_job(settings), stub)
    outputs = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    commands = sorted(e.event_specific_data.metadata["command"].value for e in outputs)
    assert commands == [
        "churn estimate --window 2d",
        "churn evaluate --window 2d --max-label-age 7d --min-auc 0.8",
    ]


def test_a_schedule_skips_while_a_run_of_its_job_is_in_progress() -> None:
    job = build_materialize_job(workflow_settings())
    schedule = build_schedule(job, "5 * * * *", "UTC")
    with instance_for_test() as instance:
        with build_schedule_context(instance=instance) as context:
            assert isinstance(schedule(context), RunRequest)
        running = DagsterRun(job_name=job.name, run_id="a" * 36, status=DagsterRunStatus.STARTED)
        instance.add_run(running)
        with build_schedule_context(instance=instance) as context:
            skipped = schedule(context)
    assert isinstance(skipped, SkipReason)
    assert "still in progress: no overlapping runs" in (skipped.skip_message or "")


def test_schedules_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURN_WORKFLOW_HOURLY_CRON", "15 * * * *")
    monkeypatch.setenv("CHURN_WORKFLOW_NIGHTLY_CRON", "0 3 * * *")
    monkeypatch.setenv("CHURN_WORKFLOW_FEATURE_VIEWS", '["user_features", "other"]')
    definitions = build_definitions()
    crons = {schedule.job_name: schedule.cron_schedule for schedule in definitions.schedules or []}
    assert crons == {
        "hourly_materialize": "15 * * * *",
        "nightly_drift": "0 3 * * *",
        "daily_evaluate": "0 7 * * *",
    }
    job = definitions.resolve_job_def("hourly_materialize")
    assert sorted(node.name for node in job.nodes) == [
        "materialize_other",
        "materialize_user_features",
    ]
    with pytest.raises(ValueError, match="not a five-field cron expression"):
        workflow_settings(hourly_cron="hourly")
