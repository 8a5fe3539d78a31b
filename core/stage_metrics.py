"""Operational metrics of the batch stages, for Prometheus.

Every stage command ends with one call here. Each call builds a fresh registry (never the
process-global one, as in ``serving/metrics.py``) holding that run's gauges, then pushes it
to a Pushgateway when ``CHURN_METRICS_PUSHGATEWAY_URL`` is set, else writes it as a
textfile (``<stage>[_<key>].prom``) into ``CHURN_METRICS_TEXTFILE_DIR`` for the node
exporter's textfile collector. One file (or Pushgateway group) per stage and key, so the
hourly run of one feature view never erases another view's last success.

Metrics never fail a stage: a write or push that fails prints a warning and the command
keeps its own exit code.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Gauge

_PROJECT_ROOT = Path(__file__).resolve().parent.parent
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class MetricsSettings(BaseSettings):
    """Where stage metrics go (prefix ``CHURN_METRICS_``)."""

    model_config = SettingsConfigDict(env_prefix="CHURN_METRICS_", extra="ignore")

    data_dir: Path = Field(
        default=_PROJECT_ROOT / "data",
        validation_alias=AliasChoices("CHURN_DATA_DIR"),
        description="Data root; the textfile folder defaults to <data_dir>/metrics.",
    )
    textfile_dir: Path | None = Field(
        default=None, description="Textfile-collector folder (default <data_dir>/metrics)."
    )
    pushgateway_url: str | None = Field(
        default=None, description="Push here instead of writing textfiles (host:port or URL)."
    )
    pushgateway_job: str = "churn"

    def resolved_textfile_dir(self) -> Path:
        """The textfile folder actually used."""
        return self.textfile_dir or self.data_dir / "metrics"


def publish_stage_metrics(
    stage: str,
    registry: CollectorRegistry,
    *,
    key: Mapping[str, str] | None = None,
    settings: MetricsSettings | None = None,
) -> str | None:
    """Push ``registry`` to the Pushgateway, or write it as ``<stage>[_<key>].prom``.

    Args:
        stage: Stage name (``materialize``, ``skew``, ``training``...).
        registry: The run's gauges.
        key: What else identifies the series' group (e.g. ``{"view": "user_features"}``):
            part of the Pushgateway grouping key and of the file name.
        settings: Read from the environment when omitted.

    Returns:
        Where the metrics went, or None when publishing failed (a warning was printed).
    """
    settings = settings or MetricsSettings()
    key = dict(key or {})
    if settings.pushgateway_url:
        from prometheus_client import push_to_gateway

        try:
            push_to_gateway(
                settings.pushgateway_url,
                job=settings.pushgateway_job,
                grouping_key={"stage": stage, **key},
                registry=registry,
            )
            return settings.pushgateway_url
        except OSError as error:  # URLError and connection errors
            _warn(f"could not push {stage} metrics to {settings.pushgateway_url}: {error}")
    from prometheus_client import write_to_textfile

    name = "_".join([stage, *(_UNSAFE.sub("_", value) for value in key.values())])
    path = settings.resolved_textfile_dir() / f"{name}.prom"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(path), registry)  # a temporary file renamed into place
    except OSError as error:
        _warn(f"could not write {stage} metrics to {path}: {error}")
        return None
    return str(path)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _gauge(
    registry: CollectorRegistry, name: str, text: str, labels: list[str] | None = None
) -> Gauge:
    from prometheus_client import Gauge

    return Gauge(name, text, labels or [], registry=registry)


def _registry() -> CollectorRegistry:
    from prometheus_client import CollectorRegistry

    return CollectorRegistry()


@dataclass(frozen=True)
class ViewRun:
    """One feature view's successful materialization."""

    view: str
    written: int
    rows_in_range: int
    ttl_seconds: float
    end: float  # epoch seconds: end of the materialized range


def record_materialization(runs: list[ViewRun], *, now: float | None = None) -> list[str]:
    """Publish, per view, the time of its last successful materialization and its rows."""
    finished = time.time() if now is None else now
    targets = []
    for run in runs:
        registry = _registry()
        labels = ["view"]
        _gauge(
            registry,
            "churn_materialize_last_success_timestamp_seconds",
            "When the view's last successful materialization finished",
            labels,
        ).labels(run.view).set(finished)
        _gauge(
            registry,
            "churn_materialize_range_end_timestamp_seconds",
            "End of the event-time range the view's last run materialized",
            labels,
        ).labels(run.view).set(run.end)
        _gauge(
            registry,
            "churn_materialize_rows_written",
            "Entities written to the online store by the view's last run",
            labels,
        ).labels(run.view).set(run.written)
        _gauge(
            registry,
            "churn_materialize_rows_in_range",
            "Offline rows inside the view's last materialized range",
            labels,
        ).labels(run.view).set(run.rows_in_range)
        _gauge(
            registry,
            "churn_feature_view_ttl_seconds",
            "The feature view's ttl: the oldest online value it allows",
            labels,
        ).labels(run.view).set(run.ttl_seconds)
        target = publish_stage_metrics("materialize", registry, key={"view": run.view})
        if target:
            targets.append(target)
    return targets


