"""The retraining trigger: on harm, retrain through the normal gate, with a cooldown.

Harm is a performance signal: the estimated ROC AUC of the current window (from calibrated
probabilities, :mod:`monitoring.estimation`) more than a margin below the champion's
reference with its interval below it too, or the realized ROC AUC on landed labels more
than the margin below it. Drift (and any other finding of the drift job) alone is an
alert: the exit code, the metrics and the decisions log say so, and nothing is retrained
unless ``CHURN_MONITORING_RETRAIN_ON_DRIFT`` asks for it. A decision records which signal
decided (``signal``).

The trigger never promotes anything itself: it calls the training pipeline, whose quality
gate and champion/challenger comparison decide what happens to the new model. Every
decision (retrain or not, and why) is appended to a JSON-lines log, so the history of the
loop can be read without MLflow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from core.files import fsync_path
from core.locks import file_lock
from monitoring.comparison import DriftReport
from monitoring.estimation import estimated_harm

logger = logging.getLogger(__name__)

__all__ = ["HarmSignals", "decide_retraining", "estimated_harm", "trigger_retraining"]

Action = Literal["retrain", "skip"]
Signal = Literal["estimated_performance", "realized_performance", "drift", "none"]
# Outcomes after which the cooldown runs: training went through (gate passed or not).
_COOLDOWN_OUTCOMES = {"registered", "below_gate"}
STARTED = "started"


@dataclass
class RetrainDecision:
    """One decision of the trigger and, when it retrained, what training did."""

    decided_at: str
    action: Action
    reasons: list[str]
    severity: str
    major_features: list[str]
    signal: Signal = "none"
    alerts: list[str] = field(default_factory=list)
    performance: dict[str, Any] = field(default_factory=dict)
    outcome: str = "not_run"  # not_run | started | registered | below_gate | error
    training: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    report: str | None = None
    decision_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    log_problems: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """One line of the decisions log."""
        return json.dumps(asdict(self), default=str, sort_keys=True)


def read_decisions(path: Path, *, problems: list[str] | None = None) -> list[dict[str, Any]]:
    """Every decision logged so far, oldest first, one entry per decision.

    A retraining writes two lines with the same ``decision_id`` (``started`` before
    training, then its outcome); they are merged, the later line winning. A damaged last
    line (a crash or a full disk in the middle of an append) is left out and described in
    ``problems``; a damaged line before it is an error.

    Raises:
        ValueError: A damaged line that is not the last one.
    """
    if not path.is_file():
        return []
    lines = [(n, line) for n, line in enumerate(path.read_bytes().splitlines(), 1) if line.strip()]
    merged: dict[str, dict[str, Any]] = {}
    for index, (number, line) in enumerate(lines):
        try:
            item = json.loads(line)
            if not isinstance(item, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as error:
            message = getattr(error, "msg", str(error))
            if index == len(lines) - 1:
                problem = (
                    f"{path}:{number}: damaged last line left out ({message}); "
                    "probably an interrupted write"
                )
                logger.warning(problem)
                if problems is not None:
                    problems.append(problem)
                continue
            raise ValueError(f"{path}:{number}: not a JSON decision ({message})") from error
        key = str(item.get("decision_id") or f"line-{number}")
        merged[key] = {**merged.get(key, {}), **item}
    return list(merged.values())


def _alive(entry: dict[str, Any]) -> bool:
    """Whether a ``started`` retraining may still be running.

    On this host the process is checked; from another host it cannot be, so it counts as
    running (until the cooldown after its start has passed).
    """
    if entry.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(entry.get("pid", -1)), 0)
    except (OSError, ValueError, OverflowError):
        return False
    return True


def last_retraining(decisions: list[dict[str, Any]]) -> datetime | None:
    """When training last went through or started and may still run.

    A crashed attempt (outcome ``error``, or ``started`` by a process that is gone) does
    not start the cooldown.
    """
    times = [
        datetime.fromisoformat(item["decided_at"])
        for item in decisions
        if item.get("action") == "retrain"
        and (
            item.get("outcome") in _COOLDOWN_OUTCOMES
            or (item.get("outcome") == STARTED and _alive(item))
        )
    ]
    return max(times, default=None)


def append_decision(path: Path, decision: RetrainDecision) -> None:
    """Append one line in a single write, then fsync (a crash leaves at most that line torn).

    Call it under the decision lock. A torn last line from an earlier crash is moved to
    ``<log>.damaged`` first (kept, not lost), so the log stays one JSON object per line.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(descriptor).st_size
        if size and os.pread(descriptor, 1, size - 1) != b"\n":
            _set_aside_torn_line(path, descriptor, size)
        os.write(descriptor, (decision.to_json() + "\n").encode())
    finally:
        os.close(descriptor)
    fsync_path(path)
    if created:  # make the new directory entry durable too
        fsync_path(path.parent)


def _set_aside_torn_line(path: Path, descriptor: int, size: int) -> None:
    """Move the unterminated tail of the log to ``<log>.damaged`` and cut it off."""
    window = min(size, 1 << 20)
    tail = os.pread(descriptor, window, size - window)
    cut = size - window + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
    fragment = os.pread(descriptor, size - cut, cut)
    damaged = path.with_name(path.name + ".damaged")
    with damaged.open("ab") as aside:
        aside.write(fragment + b"\n")
    fsync_path(damaged)
    os.ftruncate(descriptor, cut)
    logger.warning("%s: torn last line (%d bytes) moved to %s", path, len(fragment), damaged)


