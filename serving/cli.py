"""Stage: serve predictions over HTTP (``churn serve``)."""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer


def run_server(
    *,
    host: str | None = None,
    port: int | None = None,
    log_level: str = "info",
) -> None:
    """Run the prediction API with uvicorn (one worker) until interrupted.

    Settings come from the environment (``CHURN_SERVING_*``, ``CHURN_FEAST_*``,
    ``MLFLOW_TRACKING_URI``); ``host`` and ``port`` override theirs.
    """
    import uvicorn

    from serving.app import create_app
    from serving.settings import ServingSettings

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = ServingSettings(**overrides)  # type: ignore[arg-type]
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=1,
        access_log=False,  # per-request log lines cost more than the prediction itself
        log_level=log_level,
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()


def serve_command(
    host: Annotated[
        str | None, typer.Option(help="Interface (default: $CHURN_SERVING_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default: $CHURN_SERVING_PORT or 8000).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn/app log level.")] = "info",
) -> None:
    """Serve churn predictions by user_id (FastAPI): the champion model on online features."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Metrics live in this process's own registry. An inherited prometheus multi-process
    # directory (Feast's metrics module exports one into the environment) would make
    # prometheus-client store them in shared files instead.
    for variable in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"):
        os.environ.pop(variable, None)
    run_server(host=host, port=port, log_level=log_level)