def record_skew_check(*, service: str, entities: int, mismatches: int) -> str | None:
    """Publish the skew check's mismatch count."""
    registry = _registry()
    _gauge(
        registry,
        "churn_skew_mismatches",
        "Feature values that differ online and offline in the last skew check",
        ["feature_service"],
    ).labels(service).set(mismatches)
    _gauge(
        registry,
        "churn_skew_sampled_entities",
        "Entities sampled by the last skew check",
        ["feature_service"],
    ).labels(service).set(entities)
    _gauge(registry, "churn_skew_last_run_timestamp_seconds", "When the skew check last ran").set(
        time.time()
    )
    return publish_stage_metrics("skew", registry, key={"feature_service": service})


# Outcomes a stage reports as ``churn_<stage>_last_outcome{outcome=...} 1`` (the others 0),
# so a dashboard can show the state and an alert can match one outcome.
DRIFT_OUTCOMES = ("no_major_drift", "major_drift", "failed")
TRAINING_OUTCOMES = ("registered", "promoted", "below_gate", "bad_input", "failed")


def _outcome(registry: CollectorRegistry, name: str, outcomes: tuple[str, ...], value: str) -> None:
    gauge = _gauge(registry, name, "1 for the outcome of the last run, else 0", ["outcome"])
    for outcome in outcomes:
        gauge.labels(outcome).set(1 if outcome == value else 0)


def record_drift_outcome(registry: CollectorRegistry, *, outcome: str) -> str | None:
    """Add the run's outcome to the drift gauges and publish them to the stage target."""
    _outcome(registry, "churn_drift_last_outcome", DRIFT_OUTCOMES, outcome)
    return publish_stage_metrics("drift", registry)


def record_training(*, outcome: str, test_auc: float | None, min_auc: float) -> str | None:
    """Publish the last training's outcome, test AUC and gate."""
    registry = _registry()
    _outcome(registry, "churn_training_last_outcome", TRAINING_OUTCOMES, outcome)
    if test_auc is not None:
        _gauge(registry, "churn_training_test_roc_auc", "Test ROC AUC of the last training").set(
            test_auc
        )
    _gauge(registry, "churn_training_min_auc", "The gate the last training had to pass").set(
        min_auc
    )
    _gauge(
        registry, "churn_training_last_run_timestamp_seconds", "When the last training ended"
    ).set(time.time())
    return publish_stage_metrics("training", registry)


def record_champion(*, model_name: str, version: str, created: float) -> str | None:
    """Publish which version is champion and since when it exists."""
    registry = _registry()
    _gauge(
        registry,
        "churn_champion_version",
        "Registry version behind the champion alias",
        ["model_name"],
    ).labels(model_name).set(float(version))
    _gauge(
        registry,
        "churn_champion_created_timestamp_seconds",
        "When the champion version was registered (its age is time() minus this)",
        ["model_name"],
    ).labels(model_name).set(created)
    return publish_stage_metrics("champion", registry, key={"model_name": model_name})


def record_evaluation(*, roc_auc: float | None, matched: int, min_auc: float | None) -> str | None:
    """Publish the AUC of served predictions on landed labels, and the gate it is held to."""
    registry = _registry()
    if roc_auc is not None:
        _gauge(
            registry,
            "churn_evaluate_roc_auc",
            "ROC AUC of served predictions on the labels that have landed",
        ).set(roc_auc)
    if min_auc is not None:
        _gauge(registry, "churn_evaluate_min_auc", "The AUC evaluate holds the model to").set(
            min_auc
        )
    _gauge(
        registry,
        "churn_evaluate_matched_predictions",
        "Predictions joined to a landed label in the last evaluation",
    ).set(matched)
    _gauge(registry, "churn_evaluate_last_run_timestamp_seconds", "When evaluate last ran").set(
        time.time()
    )
    return publish_stage_metrics("evaluate", registry)


def record_champion_from_registry(
    model_name: str, *, tracking_uri: str, alias: str = "champion"
) -> str | None:
    """Look the alias up in the registry at ``tracking_uri`` and publish the champion gauges.

    A missing alias or an unreachable registry publishes nothing (with a warning for the
    latter): the champion-age alert then sees the previous values.
    """
    from mlflow.exceptions import MlflowException

    from core.models import mlflow_client

    try:
        version = mlflow_client(tracking_uri).get_model_version_by_alias(model_name, alias)
    except MlflowException as error:
        if "RESOURCE_DOES_NOT_EXIST" not in str(error.error_code):
            _warn(f"could not read the {alias} of {model_name}: {error}")
        return None
    return record_champion(
        model_name=model_name,
        version=str(version.version),
        created=float(version.creation_timestamp) / 1000.0,
    )
