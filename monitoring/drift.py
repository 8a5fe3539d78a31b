"""Stage: ``churn drift``, compare what the model was trained on with what it sees now.

:func:`run_drift` takes a :class:`DriftRequest` and returns a :class:`DriftOutcome`: the
report (written as drift.json and drift.html, its gauges published), and the retraining
decision when one was asked for.

The samples come from two Parquet files, or from the champion's lineage (its training
window rebuilt through its feature service) and the live data (the last window of offline
snapshots, or the serving prediction log). The offline windows are built by the
offline-compute backend of the profile (:mod:`core.compute`) and compared in this process
(exact) or, when ``CHURN_MONITORING_STATISTICS`` asks for it, from the backend's aggregates
(:func:`monitoring.comparison.compare_samples`). Beside the per-feature tests, a domain
classifier trained on a sample of each window, drawn where the rows are
(:mod:`monitoring.multivariate`), and the data-quality checks (:mod:`monitoring.quality`)
give the report its alert signals.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from core.compute import OfflineCompute, frame_statistics, offline_compute
from core.compute.statistics import FrameSample, Sample, StatisticsCompute
from core.errors import InputError, StaleDataError
from core.feast_store import feature_store_session
from core.locks import champion_lock_name, store_lock
from core.models import ModelRegistry
from core.settings import DataSettings, FeastSettings, MlflowSettings, ModelSettings
from core.stage_metrics import record_drift_outcome
from monitoring.comparison import DriftReport, compare_frames, compare_samples
from monitoring.metrics import build_registry, publish_metrics
from monitoring.multivariate import detect_domain_shift, not_run
from monitoring.performance import WindowPerformance, window_performance
from monitoring.report import write_reports
from monitoring.retrain import RetrainDecision, drift_alerts, trigger_retraining
from monitoring.settings import MonitoringSettings
from monitoring.snapshots import (
    SCORE_COLUMN,
    ChampionLineage,
    ChampionScorer,
    build_current_from_snapshots,
    build_reference,
    load_champion_lineage,
    read_prediction_log,
)
from monitoring.windows import read_sample
from training import TrainingConfig, TrainingResult, run_training

if TYPE_CHECKING:
    from feast import FeatureStore

Source = Literal["snapshots", "predictions"]
SOURCES: tuple[Source, ...] = ("snapshots", "predictions")
_AGGREGATES_ONLY = (
    "CHURN_MONITORING_STATISTICS=spark compares the offline windows of the spark profile: "
    "use --profile spark with --source snapshots and no --reference/--current"
)


@dataclass(frozen=True)
class DriftRequest:
    """What to compare, and what to do about major drift.

    Attributes:
        reference: Reference Parquet file or folder (default: the champion's training data).
        current: Current Parquet file or folder (default: the last ``window`` of ``source``).
        features: Columns to compare (default: the model's features, or every shared
            numeric or categorical column of two files).
        source: The current window from offline ``snapshots`` or the serving ``predictions``.
        window: Length of the current window (default ``settings.window_days``).
        until: End of the current window (default: the newest snapshot or prediction).
        out_dir: Folder of the reports (default ``<data_dir>/monitoring/reports/<UTC time>``).
        retrain: On major drift, retrain through the training gate (with the cooldown).
        trials: Tuning trials of a triggered retraining.
    """

    reference: Path | None = None
    current: Path | None = None
    features: tuple[str, ...] = ()
    source: Source = "snapshots"
    window: timedelta | None = None
    until: datetime | None = None
    out_dir: Path | None = None
    retrain: bool = False
    trials: int | None = None
    feast: FeastSettings = field(default_factory=FeastSettings)
    settings: MonitoringSettings = field(default_factory=MonitoringSettings)
    model: ModelSettings = field(default_factory=ModelSettings)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise InputError(f"source {self.source!r}: expected snapshots or predictions")


@dataclass
class DriftOutcome:
    """What a drift run produced."""

    report: DriftReport
    json_path: Path
    html_path: Path
    metrics_target: str | None
    decision: RetrainDecision | None = None
    performance: WindowPerformance | None = None

    @property
    def major(self) -> bool:
        """Whether some feature drifted majorly."""
        return self.report.severity == "major"

    @property
    def alerting(self) -> bool:
        """Whether any finding is major: univariate, multivariate or data quality."""
        return bool(drift_alerts(self.report))

    @property
    def harmful(self) -> bool:
        """Whether the window's estimated or realized performance shows harm."""
        return self.performance is not None and self.performance.harmful

    @property
    def retrain_failed(self) -> bool:
        """Whether a requested retraining crashed."""
        return self.decision is not None and self.decision.outcome == "error"

    @property
    def status(self) -> str:
        """The run's outcome for the stage metrics."""
        if self.retrain_failed:
            return "failed"
        return "major_drift" if self.major else "no_major_drift"  # harm: its own gauge


def check_freshness(newest: Any, *, now: datetime, max_lag_hours: float, what: str) -> None:
    """Refuse a window whose newest row is older than ``max_lag_hours`` (0: no check).

    Raises:
        StaleDataError: The data is stale: the live window is not live.
    """
    if max_lag_hours <= 0:
        return
    newest_time = newest.to_pydatetime() if hasattr(newest, "to_pydatetime") else newest
    lag = now - newest_time
    if lag > timedelta(hours=max_lag_hours):
        raise StaleDataError(
            f"stale data: the newest {what} is from {newest_time.isoformat()}, "
            f"{lag.total_seconds() / 3600:.1f} h ago (more than "
            f"CHURN_MONITORING_MAX_DATA_LAG_HOURS={max_lag_hours:g}); is ingest (or serving) "
            "running? Nothing was compared; pass --until to judge an older window"
        )


def run_drift(request: DriftRequest) -> DriftOutcome:
    """Compare the samples, write drift.json / drift.html, publish the metrics, and retrain
    on major drift when asked.

    Raises:
        InputError: Bad input or configuration (missing file, unknown feature, no champion).
        StaleDataError: The live window's newest row is older than the allowed lag.
    """
    settings = request.settings
    started = datetime.now(UTC)
    out_dir = request.out_dir or (
        DataSettings().data_dir / "monitoring" / "reports" / started.strftime("%Y%m%dT%H%M%SZ")
    )
    # What the backend staged for the comparison lives until the report is written.
    kept: dict[str, pd.DataFrame] = {}  # the current window as compared, for the estimate
    with ExitStack() as stack:
        if request.reference is not None and request.current is not None:
            report = _compare_files(request.reference, request.current, request, keep=kept)
            lineage = None
        else:
            report, lineage = _compare_with_champion(request, stack, keep=kept)
        performance = window_performance(kept.get("current"), lineage, request)
        json_path, html_path = write_reports(
            report,
            out_dir,
            extra={"estimated_performance": performance.to_dict()},
            sections=performance.render_html(),
        )
        metrics_target = publish_metrics(report, settings, out_dir, extend=performance.add_gauges)
    outcome = DriftOutcome(report, json_path, html_path, metrics_target, performance=performance)
    if request.retrain:
        outcome.decision = _retrain(outcome, request, lineage)
    # The stage's textfile carries the run's estimate too, as the report's own does.
    registry = build_registry(report)
    if performance is not None:
        performance.add_gauges(registry)
    record_drift_outcome(registry, outcome=outcome.status)
    return outcome


def _compare_files(
    reference: Path, current: Path, request: DriftRequest, *, keep: dict[str, pd.DataFrame]
) -> DriftReport:
    """Two Parquet samples, compared in this process (the current one kept in ``keep``)."""
    if request.settings.aggregates_required():
        raise InputError(_AGGREGATES_ONLY)
    frames = (read_sample(reference), read_sample(current))
    keep["current"] = frames[1]
    scored = all(SCORE_COLUMN in frame.columns for frame in frames)
    report = compare_frames(
        *frames,
        request.settings,
        features=list(request.features) or None,
        score_column=SCORE_COLUMN if scored else None,
        sources={"reference": {"file": str(reference)}, "current": {"file": str(current)}},
    )
    samples = FrameSample(frames[0]), FrameSample(frames[1])
    return with_domain_classifier(report, frame_statistics(), samples)


def _compare_with_champion(
    request: DriftRequest, stack: ExitStack, *, keep: dict[str, pd.DataFrame]
) -> tuple[DriftReport, ChampionLineage]:
    """Samples where at least one side comes from the champion's lineage or the live data
    (the current one kept in ``keep`` when it is read into this process)."""
    settings = request.settings
    registry = ModelRegistry.from_settings()
    lineage = load_champion_lineage(registry, request.model.name, request.model.alias)
    store = stack.enter_context(feature_store_session(request.feast))
    compute = offline_compute(store)
    # Aggregates where the rows are: for the two offline windows of a distributed backend.
    aggregable = request.reference is None and request.current is None
    aggregable = aggregable and request.source == "snapshots" and compute.distributed
    if settings.aggregates_required() and not aggregable:
        raise InputError(_AGGREGATES_ONLY)
    sources: dict[str, Any] = {"champion": lineage.describe()}
    if request.reference is not None:
        reference: Sample = FrameSample(read_sample(request.reference))
        sources["reference"] = {"file": str(request.reference)}
    else:
        reference = build_reference(compute, store, lineage, stack=stack)
        sources["reference"] = {"training_window": lineage.describe()["train_window"]}
    current = _current(request, compute, store, lineage, sources, stack)
    scored = _score(registry, compute, lineage, (reference, current), sources, stack)
    rows = reference.rows + current.rows
    aggregate = aggregable and settings.aggregates_for(rows)
    if aggregable:
        sources["statistics"] = (
            f"{compute.name} aggregates ({rows:,} rows; PSI exact, KS within the bound in "
            "each note)"
            if aggregate
            else f"in process ({rows:,} rows read from the cluster in bounded batches)"
        )
    reference, current = scored or (reference, current)
    options: dict[str, Any] = {
        "features": list(request.features or lineage.features),
        "score_column": SCORE_COLUMN if scored else None,
        "sources": sources,
    }
    if aggregate:
        report = compare_samples(compute, reference, current, settings, **options)
    else:
        frames = compute.to_pandas(reference), compute.to_pandas(current)
        keep["current"] = frames[1]
        report = compare_frames(*frames, settings, **options)
        reference, current = FrameSample(frames[0]), FrameSample(frames[1])  # here now
    return with_domain_classifier(report, compute, (reference, current)), lineage


def with_domain_classifier(
    report: DriftReport, compute: StatisticsCompute, samples: tuple[Sample, Sample]
) -> DriftReport:
    """The report with the domain classifier's verdict on the compared features
    (:mod:`monitoring.multivariate`), trained on a seeded sample of each window drawn by
    the backend that holds it."""
    settings = report.settings
    if not settings.multivariate:
        verdict = not_run("turned off (CHURN_MONITORING_MULTIVARIATE=false)")
        return replace(report, multivariate=verdict)
    features = [item.feature for item in report.features]
    reference, current = (
        compute.sample_rows(
            sample, features, rows=settings.multivariate_max_rows, seed=settings.multivariate_seed
        )
        for sample in samples
    )
    verdict = detect_domain_shift(reference, current, features, settings)
    return replace(report, multivariate=verdict)


def _current(
    request: DriftRequest,
    compute: OfflineCompute,
    store: FeatureStore,
    lineage: ChampionLineage,
    sources: dict[str, Any],
    stack: ExitStack,
) -> Sample:
    """The current sample: a file, the prediction log's window or the snapshots' window.

    Raises:
        StaleDataError: A live window (no ``until``) whose newest row is too old.
    """
    if request.current is not None:
        sources["current"] = {"file": str(request.current)}
        return FrameSample(read_sample(request.current))
    window = request.window or timedelta(days=request.settings.window_days)
    current: Sample
    if request.source == "predictions":
        predictions_dir = DataSettings().prediction_log_path
        log, (start, end) = read_prediction_log(predictions_dir, window=window, until=request.until)
        current = FrameSample(log)
        sources["current"] = {
            "prediction_log": str(predictions_dir),
            "window": [start.isoformat(), end.isoformat()],
            "model_versions": sorted(map(str, set(log.get("model_version", ())))),
        }
    else:
        current, (start, end) = build_current_from_snapshots(
            compute, store, lineage.feature_service, window=window, until=request.until, stack=stack
        )
        sources["current"] = {
            "offline_snapshots": lineage.feature_service,
            "window": [start.isoformat(), end.isoformat()],
        }
    if request.until is None:  # a live window must be live
        check_freshness(
            end,
            now=datetime.now(UTC),
            max_lag_hours=request.settings.max_data_lag_hours,
            what="prediction" if request.source == "predictions" else "offline snapshot",
        )
    return current


def _score(
    registry: ModelRegistry,
    compute: OfflineCompute,
    lineage: ChampionLineage,
    samples: tuple[Sample, Sample],
    sources: dict[str, Any],
    stack: ExitStack,
) -> tuple[Sample, Sample] | None:
    """Both samples with the champion's score, computed where they are (the current
    sample's logged score is kept), or None with the reason in ``sources``: score drift is
    a bonus."""
    reference, current = samples
    try:
        _, model = registry.load_version(lineage.model_name, version=lineage.version)
        scorer = ChampionScorer(model, lineage.features)
        reference = compute.add_scores(reference, scorer, column=SCORE_COLUMN, stack=stack)
        if SCORE_COLUMN not in current.columns:
            current = compute.add_scores(current, scorer, column=SCORE_COLUMN, stack=stack)
    except Exception as error:  # report why it is missing, compare the features anyway
        sources["score"] = f"not measured: {type(error).__name__}: {error}"
        return None
    return reference, current


def _retrain(
    outcome: DriftOutcome, request: DriftRequest, lineage: ChampionLineage | None
) -> RetrainDecision:
    """Run the trigger with the real training pipeline, under the model's champion lock."""
    feast = request.feast
    tracking_uri = MlflowSettings().resolved_tracking_uri()

    def train() -> TrainingResult:
        overrides: dict[str, Any] = {
            "model_name": request.model.name,
            "repo_path": feast.repo_path,
            "profile": feast.profile,
            "progress": False,
        }
        if lineage is not None:
            overrides["feature_service"] = lineage.feature_service
        if request.trials is not None:
            overrides["trials"] = request.trials
        result = run_training(TrainingConfig(**overrides))
        if result.run_id:  # say on the run why it exists
            client = ModelRegistry(tracking_uri).client
            client.set_tag(result.run_id, "trigger", "drift")
            client.set_tag(result.run_id, "drift.report", str(outcome.json_path))
            client.set_tag(
                result.run_id, "drift.major_features", ",".join(outcome.report.names_with("major"))
            )
        return result

    def lock() -> Any:
        # The champion lock of the model: overlapping drift jobs decide one at a time, and
        # the first records "started" before it trains.
        return store_lock(
            tracking_uri,
            champion_lock_name(request.model.name),
            fallback_dir=DataSettings().data_dir / "locks",
        )

    performance = outcome.performance
    return trigger_retraining(
        outcome.report,
        harm=performance.harm if performance is not None else None,
        retrain_on_drift=request.settings.retrain_on_drift,
        train=train,
        decisions_path=request.settings.resolved_decisions_path(),
        cooldown=timedelta(hours=request.settings.retrain_cooldown_hours),
        now=datetime.now(UTC),
        report_path=outcome.json_path,
        lock=lock,
    )
