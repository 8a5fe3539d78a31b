"""`churn drift` and `churn evaluate`: the operator's monitoring commands.

Exit codes (for schedulers, :mod:`core.exits`):

- ``churn drift``: 0 no major drift (none or minor) and no harm, 4 major drift found or
  harm (estimated or realized ROC AUC below the champion's by the margin), 5 stale data (the
  newest snapshot or prediction is older than ``CHURN_MONITORING_MAX_DATA_LAG_HOURS``:
  ingest or serving stopped, nothing compared), 2 bad input or configuration (missing
  file, unknown feature, no champion), 1 any other failure, including a retraining
  (``--retrain``) that crashed.
- ``churn estimate``: 0 estimated (or too few predictions to claim a figure), 4 estimated
  harm (the estimated ROC AUC's interval lies wholly more than the retraining margin below
  the champion's test ROC AUC), 2 bad input or nothing to estimate, 1 other failures.
- ``churn evaluate``: 0 evaluated, 4 ROC AUC below ``--min-auc`` (only when given), 2 bad
  input or nothing to evaluate (no prediction in the window, no label matched), 1 other
  failures.

The stage is imported inside each command, so ``churn --help`` loads none of it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.errors import exit_on_error
from cli.options import ProfileOption, profile_settings
from core.errors import InputError
from core.exits import ExitCode

if TYPE_CHECKING:
    from monitoring import DriftOutcome, EstimateOutcome, EvaluateOutcome


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
    from monitoring import DriftRequest, parse_window, run_drift

    with exit_on_error(also_bad_input=(ValueError,)):
        if source not in ("snapshots", "predictions"):
            raise InputError(f"--source {source!r}: expected snapshots or predictions")
        names = [name.strip() for name in features.split(",") if name.strip()] if features else []
        outcome = run_drift(
            DriftRequest(
                reference=reference,
                current=current,
                features=tuple(names),
                source=source,  # type: ignore[arg-type]  # checked above
                window=parse_window(window) if window else None,
                until=until,
                out_dir=out,
                retrain=retrain,
                trials=trials,
                feast=profile_settings(profile),
            )
        )
    _print_drift(outcome)
    sys.stdout.flush()
    if outcome.retrain_failed:
        raise typer.Exit(ExitCode.FAILURE)
    raise typer.Exit(ExitCode.FINDING if outcome.alerting or outcome.harmful else ExitCode.OK)


def _print_performance(outcome: DriftOutcome) -> None:
    performance = outcome.performance
    if performance is None:
        return
    estimate = performance.estimate
    auc = estimate.roc_auc if estimate else None
    if estimate is None:
        typer.echo(f"estimated performance: not measured ({performance.note})")
    elif auc is None:
        typer.echo(f"estimated performance: {estimate.status} ({estimate.note})")
    else:
        reference = performance.reference
        held = (
            f" vs champion's test ROC AUC {reference.roc_auc:.4f}"
            if reference is not None and reference.roc_auc is not None
            else ""
        )
        typer.echo(
            f"estimated ROC AUC {auc.estimate:.4f} ({auc.low:.4f} - {auc.high:.4f}, "
            f"{estimate.rows} predictions){held}"
        )
    if performance.realized.get("roc_auc") is not None:
        typer.echo(
            f"realized ROC AUC {performance.realized['roc_auc']:.4f} on "
            f"{performance.realized['rows']} labelled predictions"
        )
    for harm in (performance.harm.estimated, performance.harm.realized):
        if harm:
            typer.echo(f"harm: {harm}")


def _print_alert_signals(summary: dict[str, Any]) -> None:
    """The domain classifier's and the data-quality checks' verdicts, one line each."""
    verdict = summary["multivariate"]
    if verdict["status"] == "ok":
        auroc = verdict["auroc"]
        named = ", ".join(verdict["top_features"]) or "none"
        typer.echo(
            f"multivariate: {verdict['severity']} (domain classifier AUROC "
            f"{auroc['estimate']:.3f}, 95% {auroc['low']:.3f}-{auroc['high']:.3f}; "
            f"separating: {named})"
        )
    else:
        typer.echo(f"multivariate: {verdict['status']} ({verdict['note']})")
    quality = summary["quality"]
    typer.echo(
        f"quality: {quality['severity']} (major: {', '.join(quality['major']) or 'none'}; "
        f"minor: {', '.join(quality['minor']) or 'none'})"
    )


def _print_drift(outcome: DriftOutcome) -> None:
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
    _print_alert_signals(summary)
    score = str(report.sources.get("score", ""))
    if score.startswith("not measured"):  # a refused champion, say: never only in the json
        typer.echo(f"warning: score drift {score}", err=True)
    _print_performance(outcome)
    typer.echo(f"report: {outcome.html_path}")
    typer.echo(f"json: {outcome.json_path}")
    if outcome.metrics_target:
        typer.echo(f"metrics: {outcome.metrics_target}")
    decision = outcome.decision
    if decision is None:
        return
    for problem in decision.log_problems:
        typer.echo(f"warning: decisions log: {problem}", err=True)
    typer.echo(
        f"retrain: {decision.action}, signal {decision.signal} ({'; '.join(decision.reasons)})"
    )
    if decision.action != "retrain":
        return
    if decision.outcome == "error":
        typer.echo(f"retrain: training failed: {decision.error}", err=True)
        return
    training = decision.training
    typer.echo(
        f"retrain: {decision.outcome}, test AUC {training.get('test_roc_auc')}, "
        f"version {training.get('version')}, promoted {training.get('promoted')} "
        f"({training.get('reason')})"
    )


def evaluate_command(
    window: Annotated[str, typer.Option(help="Predictions of the last window, e.g. 7d.")] = "7d",
    until: Annotated[
        datetime | None,
        typer.Option(help="End of the window (default: the newest prediction)."),
    ] = None,
    max_label_age: Annotated[
        str, typer.Option(help="Oldest label (snapshot) a prediction may be matched to.")
    ] = "7d",
    labels: Annotated[
        str | None,
        typer.Option(
            help="Labels Parquet (default: the offline labels table); on the spark profile "
            "any location the cluster reads (s3a://...)."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Folder to write evaluation.json into.")] = None,
    min_auc: Annotated[
        float | None, typer.Option(help="Exit 4 when the ROC AUC is below this.")
    ] = None,
    profile: ProfileOption = None,
) -> None:
    """ROC AUC and calibration of served predictions whose labels have arrived.

    Exit code 0: evaluated; 4: ROC AUC below --min-auc; 2: nothing to evaluate; 1: failure.
    """
    from monitoring import EvaluateRequest, parse_window, run_evaluation

    with exit_on_error(also_bad_input=(ValueError,)):
        outcome = run_evaluation(
            EvaluateRequest(
                window=parse_window(window),
                until=until,
                max_label_age=parse_window(max_label_age),
                labels=labels,
                out_dir=out,
                min_auc=min_auc,
                feast=profile_settings(profile),
            )
        )
    _print_evaluation(outcome)
    raise typer.Exit(ExitCode.FINDING if outcome.below_min_auc else ExitCode.OK)


def _print_evaluation(outcome: EvaluateOutcome) -> None:
    evaluation = outcome.evaluation

    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    typer.echo(
        f"window {evaluation.window[0]} - {evaluation.window[1]}: {evaluation.predictions} "
        f"predictions, {evaluation.matched} with labels, {evaluation.unmatched} without"
    )
    if evaluation.status == "ok":
        typer.echo(
            f"ROC AUC {number(evaluation.roc_auc)}  Brier {number(evaluation.brier)}  log loss "
            f"{number(evaluation.log_loss)}  ECE {number(evaluation.expected_calibration_error)}"
            f"  churn rate {number(evaluation.base_rate)} vs mean prediction "
            f"{number(evaluation.mean_predicted)}"
        )
    else:
        typer.echo(f"insufficient data: {evaluation.note}")
    if evaluation.estimated:
        typer.echo("  realized beside estimated without labels (interval):")
        for name, row in evaluation.estimated.items():
            inside = {True: "inside", False: "OUTSIDE", None: ""}[row["inside"]]
            typer.echo(
                f"    {name:<10} realized {number(row['realized'])}  estimated "
                f"{row['estimate']:.4f} ({row['low']:.4f} - {row['high']:.4f}) {inside}"
            )
    for version, values in evaluation.by_version.items():
        figure = (
            f"ROC AUC {number(values['roc_auc'])}"
            if values.get("status", "ok") == "ok"
            else f"too few for a figure (minimum {evaluation.min_rows})"
        )
        typer.echo(
            f"  version {version}: {values['rows']} rows, {figure} "
            f"(training test AUC {number(values.get('training_test_roc_auc'))})"
        )
    if evaluation.champion:
        typer.echo(
            f"  champion: version {evaluation.champion['version']}, training test AUC "
            f"{number(evaluation.champion['training_test_roc_auc'])}"
        )
    if evaluation.reliability:
        typer.echo("  reliability (predicted -> observed):")
    for item in evaluation.reliability:
        if item.count:
            typer.echo(
                f"    [{item.low:.1f}, {item.high:.1f}) n={item.count:<6} "
                f"{number(item.mean_predicted)} -> {number(item.observed_rate)}"
            )
    if evaluation.note and evaluation.status == "ok":
        typer.echo(f"note: {evaluation.note}")
    if outcome.json_path is not None:
        typer.echo(f"json: {outcome.json_path}")


def estimate_command(
    window: Annotated[
        str, typer.Option(help="Predictions of the prediction log's last window, e.g. 7d.")
    ] = "7d",
    until: Annotated[
        datetime | None,
        typer.Option(help="End of the window (default: the newest prediction)."),
    ] = None,
    current: Annotated[
        Path | None,
        typer.Option(
            help="Parquet file or folder instead of the log: a churn_probability column, or "
            "the champion's feature columns (scored by the champion)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for estimate.json and estimate.html "
            "(default <data_dir>/monitoring/estimates/<UTC time>)."
        ),
    ] = None,
) -> None:
    """Estimate ROC AUC, PR AUC, Brier score and churn rate of a window before its labels.

    Exit code 0: estimated (or no figure claimed: status insufficient_data, too few
    predictions, or out_of_support, too many rows outside a feature's training range); 4: the
    estimated ROC AUC's whole interval lies more than CHURN_MONITORING_RETRAIN_AUC_MARGIN
    below the champion's test ROC AUC; 2: nothing to estimate; 1: failure.
    """
    from monitoring import EstimateRequest, parse_window, run_estimate

    with exit_on_error(also_bad_input=(ValueError,)):
        outcome = run_estimate(
            EstimateRequest(window=parse_window(window), until=until, current=current, out_dir=out)
        )
    _print_estimate(outcome)
    raise typer.Exit(ExitCode.FINDING if outcome.harmful else ExitCode.OK)


def _print_estimate(outcome: EstimateOutcome) -> None:
    estimate = outcome.estimate
    typer.echo(f"estimate: {estimate.rows} predictions, status {estimate.status}")
    if estimate.status == "ok":
        for name, label in (
            ("roc_auc", "ROC AUC"),
            ("pr_auc", "PR AUC"),
            ("brier", "Brier"),
            ("churn_rate", "churn rate"),
        ):
            interval = estimate.figure(name)
            if interval is not None:
                typer.echo(
                    f"  {label:<10} {interval.estimate:.4f}  "
                    f"({estimate.confidence:.0%} interval {interval.low:.4f} - {interval.high:.4f})"
                )
        if estimate.roc_auc_noise_sd is not None:
            typer.echo(
                f"  ROC AUC spread: label noise {estimate.roc_auc_noise_sd:.4f}, model "
                f"version's calibration term {estimate.calibration_sd:.4f} (SD)"
            )
    if estimate.status == "out_of_support":
        typer.echo(
            "  out of support: no figure claimed; the model extrapolates on these rows (see "
            "the data-quality findings of churn drift; labels decide: churn evaluate)"
        )
    elif estimate.out_of_range is None:
        typer.echo("  support: unknown (no model feature column in the window)")
    if estimate.note:
        typer.echo(f"note: {estimate.note}")
    reference = outcome.reference
    if reference is not None and reference.roc_auc is not None:
        typer.echo(
            f"reference: {reference.model} version {reference.version}, test ROC AUC "
            f"{reference.roc_auc:.4f}" + ("; estimated harm" if outcome.harmful else "")
        )
    typer.echo(f"json: {outcome.json_path}")
    typer.echo(f"report: {outcome.html_path}")
    if outcome.metrics_target:
        typer.echo(f"metrics: {outcome.metrics_target}")


COMMANDS: dict[str, Callable[..., None]] = {
    "drift": drift_command,
    "estimate": estimate_command,
    "evaluate": evaluate_command,
}
