"""Stage: ``churn drift``, compare what the model was trained on with what it sees now.

Exit codes (for schedulers): 0 no major drift (none or minor), 4 major drift found,
5 stale data (the newest snapshot or prediction is older than ``max_data_lag_hours``:
ingest or serving stopped, nothing compared), 2 bad input or configuration (missing file,
unknown feature, no champion), 1 any other failure, including a retraining
(``--retrain``) that crashed.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from cli.options import ProfileOption, profile_settings
from core.errors import StaleDataError as _StaleData
from core.exits import ExitCode
from core.settings import DataSettings, FeastSettings
from monitoring.settings import MonitoringSettings

if TYPE_CHECKING:
    import pandas as pd

    from monitoring.comparison import DriftReport
    from monitoring.retrain import RetrainDecision
    from monitoring.snapshots import ChampionLineage


class StaleDataError(_StaleData):
    """The newest data is older than the allowed lag: the live window is not live."""


def check_freshness(newest: Any, *, now: datetime, max_lag_hours: float, what: str) -> None:
    """Refuse a window whose newest row is older than ``max_lag_hours`` (0: no check).

    Raises:
        StaleDataError: The data is stale.
    """
    from datetime import timedelta

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


Source = Literal["snapshots", "predictions"]
_SPARK_ONLY = (
    "CHURN_MONITORING_STATISTICS=spark compares the offline windows of the spark profile: "
    "use --profile spark with --source snapshots and no --reference/--current"
)


@dataclass
class Samples:
    """The two samples to compare and where they came from."""

    reference: Any  # pandas frames, or Spark frames when ``on_spark``
    current: Any
    features: list[str] | None = None
    score_column: str | None = None
    sources: dict[str, Any] = field(default_factory=dict)
    lineage: ChampionLineage | None = None
    on_spark: bool = False  # compare from Spark aggregates (monitoring.spark_statistics)


@dataclass
class DriftOutcome:
    """What a drift run produced."""

    report: DriftReport
    json_path: Path
    html_path: Path
    metrics_target: str | None
    decision: RetrainDecision | None = None

    @property
    def exit_code(self) -> ExitCode:
        """4 on major drift, else 0; 1 when a requested retraining crashed."""
        if self.decision is not None and self.decision.outcome == "error":
            return ExitCode.FAILURE
        return ExitCode.FINDING if self.report.severity == "major" else ExitCode.OK


def read_sample(path: Path) -> pd.DataFrame:
    """A Parquet file or folder (partitioned dataset) as a frame.

    Raises:
        DriftInputError: Missing or unreadable.
    """
    import pandas as pd

    from monitoring.statistics import DriftInputError

    if not path.exists():
        raise DriftInputError(f"{path} does not exist")
    try:
        return pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for bad files
        raise DriftInputError(f"{path} is not readable Parquet: {error}") from error


def run_drift(samples: Samples, settings: MonitoringSettings, out_dir: Path) -> DriftOutcome:
    """Compare the samples, write drift.json / drift.html and publish the metrics."""
    from monitoring.comparison import compare_frames
    from monitoring.metrics import publish_metrics
    from monitoring.report import write_reports

    compare = compare_frames
    if samples.on_spark:
        from monitoring.spark_statistics import compare_frames_on_spark

        compare = compare_frames_on_spark  # type: ignore[assignment]
    report = compare(
        samples.reference,
        samples.current,
        settings,
        features=samples.features,
        score_column=samples.score_column,
        sources=samples.sources,
    )
    json_path, html_path = write_reports(report, out_dir)
    metrics_target = publish_metrics(report, settings, out_dir)
    return DriftOutcome(report, json_path, html_path, metrics_target)


def _file_samples(reference: Path, current: Path, settings: MonitoringSettings) -> Samples:
    """Two Parquet samples, compared in this process.

    Raises:
        DriftInputError: Spark aggregates were asked for (they compare offline windows).
    """
    from monitoring.statistics import DriftInputError

    if settings.statistics == "spark":
        raise DriftInputError(_SPARK_ONLY)
    samples = Samples(
        read_sample(reference),
        read_sample(current),
        sources={"reference": {"file": str(reference)}, "current": {"file": str(current)}},
    )
    if all("churn_probability" in f.columns for f in (samples.reference, samples.current)):
        samples.score_column = "churn_probability"
    return samples


def _champion_samples(
    *,
    reference_path: Path | None,
    current_path: Path | None,
    source: Source,
    window: str,
    until: datetime | None,
    settings: MonitoringSettings,
    feast: FeastSettings,
    stack: ExitStack,
) -> Samples:
    """Samples where at least one side comes from the champion's lineage or the live data.

    On the spark profile the offline windows are built on the cluster, and staged there
    until ``stack`` closes.
    """

    import mlflow

    from core.feast_store import open_feature_store
    from core.settings import MlflowSettings
    from monitoring.snapshots import (
        SCORE_COLUMN,
        build_current_from_snapshots,
        build_reference,
        load_champion_lineage,
        read_prediction_log,
        score_rows,
    )
    from monitoring.windows import parse_window

    span: timedelta = parse_window(window)
    mlflow.set_tracking_uri(MlflowSettings().prepare())
    client = mlflow.MlflowClient()
    lineage = load_champion_lineage(client, settings.model_name, settings.model_alias)
    store = open_feature_store(feast)
    from core.feast_trust import OnDemandSourceMismatch, check_on_demand_sources
    from monitoring.statistics import DriftInputError

    try:  # Feast executes the on-demand views' stored code: only the repo's
        check_on_demand_sources(store, feast.repo_path)
    except OnDemandSourceMismatch as error:
        raise DriftInputError(str(error)) from error
    sources: dict[str, Any] = {"champion": lineage.describe()}
    from core.compute import uses_spark

    on_cluster = uses_spark(store) and reference_path is current_path is None
    if on_cluster and source == "snapshots":
        return _samples_on_spark(
            store,
            lineage,
            window=span,
            until=until,
            settings=settings,
            sources=sources,
            stack=stack,
        )
    if settings.statistics == "spark":
        raise DriftInputError(_SPARK_ONLY)
    if reference_path is not None:
        reference = read_sample(reference_path)
        sources["reference"] = {"file": str(reference_path)}
    else:
        reference = build_reference(store, lineage)
        sources["reference"] = {"training_window": lineage.describe()["train_window"]}
    if current_path is not None:
        current = read_sample(current_path)
        sources["current"] = {"file": str(current_path)}
    elif source == "predictions":
        predictions_dir = DataSettings().prediction_log_path
        current, (start, end) = read_prediction_log(predictions_dir, window=span, until=until)
        sources["current"] = {
            "prediction_log": str(predictions_dir),
            "window": [start.isoformat(), end.isoformat()],
            "model_versions": sorted(map(str, set(current.get("model_version", ())))),
        }
    else:
        current, (start, end) = build_current_from_snapshots(
            store, lineage.feature_service, window=span, until=until
        )
        sources["current"] = {
            "offline_snapshots": lineage.feature_service,
            "window": [start.isoformat(), end.isoformat()],
        }
    if current_path is None and until is None:  # a live window must be live
        check_freshness(
            end,
            now=datetime.now(UTC),
            max_lag_hours=settings.max_data_lag_hours,
            what="prediction" if source == "predictions" else "offline snapshot",
        )
    features = lineage.features or None
    score_column = None
    try:
        from core.models import ModelRegistry

        registry = ModelRegistry(MlflowSettings().resolved_tracking_uri())
        _, model = registry.load_version(lineage.model_name, version=lineage.version)
        names = features or [c for c in reference.columns if c in current.columns]
        reference = reference.assign(**{SCORE_COLUMN: score_rows(model, reference, names)})
        if SCORE_COLUMN not in current.columns:
            current = current.assign(**{SCORE_COLUMN: score_rows(model, current, names)})
        score_column = SCORE_COLUMN
    except Exception as error:  # score drift is a bonus: report why it is missing
        sources["score"] = f"not measured: {type(error).__name__}: {error}"
    return Samples(reference, current, features, score_column, sources, lineage)


def _samples_on_spark(
    store: Any,
    lineage: ChampionLineage,
    *,
    window: timedelta,
    until: datetime | None,
    settings: MonitoringSettings,
    sources: dict[str, Any],
    stack: ExitStack,
) -> Samples:
    """Both offline windows joined and staged on the cluster; aggregated there when large.

    With ``statistics='auto'`` windows of at most ``spark_statistics_rows`` rows (together)
    are read into this process in bounded batches and compared exactly.
    """
    from core.settings import MlflowSettings
    from monitoring.snapshots import SCORE_COLUMN, score_rows
    from monitoring.spark_samples import current_on_spark, reference_on_spark, score_on_spark
    from monitoring.statistics import DriftInputError

    reference = reference_on_spark(store, lineage, stack=stack)
    sources["reference"] = {"training_window": lineage.describe()["train_window"]}
    current, (start, end) = current_on_spark(
        store, lineage.feature_service, window=window, until=until, stack=stack
    )
    sources["current"] = {
        "offline_snapshots": lineage.feature_service,
        "window": [start.isoformat(), end.isoformat()],
    }
    if until is None:  # a live window must be live
        check_freshness(
            end,
            now=datetime.now(UTC),
            max_lag_hours=settings.max_data_lag_hours,
            what="offline snapshot",
        )
    rows = reference.rows + current.rows
    aggregate = settings.statistics == "spark" or (
        settings.statistics == "auto" and rows > settings.spark_statistics_rows
    )
    sources["statistics"] = (
        f"spark aggregates ({rows:,} rows; PSI exact, KS within the bound in each note)"
        if aggregate
        else f"in process ({rows:,} rows read from the cluster in bounded batches)"
    )
    features = lineage.features or reference.features.names
    missing = [name for name in features if name not in reference.features.names]
    if missing:
        raise DriftInputError(
            f"the champion's feature(s) {', '.join(missing)} are not in its feature service "
            f"{lineage.feature_service}"
        )
    sides = (reference, current)
    frames: list[Any] = [side.frame if aggregate else side.to_pandas() for side in sides]
    score_column: str | None = SCORE_COLUMN
    try:  # score drift is a bonus: report why it is missing
        from core.models import ModelRegistry

        registry = ModelRegistry(MlflowSettings().resolved_tracking_uri())
        _, model = registry.load_version(lineage.model_name, version=lineage.version)
        if aggregate:
            frames = [score_on_spark(store, s, model, features, stack=stack).frame for s in sides]
        else:
            frames = [f.assign(**{SCORE_COLUMN: score_rows(model, f, features)}) for f in frames]
    except Exception as error:
        sources["score"] = f"not measured: {type(error).__name__}: {error}"
        score_column = None
    return Samples(
        frames[0], frames[1], features, score_column, sources, lineage, on_spark=aggregate
    )


def _retrain(
    outcome: DriftOutcome,
    *,
    settings: MonitoringSettings,
    lineage: ChampionLineage | None,
    feast: FeastSettings,
    trials: int | None,
) -> RetrainDecision:
    """Run the trigger with the real training pipeline."""
    from datetime import timedelta

    from monitoring.retrain import trigger_retraining

    def train() -> Any:
        from training import TrainingConfig, run_training

        overrides: dict[str, Any] = {
            "model_name": settings.model_name,
            "repo_path": feast.repo_path,
            "profile": feast.profile,
            "progress": False,
        }
        if lineage is not None:
            overrides["feature_service"] = lineage.feature_service
        if trials is not None:
            overrides["trials"] = trials
        result = run_training(TrainingConfig(**overrides))
        if result.run_id:  # say on the run why it exists (run_training set the URI)
            import mlflow

            client = mlflow.MlflowClient()
            client.set_tag(result.run_id, "trigger", "drift")
            client.set_tag(result.run_id, "drift.report", str(outcome.json_path))
            client.set_tag(
                result.run_id, "drift.major_features", ",".join(outcome.report.names_with("major"))
            )
        return result

    from core.locks import champion_lock_name, store_lock
    from core.settings import MlflowSettings

    uri = MlflowSettings().resolved_tracking_uri()

    def lock() -> Any:
        # The champion lock of the model: overlapping drift jobs decide one at a time, and
        # the first records "started" before it trains.
        return store_lock(
            uri,
            champion_lock_name(settings.model_name),
            fallback_dir=DataSettings().data_dir / "locks",
        )

    return trigger_retraining(
        outcome.report,
        train=train,
        decisions_path=settings.resolved_decisions_path(),
        cooldown=timedelta(hours=settings.retrain_cooldown_hours),
        now=datetime.now(UTC),
        report_path=outcome.json_path,
        lock=lock,
    )


def _print_outcome(outcome: DriftOutcome) -> None:
    report = outcome.report
    results = [*report.features, *([report.score] if report.score else [])]
    width = max(len(item.feature) for item in results)
    for item in results:
        psi = "   -  " if item.psi is None else f"{item.psi:6.3f}"
        p_value = "-" if item.p_value is None else f"{item.p_value:.2g}"
        why = "; ".join(item.reasons) or item.note or ""
        typer.echo(
            f"  {item.feature:<{width}}  {item.test or '-':<4}  PSI {psi}  p {p_value:<8}  "
            f"{item.severity:<5}  {why}"
        )
    summary = report.summary()
    typer.echo(
        f"drift: {report.severity} (major: {', '.join(summary['major']) or 'none'}; "
        f"minor: {', '.join(summary['minor']) or 'none'})"
    )
    typer.echo(f"report: {outcome.html_path}")
    typer.echo(f"json: {outcome.json_path}")
    if outcome.metrics_target:
        typer.echo(f"metrics: {outcome.metrics_target}")
    decision = outcome.decision
    if decision is not None:
        for problem in decision.log_problems:
            typer.echo(f"warning: decisions log: {problem}", err=True)
        typer.echo(f"retrain: {decision.action} ({'; '.join(decision.reasons)})")
        if decision.action == "retrain":
            training = decision.training
            if decision.outcome == "error":
                typer.echo(f"retrain: training failed: {decision.error}", err=True)
            else:
                typer.echo(
                    f"retrain: {decision.outcome}, test AUC {training.get('test_roc_auc')}, "
                    f"version {training.get('version')}, promoted {training.get('promoted')} "
                    f"({training.get('reason')})"
                )


def drift_command(
    reference: Annotated[
        Path | None,
        typer.Option(help="Reference Parquet file or folder (default: champion's training data)."),
    ] = None,
    current: Annotated[
        Path | None,
        typer.Option(help="Current Parquet file or folder (default: the last --window)."),
    ] = None,
    features: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated columns (default: the model's features, or all "
            "shared numeric/categorical columns of two files)."
        ),
    ] = None,
    source: Annotated[
        str,
        typer.Option(
            help="Current window from 'snapshots' (offline store) or 'predictions' (serving log)."
        ),
    ] = "snapshots",
    window: Annotated[
        str | None, typer.Option(help="Current window, e.g. 7d or 36h (default 7d).")
    ] = None,
    until: Annotated[
        datetime | None,
        typer.Option(help="End of the current window (default: newest snapshot/prediction)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for drift.json, drift.html, drift.prom "
            "(default <data_dir>/monitoring/reports/<UTC time>)."
        ),
    ] = None,
    retrain: Annotated[
        bool, typer.Option(help="On major drift, retrain through the gate (with cooldown).")
    ] = False,
    trials: Annotated[
        int | None, typer.Option(help="Tuning trials of a triggered retraining.")
    ] = None,
    profile: ProfileOption = None,
) -> None:
    """Compare training-time and current feature distributions (PSI, KS, chi-square).

    Exit code 0: no major drift; 4: major drift; 5: stale data; 2: bad input; 1: other
    failure.
    """
    from cli.errors import exit_on_error
    from monitoring.statistics import DriftInputError

    started = datetime.now(UTC)
    with exit_on_error(also_bad_input=(ValueError,)):
        if source not in ("snapshots", "predictions"):
            raise DriftInputError(f"--source {source!r}: expected snapshots or predictions")
        settings = MonitoringSettings()
        feast = profile_settings(profile)
        names = [name.strip() for name in features.split(",") if name.strip()] if features else None
        out_dir = out or (
            DataSettings().data_dir / "monitoring" / "reports" / started.strftime("%Y%m%dT%H%M%SZ")
        )
        # What the spark profile staged for the comparison lives until the report is written.
        with ExitStack() as stack:
            if reference is not None and current is not None:
                samples = _file_samples(reference, current, settings)
            else:
                samples = _champion_samples(
                    stack=stack,
                    reference_path=reference,
                    current_path=current,
                    source=source,  # type: ignore[arg-type]
                    window=window or f"{settings.window_days:g}d",
                    until=until,
                    settings=settings,
                    feast=feast,
                )
            if names:
                samples.features = names
            outcome = run_drift(samples, settings, out_dir)
        if retrain:
            outcome.decision = _retrain(
                outcome, settings=settings, lineage=samples.lineage, feast=feast, trials=trials
            )
    _print_outcome(outcome)
    _record_outcome(outcome)
    sys.stdout.flush()
    raise typer.Exit(outcome.exit_code)


def _record_outcome(outcome: DriftOutcome) -> None:
    """The drift gauges and the run's outcome in the stage-metrics target (core)."""
    from core.stage_metrics import record_drift_outcome
    from monitoring.metrics import build_registry

    names = {ExitCode.OK: "no_major_drift", ExitCode.FINDING: "major_drift"}
    record_drift_outcome(
        build_registry(outcome.report), outcome=names.get(outcome.exit_code, "failed")
    )
