"""Running the prediction API (``churn serve``): one process, or several workers on one port."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from serving.settings import ServingSettings

# Variables prometheus-client (and Feast's metrics module) read to store metric values in
# files shared between processes.
_MULTIPROCESS_VARIABLES = (
    "PROMETHEUS_MULTIPROC_DIR",
    "PROMETHEUS_MULTIPROCESS_DIR",
    "prometheus_multiproc_dir",
)
_NATIVE_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class ServeRequest:
    """How to run the server; None takes the setting (``CHURN_SERVING_*``).

    Attributes:
        host: Interface to listen on.
        port: TCP port.
        workers: Worker processes.
        log_level: uvicorn's and the app's log level.
    """

    host: str | None = None
    port: int | None = None
    workers: int | None = None
    log_level: str = "info"


@dataclass(frozen=True)
class ServeOutcome:
    """Where the server listened, with how many workers, once it has stopped."""

    host: str
    port: int
    workers: int


def _tls_options(settings: ServingSettings) -> dict[str, Any]:
    """uvicorn's HTTPS options from the settings (none: plain HTTP)."""
    if not settings.tls_enabled:
        return {}
    password = settings.tls_key_password
    return {
        "ssl_certfile": str(settings.tls_cert_file),
        "ssl_keyfile": str(settings.tls_key_file),
        "ssl_keyfile_password": password.get_secret_value() if password else None,
    }


def run_server(request: ServeRequest) -> ServeOutcome:
    """Run the prediction API with uvicorn until interrupted.

    Settings come from the environment (``CHURN_SERVING_*``, ``CHURN_MODEL_*``,
    ``CHURN_FEAST_*``, ``MLFLOW_TRACKING_URI``); the request's host, port and workers
    override theirs. With one worker the app runs in this process; with several, uvicorn
    starts that many processes on one socket, each with its own model, hot reload and
    prediction-log files, and their metrics are kept in a shared folder removed at exit.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Metrics live in this process's own registry unless several workers share a folder
    # (set up below). An inherited multi-process folder (Feast's metrics module exports one
    # into the environment) would put them in stray files instead.
    for variable in (*_MULTIPROCESS_VARIABLES, "CHURN_SERVING_METRICS_DIR"):
        os.environ.pop(variable, None)
    overrides = {
        key: value
        for key, value in {
            "host": request.host,
            "port": request.port,
            "workers": request.workers,
        }.items()
        if value is not None
    }
    settings = ServingSettings(**overrides)  # type: ignore[arg-type]
    count = settings.resolved_workers()
    # Inference threads are limited inside the predict thread; the variables cover every
    # other thread of the workers (set before they import numpy or sklearn).
    for variable in _NATIVE_THREAD_VARIABLES:
        os.environ.setdefault(variable, str(settings.inference_threads))
    logging.basicConfig(
        level=request.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "access_log": False,  # per-request log lines cost more than the prediction itself
        "log_level": request.log_level,
        "timeout_graceful_shutdown": 10,
        **_tls_options(settings),
    }
    outcome = ServeOutcome(host=settings.host, port=settings.port, workers=count)
    if count == 1:
        # Imported only now: prometheus-client chooses in-process or file-backed metric
        # values once, when first imported, from the variables cleared above.
        from serving.app import create_app

        uvicorn.Server(uvicorn.Config(create_app(settings), workers=1, **common)).run()
        return outcome
    metrics_dir = Path(tempfile.mkdtemp(prefix="churn-serve-metrics-"))
    # The workers are new processes: they read every setting from the environment.
    os.environ.update(
        {
            "CHURN_SERVING_HOST": settings.host,
            "CHURN_SERVING_PORT": str(settings.port),
            "CHURN_SERVING_WORKERS": str(count),
            "CHURN_SERVING_METRICS_DIR": str(metrics_dir),
            **dict.fromkeys(_MULTIPROCESS_VARIABLES, str(metrics_dir)),
        }
    )
    try:
        uvicorn.run(
            "serving.app:create_app_from_environment", factory=True, workers=count, **common
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return outcome
