"""The FastAPI application of ``churn serve``: an app factory with a lifespan.

Everything the routes use lives on ``app.state`` and is built in the lifespan (feature
store, online reader, model source, prediction log, service), so one process can hold
several independent apps and nothing happens at import time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from materialize.settings import DataSettings, FeastSettings
from serving.features import OnlineFeatures
from serving.metrics import MetricsMiddleware, ServingMetrics
from serving.model import MlflowModelSource
from serving.prediction_log import PredictionLog
from serving.routes import admin_router, router
from serving.service import ModelSource, PredictionService, ServingError
from serving.settings import ServingSettings
from training.tracking import MlflowSettings

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)


def create_app(
    settings: ServingSettings | None = None,
    *,
    feast: FeastSettings | None = None,
    mlflow: MlflowSettings | None = None,
    data: DataSettings | None = None,
    model_source: ModelSource | None = None,
    store: FeatureStore | None = None,
) -> FastAPI:
    """Build the prediction API.

    Args:
        settings: Service settings (from ``CHURN_SERVING_*`` when omitted).
        feast: Which Feast repo and profile to read features from.
        mlflow: Which MLflow registry to take the model from.
        data: Where the data folder is (default prediction-log location).
        model_source: Where model versions come from (default: the MLflow registry).
        store: An already open feature store (default: opened from ``feast``).
    """
    settings = settings or ServingSettings()
    metrics = ServingMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        feature_store = store if store is not None else await asyncio.to_thread(_open_store, feast)
        online = OnlineFeatures(feature_store, timeout_s=settings.online_timeout_s)
        source = (
            model_source
            if model_source is not None
            else await asyncio.to_thread(_mlflow_source, settings, mlflow, data)
        )
        log = PredictionLog(
            settings.resolved_prediction_log_dir(data),
            flush_interval_s=settings.log_flush_interval_s,
            flush_rows=settings.log_flush_rows,
            on_written=metrics.log_rows.labels(outcome="written").inc,
            on_failed=metrics.log_rows.labels(outcome="kept_after_failure").inc,
            max_buffer_rows=settings.log_max_buffer_rows,
            on_dropped=metrics.log_rows.labels(outcome="dropped").inc,
        )
        service = PredictionService(
            settings=settings, online=online, source=source, log=log, metrics=metrics
        )
        app.state.service = service
        app.state.prediction_log = log
        log.start()
        await service.start()
        try:
            yield
        finally:
            # uvicorn has finished the in-flight requests: stop scoring, then write
            # every buffered prediction before the process ends.
            await service.stop()
            await log.close()
            await online.close()

    app = FastAPI(
        title="Churn Prediction API",
        version="1.0",
        description="Churn probability of a user from its Feast online features and the "
        "champion model of the MLflow registry.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.include_router(router)
    if settings.admin_token is not None:
        app.include_router(admin_router)
    app.add_exception_handler(ServingError, _serving_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _open_store(feast: FeastSettings | None) -> FeatureStore:
    from core.feast_trust import check_on_demand_sources
    from materialize.store import open_feature_store

    feast = feast or FeastSettings()
    store = open_feature_store(feast)
    # Refuse to start on a registry whose on-demand view code is not the repo's (Feast
    # would execute it on every lookup).
    check_on_demand_sources(store, feast.repo_path)
    return store


def _mlflow_source(
    settings: ServingSettings, mlflow: MlflowSettings | None, data: DataSettings | None
) -> MlflowModelSource:
    uri = (mlflow or MlflowSettings()).prepare(data)
    return MlflowModelSource(tracking_uri=uri, name=settings.model_name, alias=settings.model_alias)


async def _serving_error_handler(request: Request, error: Exception) -> Response:
    assert isinstance(error, ServingError)
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(
        {"kind": error.kind, "detail": error.detail}, status_code=error.status, headers=headers
    )


async def _http_error_handler(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 400:
        # FastAPI answers 400 for a body it cannot even decode (not UTF-8): for the client
        # that is one more malformed body, answered like the others (422, same shape).
        request.app.state.metrics.errors.labels(kind="invalid_request").inc()
        return JSONResponse(
            {"detail": [{"type": "json_invalid", "loc": ["body"], "msg": str(error.detail)}]},
            status_code=422,
        )
    return await http_exception_handler(request, error)


async def _validation_error_handler(request: Request, error: Exception) -> Response:
    request.app.state.metrics.errors.labels(kind="invalid_request").inc()
    assert isinstance(error, RequestValidationError)
    return await request_validation_exception_handler(request, error)
