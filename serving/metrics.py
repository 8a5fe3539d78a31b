"""Prometheus metrics of one app, on its own registry (never the process-global one).

With several workers (``churn serve --workers N``) every worker writes its values to files
in one shared folder (prometheus-client's multi-process mode) and ``/metrics``, whichever
worker answers, reports counters and histograms summed over the workers, the served model
versions of the live workers, and ``churn_serving_model_loaded`` as the minimum over them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

# Request latencies live around a millisecond; the buckets resolve that range.
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
_SCORE_BUCKETS = (*tuple(round(0.1 * i, 1) for i in range(1, 10)), 1.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServingMetrics:
    """The service's metrics; ``registry`` is what ``/metrics`` exposes.

    Args:
        multiprocess_dir: The folder shared by the workers of one ``churn serve`` (its
            metric files), or None for a single process.
    """

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        if multiprocess_dir is None:
            self.registry = CollectorRegistry(auto_describe=True)
            owned = self.registry
        else:
            # The metric objects write to the shared files; /metrics reads all of them.
            owned = CollectorRegistry()
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry, path=str(multiprocess_dir))
        self.requests = Counter(
            "churn_http_requests_total",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=owned,
        )
        self.latency = Histogram(
            "churn_http_request_duration_seconds",
            "HTTP request latency by route template, method and status code.",
            ["route", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=owned,
        )
        self.errors = Counter(
            "churn_prediction_errors_total",
            "Requests or batch items not answered with a prediction, by kind.",
            ["kind"],
            registry=owned,
        )
        self.missing_values = Counter(
            "churn_predictions_with_missing_values_total",
            "Predictions made with a missing feature, by the missing-value policy applied "
            "(model: taken as missing; fill: the training median).",
            ["policy"],
            registry=owned,
        )
        self.scores = Histogram(
            "churn_prediction_score",
            "Churn probabilities served.",
            buckets=_SCORE_BUCKETS,
            registry=owned,
        )
        self.micro_batch = Histogram(
            "churn_micro_batch_rows",
            "Rows scored together in one online lookup and one predict.",
            buckets=_BATCH_BUCKETS,
            registry=owned,
        )
        self._model: _ServedModelCollector | _ServedModelGauges
        if multiprocess_dir is None:
            collector = _ServedModelCollector()
            self.registry.register(collector)
            self._model = collector
        else:
            self._model = _ServedModelGauges(owned)
        self.backlog = Gauge(
            "churn_serving_backlog_rows",
            "Rows waiting to be scored (summed over workers).",
            multiprocess_mode="livesum",
            registry=owned,
        )
        self.reloads = Counter(
            "churn_model_reloads_total",
            "Model (re)load attempts by outcome (loaded, unchanged, refused, failed).",
            ["outcome"],
            registry=owned,
        )
        self.auth_rejections = Counter(
            "churn_auth_rejections_total",
            "Requests refused by bearer-token authentication, by reason (missing, expired, "
            "wrong_audience, bad_signature, unknown_key, insufficient_scope, ...).",
            ["reason"],
            registry=owned,
        )
        self.jwks_fetches = Counter(
            "churn_auth_jwks_fetches_total",
            "Fetches of the issuer's signing keys (JWKS) by outcome (ok, failed).",
            ["outcome"],
            registry=owned,
        )
        self.log_rows = Counter(
            "churn_prediction_log_rows_total",
            "Prediction-log rows by outcome (written; kept after a failed write).",
            ["outcome"],
            registry=owned,
        )

    def set_model(self, name: str, version: str) -> None:
        """Make ``version`` the only version reported as served (by this worker)."""
        self._model.serve(name, version)

    def close(self) -> None:
        """Take this worker out of the live-worker figures (multi-process mode)."""
        if self.multiprocess_dir is not None:
            mark_process_dead(os.getpid(), str(self.multiprocess_dir))


class _ServedModelCollector:
    """Reports the served version at scrape time.

    Derived from state rather than stored in a labelled gauge, so a swap never has to
    remove the old label set (which prometheus-client refuses in multi-process mode, and
    importing Feast's metrics module switches a process into that mode).
    """

    def __init__(self) -> None:
        self.served: tuple[str, str] | None = None

    def serve(self, name: str, version: str) -> None:
        """Report ``version`` from now on."""
        self.served = (name, version)

    def collect(self) -> Iterator[Metric]:
        served = self.served
        info = GaugeMetricFamily(
            "churn_serving_model_info",
            "1 for the model version being served.",
            labels=["model_name", "model_version"],
        )
        if served is not None:
            info.add_metric(list(served), 1)
        yield info
        yield GaugeMetricFamily(
            "churn_serving_model_loaded",
            "1 when a model is loaded, else 0.",
            value=0 if served is None else 1,
        )


class _ServedModelGauges:
    """The served version as gauges in the shared files (several workers).

    A label set cannot be removed from the files, so the version a worker stops serving is
    set to 0; live workers only (a stopped worker's files are left out).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._info = Gauge(
            "churn_serving_model_info",
            "1 for the model version being served.",
            ["model_name", "model_version"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self._loaded = Gauge(
            "churn_serving_model_loaded",
            "1 when every live worker has a model loaded, else 0.",
            multiprocess_mode="livemin",
            registry=registry,
        )
        self._loaded.set(0)
        self._served: tuple[str, str] | None = None

    def serve(self, name: str, version: str) -> None:
        """Report ``version`` (and not the previous one) for this worker."""
        if self._served is not None and self._served != (name, version):
            self._info.labels(*self._served).set(0)
        self._info.labels(name, version).set(1)
        self._loaded.set(1)
        self._served = (name, version)


class MetricsMiddleware:
    """Pure ASGI middleware counting requests and timing them by route template.

    The route template (``/predict``) rather than the raw path keeps label cardinality
    bounded; paths that match no route are reported as ``unmatched``.
    """

    def __init__(self, app: Any, metrics: ServingMetrics):
        self.app = app
        self.metrics = metrics
        # Label children by (route, method, status): a dictionary lookup per request
        # instead of two labels() calls, each taking the metric's lock.
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app raises

        async def send_with_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            labels = (getattr(route, "path", None) or "unmatched", scope["method"], str(status))
            children = self._children.get(labels)
            if children is None:
                children = (
                    self.metrics.requests.labels(*labels),
                    self.metrics.latency.labels(*labels),
                )
                if len(self._children) < 1000:  # methods are the client's: bound the cache
                    self._children[labels] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - started)
