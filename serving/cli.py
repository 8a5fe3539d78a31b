"""Stage: serve predictions over HTTP (``churn serve``)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

# Variables prometheus-client (and Feast's metrics module) read to store metric values in
# files shared between processes.
_MULTIPROCESS_VARIABLES = (
    "PROMETHEUS_MULTIPROC_DIR",
    "PROMETHEUS_MULTIPROCESS_DIR",
    "prometheus_multiproc_dir",
)
_NATIVE_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def run_server(
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    log_level: str = "info",
) -> None:
    """Run the prediction API with uvicorn until interrupted.

    Settings come from the environment (``CHURN_SERVING_*``, ``CHURN_FEAST_*``,
    ``MLFLOW_TRACKING_URI``); ``host``, ``port`` and ``workers`` override theirs. With one
    worker the app runs in this process; with several, uvicorn starts that many processes
    on one socket, each with its own model, hot reload and prediction-log files, and their
    metrics are kept in a shared folder removed at exit.
    """
    import uvicorn

    from serving.settings import ServingSettings

    overrides = {
        key: value
        for key, value in {"host": host, "port": port, "workers": workers}.items()
        if value is not None
    }
    settings = ServingSettings(**overrides)  # type: ignore[arg-type]
    count = settings.resolved_workers()
    # Inference threads are limited inside the predict thread; the variables cover every
    # other thread of the workers (set before they import numpy or sklearn).
    for variable in _NATIVE_THREAD_VARIABLES:
        os.environ.setdefault(variable, str(settings.inference_threads))
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "access_log": False,  # per-request log lines cost more than the prediction itself
        "log_level": log_level,
        "timeout_graceful_shutdown": 10,
    }
    if count == 1:
        from serving.app import create_app

        uvicorn.Server(uvicorn.Config(create_app(settings), workers=1, **common)).run()
        return
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


def serve_command(
    host: Annotated[
        str | None, typer.Option(help="Interface (default: $CHURN_SERVING_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default: $CHURN_SERVING_PORT or 8000).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Worker processes (default: $CHURN_SERVING_WORKERS or one per CPU core).",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn/app log level.")] = "info",
) -> None:
    """Serve churn predictions by user_id (FastAPI): the champion model on online features."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Metrics live in this process's own registry unless several workers share a folder
    # (set up in run_server). An inherited multi-process folder (Feast's metrics module
    # exports one into the environment) would put them in stray files instead.
    for variable in (*_MULTIPROCESS_VARIABLES, "CHURN_SERVING_METRICS_DIR"):
        os.environ.pop(variable, None)
    run_server(host=host, port=port, workers=workers, log_level=log_level)
