"""The retraining trigger: on major drift, retrain through the normal gate, with a cooldown.

The trigger never promotes anything itself: it calls the training pipeline, whose quality
gate and champion/challenger comparison decide what happens to the new model. Every
decision (retrain or not, and why) is appended to a JSON-lines log, so the history of the
loop can be read without MLflow.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from monitoring.statistics import DriftReport

Action = Literal["retrain", "skip"]
# Outcomes after which the cooldown runs: training went through (gate passed or not).
_COOLDOWN_OUTCOMES = {"registered", "below_gate"}


@dataclass
class RetrainDecision:
    """One decision of the trigger and, when it retrained, what training did."""

    decided_at: str
    action: Action
    reasons: list[str]
    severity: str
    major_features: list[str]
    outcome: str = "not_run"  # not_run | registered | below_gate | error
    training: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    report: str | None = None

    def to_json(self) -> str:
        """One line of the decisions log."""
        return json.dumps(asdict(self), default=str, sort_keys=True)


def read_decisions(path: Path) -> list[dict[str, Any]]:
    """Every decision logged so far, oldest first (unreadable lines are reported)."""
    if not path.is_file():
        return []
    decisions = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            decisions.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not a JSON decision ({error.msg})") from error
    return decisions


def last_retraining(decisions: list[dict[str, Any]]) -> datetime | None:
    """When training last went through (a crashed attempt does not start the cooldown)."""
    times = [
        datetime.fromisoformat(item["decided_at"])
        for item in decisions
        if item.get("action") == "retrain" and item.get("outcome") in _COOLDOWN_OUTCOMES
    ]
    return max(times, default=None)


def decide_retraining(
    report: DriftReport, *, now: datetime, last_retrained: datetime | None, cooldown: timedelta
) -> tuple[Action, list[str]]:
    """Whether to retrain now, and why (pure: no I/O)."""
    major = report.names_with("major")
    if not major:
        return "skip", [f"no major drift (overall severity {report.severity})"]
    if last_retrained is not None and now < last_retrained + cooldown:
        return "skip", [
            f"major drift in {', '.join(major)}",
            f"cooldown: last retraining {last_retrained.isoformat(timespec='seconds')}, "
            f"next allowed from {(last_retrained + cooldown).isoformat(timespec='seconds')}",
        ]
    return "retrain", [f"major drift in {', '.join(major)}"]


def trigger_retraining(
    report: DriftReport,
    *,
    train: Callable[[], Any],
    decisions_path: Path,
    cooldown: timedelta,
    now: datetime,
    report_path: Path | None = None,
) -> RetrainDecision:
    """Decide, retrain through ``train`` if warranted, and log the decision.

    Args:
        report: The drift report the decision is based on.
        train: Runs the training pipeline and returns its ``TrainingResult`` (injected so
            the pipeline, its gate and its registry stay the only path to a new model).
        decisions_path: JSON-lines log; read for the cooldown, appended to.
        cooldown: Minimum time between two retrainings that went through.
        now: The decision time (timezone-aware).
        report_path: The drift report the decision refers to, for the log.
    """
    last = last_retraining(read_decisions(decisions_path))
    action, reasons = decide_retraining(report, now=now, last_retrained=last, cooldown=cooldown)
    decision = RetrainDecision(
        decided_at=now.isoformat(),
        action=action,
        reasons=reasons,
        severity=report.severity,
        major_features=report.names_with("major"),
        report=str(report_path) if report_path else None,
    )
    if action == "retrain":
        try:
            result = train()
        except Exception as error:  # recorded, then re-raised by the caller's exit code
            decision.outcome = "error"
            decision.error = f"{type(error).__name__}: {error}"
        else:
            decision.outcome = "registered" if result.registered else "below_gate"
            decision.training = {
                key: getattr(result, key, None)
                for key in (
                    "run_id",
                    "test_roc_auc",
                    "registered",
                    "version",
                    "promoted",
                    "reason",
                    "champion_test_roc_auc",
                )
            }
    decisions_path.parent.mkdir(parents=True, exist_ok=True)
    with decisions_path.open("a") as log:
        log.write(decision.to_json() + "\n")
    return decision
