"""Drift metrics for Prometheus: per-feature PSI, test statistic, p-value and severity, and
the alert signals beside them (the domain classifier's AUROC, the data-quality checks).

Pushed to a Pushgateway when ``CHURN_MONITORING_PUSHGATEWAY_URL`` is set, otherwise written
in the node-exporter textfile-collector format (``drift.prom``). The reference design's
``model.drift.psi.<feature>`` becomes ``churn_drift_psi{feature="<feature>"}``: Prometheus
names cannot hold dots, and a label keeps one series per feature under one name.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from monitoring.estimation import METRICS, PerformanceEstimate
from monitoring.settings import MonitoringSettings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from monitoring.comparison import DriftReport
    from monitoring.estimate import Reference

TEXTFILE_NAME = "drift.prom"


def build_registry(report: DriftReport) -> CollectorRegistry:
    """A registry holding the drift gauges of one report."""
    from prometheus_client import CollectorRegistry, Gauge

    from monitoring.severity import SEVERITY_RANK

    registry = CollectorRegistry()
    labels = ["feature", "role"]
    psi = Gauge("churn_drift_psi", "Population stability index", labels, registry=registry)
    statistic = Gauge(
        "churn_drift_statistic",
        "KS statistic or chi-square statistic (see the test label)",
        [*labels, "test"],
        registry=registry,
    )
    p_value = Gauge("churn_drift_p_value", "Raw p-value of the test", labels, registry=registry)
    severity = Gauge(
        "churn_drift_severity",
        "Drift severity: 0 none, 1 minor, 2 major",
        labels,
        registry=registry,
    )
    overall = Gauge(
        "churn_drift_overall_severity",
        "Worst feature severity of the run: 0 none, 1 minor, 2 major",
        registry=registry,
    )
    finished = Gauge(
        "churn_drift_last_run_timestamp_seconds", "When the drift job ran", registry=registry
    )
    for result in [*report.features, *([report.score] if report.score else [])]:
        names = {"feature": result.feature, "role": result.role}
        if result.psi is not None:
            psi.labels(**names).set(result.psi)
        if result.statistic is not None and result.test is not None:
            statistic.labels(**names, test=result.test).set(result.statistic)
        if result.p_value is not None:
            p_value.labels(**names).set(result.p_value)
        severity.labels(**names).set(SEVERITY_RANK[result.severity])
    overall.set(SEVERITY_RANK[report.severity])
    _add_alert_signals(report, registry)
    finished.set(time.time())
    return registry


def _add_alert_signals(report: DriftReport, registry: CollectorRegistry) -> None:
    """The domain classifier's and the data-quality checks' gauges."""
    from prometheus_client import Gauge

    from monitoring.severity import SEVERITY_RANK

    auroc = Gauge(
        "churn_drift_multivariate_auroc",
        "Domain classifier's cross-validated AUROC, reference vs current rows (0.5: "
        "inseparable); bound estimate, low or high (95% interval)",
        ["bound"],
        registry=registry,
    )
    multivariate_severity = Gauge(
        "churn_drift_multivariate_severity",
        "Multivariate drift severity: 0 none (or not measured), 1 minor, 2 major",
        registry=registry,
    )
    importance = Gauge(
        "churn_drift_multivariate_importance",
        "Drop of the domain classifier's held-out AUROC when the feature is permuted",
        ["feature"],
        registry=registry,
    )
    null_rate = Gauge(
        "churn_drift_null_rate",
        "Share of missing values (null, NaN, infinite) of a feature; window reference or current",
        ["feature", "window"],
        registry=registry,
    )
    outside = Gauge(
        "churn_drift_outside_reference_share",
        "Share of current values outside the reference's range (check out_of_range) or in "
        "categories it never had (check unseen_categories)",
        ["feature", "check"],
        registry=registry,
    )
    quality_severity = Gauge(
        "churn_drift_quality_severity",
        "Data-quality severity of a feature: 0 none, 1 minor, 2 major",
        ["feature"],
        registry=registry,
    )
    quality_overall = Gauge(
        "churn_drift_quality_overall_severity",
        "Worst data-quality severity of the run: 0 none, 1 minor, 2 major",
        registry=registry,
    )
    verdict = report.multivariate
    if verdict is not None and verdict.status == "ok":
        for bound, value in (
            ("estimate", verdict.auroc),
            ("low", verdict.low),
            ("high", verdict.high),
        ):
            if value is not None:
                auroc.labels(bound=bound).set(value)
        for item in verdict.separation:
            importance.labels(feature=item.feature).set(item.importance)
    multivariate_severity.set(SEVERITY_RANK[verdict.severity if verdict else "none"])
    quality = report.quality
    for check in quality.features:
        null_rate.labels(feature=check.feature, window="reference").set(check.reference_null_rate)
        null_rate.labels(feature=check.feature, window="current").set(check.current_null_rate)
        coverage = check.coverage
        if coverage is not None:
            kind = "out_of_range" if coverage.low is not None else "unseen_categories"
            outside.labels(feature=check.feature, check=kind).set(coverage.share)
        quality_severity.labels(feature=check.feature).set(SEVERITY_RANK[check.severity])
    quality_overall.set(SEVERITY_RANK[quality.severity])


def publish_metrics(
    report: DriftReport,
    settings: MonitoringSettings,
    out_dir: Path | None,
    *,
    extend: Callable[[CollectorRegistry], None] | None = None,
) -> str | None:
    """Push the gauges to the Pushgateway, or write them as a textfile into ``out_dir``.

    An unreachable Pushgateway does not hide the drift result: the metrics then go to the
    textfile (with a warning on stderr) and the run goes on.

    Returns:
        Where the metrics went (URL or file path), or None when neither is configured.
    """
    registry = build_registry(report)
    if extend is not None:  # more gauges of the same run (the estimated performance)
        extend(registry)
    if settings.pushgateway_url:
        from prometheus_client import push_to_gateway

        try:
            push_to_gateway(
                settings.pushgateway_url, job=settings.pushgateway_job, registry=registry
            )
            return settings.pushgateway_url
        except OSError as error:  # URLError and connection errors
            print(
                f"warning: could not push metrics to {settings.pushgateway_url}: {error}; "
                "writing the textfile instead",
                file=sys.stderr,
            )
    if out_dir is None:
        return None
    from prometheus_client import write_to_textfile

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / TEXTFILE_NAME
    write_to_textfile(str(path), registry)
    return str(path)


def add_estimate_gauges(
    registry: CollectorRegistry,
    estimate: PerformanceEstimate,
    reference: Reference | None,
    *,
    harm: str | None,
    prefix: str = "churn_estimate",
) -> None:
    """Gauges of one estimate: ``<prefix>_performance{metric, bound}`` (estimate, low,
    high; none when no figure is claimed), its rows, whether they were enough, whether the
    window was out of the training support and each feature's out-of-range share, the
    champion's reference ROC AUC and whether the estimate shows harm
    (:func:`monitoring.retrain.estimated_harm`)."""
    from prometheus_client import Gauge

    figure = Gauge(
        f"{prefix}_performance",
        "Performance estimated without labels (CBPE): bound estimate, low or high",
        ["metric", "bound"],
        registry=registry,
    )
    for name in METRICS:
        interval = estimate.figure(name)
        if interval is not None:
            for bound in ("estimate", "low", "high"):
                figure.labels(metric=name, bound=bound).set(getattr(interval, bound))
    Gauge(f"{prefix}_rows", "Predictions in the estimated window", registry=registry).set(
        estimate.rows
    )
    Gauge(
        f"{prefix}_sufficient",
        "1 when the window held enough predictions for a figure, else 0",
        registry=registry,
    ).set(0 if estimate.status == "insufficient_data" else 1)
    Gauge(
        f"{prefix}_out_of_support",
        "1 when rows outside a feature's training range exceeded the limit: no figure "
        "claimed (the model extrapolates); 0 when inside or not checked",
        registry=registry,
    ).set(1 if estimate.status == "out_of_support" else 0)
    if estimate.out_of_range is not None:
        share = Gauge(
            f"{prefix}_out_of_range_share",
            "Share of the window's rows outside the feature's training [min, max]",
            ["feature"],
            registry=registry,
        )
        for name, value in estimate.out_of_range.items():
            share.labels(feature=name).set(value)
    Gauge(
        f"{prefix}_harm",
        "1 when the estimated ROC AUC fell more than the margin below the champion's, "
        "its interval below it too",
        registry=registry,
    ).set(1 if harm else 0)
    if reference is not None and reference.roc_auc is not None:
        Gauge(
            f"{prefix}_reference_roc_auc",
            "The champion's test ROC AUC at training, the estimate is held to",
            registry=registry,
        ).set(reference.roc_auc)
    Gauge(f"{prefix}_last_run_timestamp_seconds", "When the estimate ran", registry=registry).set(
        time.time()
    )


def build_estimate_registry(
    estimate: PerformanceEstimate, reference: Reference | None, *, harm: str | None
) -> CollectorRegistry:
    """A registry holding the gauges of one estimate (:func:`add_estimate_gauges`)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    add_estimate_gauges(registry, estimate, reference, harm=harm)
    return registry
