"""The retraining trigger: on harm (or, when configured, major drift), never within the
cooldown, always logged with the signal that decided."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring.comparison import DriftReport, compare_frames
from monitoring.retrain import read_decisions, trigger_retraining
from monitoring.settings import MonitoringSettings

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`

NOW = datetime(2026, 11, 2, 6, tzinfo=UTC)
COOLDOWN = timedelta(hours=24)


@dataclass
class _Result:
    """What the trigger reads from a TrainingResult."""

    registered: bool
    run_id: str = "run-1"
    test_roc_auc: float = 0.81
    version: str | None = "2"
    promoted: bool = False
    reason: str = "registered as challenger"


class _Trainer:
    """Counts training calls and returns a fixed result (training itself is not under test
    here; tests/monitoring/test_drift_snapshots.py runs the real pipeline)."""

    def __init__(self, result: _Result | Exception) -> None:
        self.result = result
        self.calls = 0

    def __call__(self) -> _Result:
        self.calls += 1
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def _report(shift: float) -> DriftReport:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 1000), "y": rng.normal(0, 1, 1000)})
    current = pd.DataFrame({"x": rng.normal(shift, 1, 1000), "y": rng.normal(0, 1, 1000)})
    return compare_frames(reference, current, MonitoringSettings())


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "monitoring" / "decisions.jsonl"


def test_no_major_drift_does_not_retrain_but_is_logged(log_path: Path) -> None:
    trainer = _Trainer(_Result(registered=True))
    decision = trigger_retraining(
        _report(0.0),
        train=trainer,
        decisions_path=log_path,
        cooldown=COOLDOWN,
        retrain_on_drift=True,
        now=NOW,
    )
    assert trainer.calls == 0
    assert (decision.action, decision.outcome) == ("skip", "not_run")
    assert decision.reasons == ["no harm and no major drift (overall severity none)"]
    assert read_decisions(log_path)[0]["action"] == "skip"


def test_major_drift_retrains_then_cooldown_holds_then_expires(log_path: Path) -> None:
    trainer = _Trainer(_Result(registered=True))
    report = _report(1.0)

    first = trigger_retraining(
        report,
        train=trainer,
        decisions_path=log_path,
        cooldown=COOLDOWN,
        retrain_on_drift=True,
        now=NOW,
    )
    assert (first.action, first.outcome, trainer.calls) == ("retrain", "registered", 1)
    assert first.reasons == ["major drift in x"]
    assert first.training["version"] == "2" and first.training["promoted"] is False

    later = NOW + timedelta(hours=23)
    second = trigger_retraining(
        report,
        train=trainer,
        decisions_path=log_path,
        cooldown=COOLDOWN,
        retrain_on_drift=True,
        now=later,
    )
    assert (second.action, trainer.calls) == ("skip", 1)
    assert second.reasons[1] == (
        "cooldown: last retraining 2026-11-02T06:00:00+00:00, "
        "next allowed from 2026-11-03T06:00:00+00:00"
    )

    third = trigger_retraining(
        report,
        train=trainer,
        decisions_path=log_path,
        cooldown=COOLDOWN,
        retrain_on_drift=True,
        now=NOW + COOLDOWN,
    )
    assert (third.action, trainer.calls) == ("retrain", 2)
    logged = read_decisions(log_path)
    assert [item["action"] for item in logged] == ["retrain", "skip", "retrain"]
    assert [item["outcome"] for item in logged] == ["registered", "not_run", "registered"]
    # A retraining writes "started" before training, then its outcome (same decision_id).
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [item["outcome"] for item in lines] == [
        "started", "registered", "not_run", "started", "registered"
    ]  # fmt: skip
    assert logged[0]["major_features"] == ["x"] and logged[0]["severity"] == "major"


def test_a_model_below_the_gate_also_starts_the_cooldown(log_path: Path) -> None:
    trainer = _Trainer(_Result(registered=False, version=None, reason="below the gate"))
    report = _report(1.0)
    first = trigger_retraining(
        report,
        train=trainer,
        decisions_path=log_path,
        cooldown=COOLDOWN,
        retrain_on_drift=True,
        now=NOW,
    )
    assert first.outcome == "below_gate"
    trigger_retraining(
        report,
        train=trainer,
        decisions_path=log_path,
        cooldown=COOLDOWN,
        retrain_on_drift=True,
        now=NOW,
    )
    assert trainer.calls == 1


def test_a_crashed_training_is_logged_and_retried_next_run(log_path: Path) -> None:
    trainer = _Trainer(RuntimeError("offline store unreachable"))
    report = _report(1.0)
    first = trigger_retraining(
        report,
        train=trainer,
        decisions_path=log_path,
        cooldown=COOLDOWN,
        retrain_on_drift=True,
        now=NOW,
    )
    assert first.outcome == "error"
    assert first.error == "RuntimeError: offline store unreachable"
    trigger_retraining(
        report,
        train=trainer,
        decisions_path=log_path,
        cooldown=COOLDOWN,
        retrain_on_drift=True,
        now=NOW,
    )
    assert trainer.calls == 2  # no cooldown after a crash


def test_zero_cooldown_retrains_every_time(log_path: Path) -> None:
    trainer = _Trainer(_Result(registered=True))
    for _ in range(2):
        trigger_retraining(
            _report(1.0),
            train=trainer,
            decisions_path=log_path,
            cooldown=timedelta(0),
            now=NOW,
            retrain_on_drift=True,
        )
    assert trainer.calls == 2


def test_a_damaged_line_before_the_last_is_named(log_path: Path) -> None:
    log_path.parent.mkdir(parents=True)
    log_path.write_text('{"action": "skip"}\nnot json\n{"action": "skip"}\n')
    with pytest.raises(ValueError, match=r"decisions.jsonl:2: not a JSON decision"):
        trigger_retraining(
            _report(1.0), train=_Trainer(_Result(True)), decisions_path=log_path,
            cooldown=COOLDOWN, retrain_on_drift=True, now=NOW,
        )  # fmt: skip


def test_a_truncated_last_line_is_reported_and_the_log_stays_usable(log_path: Path) -> None:
    trainer = _Trainer(_Result(registered=True))
    first = trigger_retraining(
        _report(1.0),
        train=trainer,
        decisions_path=log_path,
        cooldown=COOLDOWN,
        retrain_on_drift=True,
        now=NOW,
    )
    # A crash (or a full disk) in the middle of the next append: half a line, no newline.
    whole = log_path.read_bytes()
    log_path.write_bytes(whole + b'{"action": "retrain", "decided_at": "2026-11-0')

    later = trigger_retraining(
        _report(1.0),
        train=trainer,
        decisions_path=log_path,
        cooldown=COOLDOWN,
        now=NOW + timedelta(hours=1),
    )

    assert first.outcome == "registered"
    assert (later.action, trainer.calls) == ("skip", 1)  # the cooldown still holds
    [problem] = later.log_problems
    assert "decisions.jsonl:3: damaged last line left out" in problem
    # The new decision starts on its own line; only the torn one is unreadable.
    problems: list[str] = []
    assert [d["action"] for d in read_decisions(log_path, problems=problems)] == [
        "retrain", "skip"
    ]  # fmt: skip
    assert problems == []
    assert log_path.with_name("decisions.jsonl.damaged").read_text() == (
        '{"action": "retrain", "decided_at": "2026-11-0\n'
    )


def _estimate(auc: float, *, half_width: float = 0.01, rows: int = 5000):
    from monitoring.estimation import Interval, PerformanceEstimate

    figure = Interval(estimate=auc, low=auc - half_width, high=auc + half_width)
    return PerformanceEstimate(
        rows=rows,
        status="ok",
        roc_auc=figure,
        pr_auc=figure,
        brier=figure,
        churn_rate=figure,
        confidence=0.95,
        min_rows=500,
    )


def test_estimated_harm_needs_the_margin_and_an_interval_clear_of_the_reference() -> None:
    from monitoring.estimation import PerformanceEstimate
    from monitoring.retrain import estimated_harm, realized_harm

    assert estimated_harm(_estimate(0.74), 0.80, margin=0.03) is not None
    assert estimated_harm(_estimate(0.78), 0.80, margin=0.03) is None  # within the margin
    # Below by the margin, but the interval reaches the reference: label noise may explain it.
    assert estimated_harm(_estimate(0.76, half_width=0.05), 0.80, margin=0.03) is None
    assert estimated_harm(_estimate(0.60), None, margin=0.03) is None  # no reference
    few = PerformanceEstimate(
        rows=7, status="insufficient_data", roc_auc=None, pr_auc=None, brier=None,
        churn_rate=None, confidence=0.95, min_rows=500,
    )  # fmt: skip
    assert estimated_harm(few, 0.80, margin=0.03) is None
    assert realized_harm(0.70, 600, 0.80, margin=0.03, min_rows=500) is not None
    assert realized_harm(0.70, 7, 0.80, margin=0.03, min_rows=500) is None  # too few


def test_harm_retrains_drift_alone_only_alerts_and_the_log_names_the_signal(
    log_path: Path,
) -> None:
    from monitoring.retrain import HarmSignals, estimated_harm

    trainer = _Trainer(_Result(registered=True))
    drifted = _report(1.0)
    alert = trigger_retraining(
        drifted, train=trainer, decisions_path=log_path, cooldown=COOLDOWN, now=NOW
    )
    assert (alert.action, alert.signal, trainer.calls) == ("skip", "none", 0)
    assert alert.alerts == ["major drift in x"]
    assert "drift alone is an alert, not harm" in alert.reasons[-1]

    harm = HarmSignals(estimated=estimated_harm(_estimate(0.72), 0.80, margin=0.03))
    retrained = trigger_retraining(
        _report(0.0), train=trainer, decisions_path=log_path, cooldown=COOLDOWN, now=NOW, harm=harm
    )
    assert (retrained.action, retrained.signal, trainer.calls) == (
        "retrain",
        "estimated_performance",
        1,
    )
    assert retrained.reasons[0].startswith("estimated ROC AUC 0.7200")
    realized = HarmSignals(realized="realized ROC AUC 0.70 ...")
    held = trigger_retraining(
        drifted, train=trainer, decisions_path=log_path, cooldown=COOLDOWN, now=NOW, harm=realized
    )
    assert (held.action, held.signal, trainer.calls) == ("skip", "realized_performance", 1)
    assert held.reasons[-1].startswith("cooldown")
    logged = read_decisions(log_path)
    assert [item["signal"] for item in logged] == [
        "none",
        "estimated_performance",
        "realized_performance",
    ]


def test_multivariate_drift_alone_is_an_alert_and_retrains_only_when_configured(
    log_path: Path,
) -> None:
    from dataclasses import replace

    from monitoring.multivariate import MultivariateDrift

    verdict = MultivariateDrift(status="ok", severity="major", auroc=0.91, top_features=("x", "y"))
    # No univariate test is major: the domain classifier's finding is the only one.
    report = replace(_report(0.0), multivariate=verdict)
    assert report.severity != "major"
    trainer = _Trainer(_Result(registered=True))
    alert = trigger_retraining(
        report, train=trainer, decisions_path=log_path, cooldown=COOLDOWN, now=NOW
    )
    assert (alert.action, alert.signal, trainer.calls) == ("skip", "none", 0)
    assert alert.alerts == ["major multivariate drift, AUROC 0.910 (most: x, y)"]
    configured = trigger_retraining(
        report,
        train=trainer,
        decisions_path=log_path,
        cooldown=COOLDOWN,
        now=NOW,
        retrain_on_drift=True,
    )
    assert (configured.action, configured.signal, trainer.calls) == ("retrain", "drift", 1)
    assert [item["signal"] for item in read_decisions(log_path)] == ["none", "drift"]


def test_an_estimate_out_of_support_decides_nothing_and_the_quality_alert_stands(
    log_path: Path,
) -> None:
    from monitoring.estimate import Reference, estimate_window
    from monitoring.retrain import HarmSignals, estimated_harm

    rng = np.random.default_rng(6)
    reference_rows = pd.DataFrame({"x": rng.normal(0, 1, 1000), "y": rng.normal(0, 1, 1000)})
    moved = pd.DataFrame({"x": rng.normal(4, 1, 1000), "y": rng.normal(0, 1, 1000)})
    report = compare_frames(reference_rows, moved, MonitoringSettings())
    # The probabilities' estimated ROC AUC (about 0.76) is far below the champion's 0.95:
    # harm, were the estimate claimed.
    probabilities = rng.beta(1.2, 4.0, size=1000)
    ranges = {name: (reference_rows[name].min(), reference_rows[name].max()) for name in "xy"}
    champion = Reference(model="m@champion", version="1", roc_auc=0.95, ranges=ranges)
    trainer = _Trainer(_Result(registered=True))

    def signals(frame: pd.DataFrame) -> HarmSignals:
        estimate = estimate_window(probabilities, MonitoringSettings(), champion, frame)
        return HarmSignals(
            estimated=estimated_harm(estimate, 0.95, margin=0.03),
            unsupported=estimate.note if estimate.status == "out_of_support" else None,
        )

    refused = trigger_retraining(
        report, train=trainer, decisions_path=log_path, cooldown=COOLDOWN, now=NOW,
        harm=signals(moved),
    )  # fmt: skip

    assert (refused.action, refused.signal, trainer.calls) == ("skip", "none", 0)
    assert "major data-quality findings in x" in refused.alerts
    assert any(
        reason.startswith("estimated performance not used: out of support (rows outside")
        and "x " in reason
        for reason in refused.reasons
    ), refused.reasons
    logged = read_decisions(log_path)[-1]
    assert logged["signal"] == "none" and "out of support" in " ".join(logged["reasons"])

    inside = trigger_retraining(
        _report(0.0), train=trainer, decisions_path=log_path, cooldown=COOLDOWN, now=NOW,
        harm=signals(reference_rows),
    )  # fmt: skip
    assert (inside.action, inside.signal, trainer.calls) == ("retrain", "estimated_performance", 1)