@dataclass(frozen=True)
class HarmSignals:
    """The performance signals of one run (None: no harm shown, or not measured).

    Attributes:
        estimated: Why the estimate shows harm (:func:`estimated_harm`).
        realized: Why the realized performance shows harm (:func:`realized_harm`).
        figures: The figures behind them, for the decisions log.
        unsupported: Why the window's estimate claimed no figure (``out_of_support``: its
            rows left the training range); the estimate then decides nothing and the
            data-quality alert stands for the window.
    """

    estimated: str | None = None
    realized: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    unsupported: str | None = None


def realized_harm(
    roc_auc: float | None, rows: int, reference_auc: float | None, *, margin: float, min_rows: int
) -> str | None:
    """Why the realized ROC AUC shows harm (more than ``margin`` below the reference on at
    least ``min_rows`` labelled predictions), or None."""
    if roc_auc is None or reference_auc is None or rows < min_rows:
        return None
    if roc_auc < reference_auc - margin:
        return (
            f"realized ROC AUC {roc_auc:.4f} on {rows} labelled predictions is more than "
            f"{margin:g} below the champion's {reference_auc:.4f}"
        )
    return None


def drift_alerts(report: DriftReport) -> list[str]:
    """The report's major findings, each an alert: univariate drift, the domain classifier
    (multivariate drift) and the data-quality checks."""
    alerts = []
    if major := report.names_with("major"):
        alerts.append(f"major drift in {', '.join(major)}")
    verdict = report.multivariate
    if verdict is not None and verdict.severity == "major":
        named = f" (most: {', '.join(verdict.top_features)})" if verdict.top_features else ""
        auroc = f", AUROC {verdict.auroc:.3f}" if verdict.auroc is not None else ""
        alerts.append(f"major multivariate drift{auroc}{named}")
    if broken := report.quality.names_with("major"):
        alerts.append(f"major data-quality findings in {', '.join(broken)}")
    return alerts


def decide_retraining(
    report: DriftReport,
    *,
    now: datetime,
    last_retrained: datetime | None,
    cooldown: timedelta,
    harm: HarmSignals | None = None,
    retrain_on_drift: bool = False,
) -> tuple[Action, list[str], Signal, list[str]]:
    """Whether to retrain now, why, which signal decided, and the alert-only findings
    (pure: no I/O)."""
    harm = harm or HarmSignals()
    alerts = drift_alerts(report)
    signal: Signal = "none"
    reasons: list[str] = []
    refused = (
        [
            f"estimated performance not used: out of support ({harm.unsupported}); the "
            "data-quality findings stand for this window"
        ]
        if harm.unsupported and not harm.estimated
        else []
    )
    if harm.estimated:
        signal, reasons = "estimated_performance", [harm.estimated]
    elif harm.realized:
        signal, reasons = "realized_performance", [harm.realized, *refused]
    elif alerts and retrain_on_drift:
        signal, reasons = "drift", [*alerts, *refused]
    if signal == "none":
        if alerts:
            return (
                "skip",
                [
                    *alerts,
                    *refused,
                    "drift alone is an alert, not harm: no retraining "
                    "(CHURN_MONITORING_RETRAIN_ON_DRIFT=true retrains on it)",
                ],
                signal,
                alerts,
            )
        return (
            "skip",
            [*refused, f"no harm and no major drift (overall severity {report.severity})"],
            signal,
            [],
        )
    if last_retrained is not None and now < last_retrained + cooldown:
        return (
            "skip",
            [
                *reasons,
                f"cooldown: last retraining {last_retrained.isoformat(timespec='seconds')}, "
                f"next allowed from {(last_retrained + cooldown).isoformat(timespec='seconds')}",
            ],
            signal,
            alerts,
        )
    return "retrain", reasons, signal, alerts


def trigger_retraining(
    report: DriftReport,
    *,
    train: Callable[[], Any],
    decisions_path: Path,
    cooldown: timedelta,
    now: datetime,
    report_path: Path | None = None,
    lock: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    harm: HarmSignals | None = None,
    retrain_on_drift: bool = False,
) -> RetrainDecision:
    """Decide, retrain through ``train`` if warranted, and log the decision.

    The decision and a ``started`` line are written under ``lock`` before training, so of
    several overlapping runs exactly one trains and the others see it in the cooldown.

    Args:
        report: The drift report the decision is based on.
        train: Runs the training pipeline and returns its ``TrainingResult`` (injected so
            the pipeline, its gate and its registry stay the only path to a new model).
        decisions_path: JSON-lines log; read for the cooldown, appended to.
        cooldown: Minimum time between two retrainings that went through.
        now: The decision time (timezone-aware).
        report_path: The drift report the decision refers to, for the log.
        lock: The cross-process lock of the decision (default: a file lock beside the
            log; ``churn drift`` passes the model's champion lock).
        harm: The performance signals (estimated, realized) of this run.
        retrain_on_drift: Whether major drift alone retrains too.
    """
    hold = lock or (lambda: file_lock(decisions_path.with_name(decisions_path.name + ".lock")))
    with hold():
        problems: list[str] = []
        last = last_retraining(read_decisions(decisions_path, problems=problems))
        action, reasons, signal, alerts = decide_retraining(
            report,
            now=now,
            last_retrained=last,
            cooldown=cooldown,
            harm=harm,
            retrain_on_drift=retrain_on_drift,
        )
        decision = RetrainDecision(
            decided_at=now.isoformat(),
            action=action,
            reasons=reasons,
            severity=report.severity,
            major_features=report.names_with("major"),
            signal=signal,
            alerts=alerts,
            performance=dict(harm.figures) if harm else {},
            report=str(report_path) if report_path else None,
            log_problems=problems,
        )
        if action == "retrain":
            decision.outcome = STARTED
        append_decision(decisions_path, decision)
    if action != "retrain":
        return decision
    try:
        result = train()
    except Exception as error:  # recorded, then turned into the caller's exit code
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
    with hold():
        append_decision(decisions_path, decision)
    return decision
