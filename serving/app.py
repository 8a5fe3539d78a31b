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
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.telemetry import TelemetryConfig
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.feast_store import open_feature_store
from core.models import ModelRegistry
from core.settings import DataSettings, FeastSettings, MlflowSettings, ModelSettings
from serving.auth import JwksKeys, TokenVerifier
from serving.features import OnlineFeatures
from serving.limits import BodyLimitMiddleware
from serving.metrics import MetricsMiddleware, ServingMetrics
from serving.model import MlflowModelSource
from serving.openapi import ServingAPI
from serving.prediction_log import PredictionLog
from serving.routes import admin_router, prediction_router
from serving.service import ModelSource, PredictionService, ServingError
from serving.settings import MIN_ADMIN_TOKEN_CHARS, AuthSettings, ServingSettings

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)


def create_app(
    settings: ServingSettings | None = None,
    *,
    model: ModelSettings | None = None,
    feast: FeastSettings | None = None,
    mlflow: MlflowSettings | None = None,
    data: DataSettings | None = None,
    model_source: ModelSource | None = None,
    store: FeatureStore | None = None,
    auth: AuthSettings | None = None,
) -> FastAPI:
    """Build the prediction API.

    Args:
        settings: Service settings (from ``CHURN_SERVING_*`` when omitted).
        model: Which registered model and alias to serve, and the decision threshold (from
            ``CHURN_MODEL_*`` when omitted).
        feast: Which Feast repo and profile to read features from.
        mlflow: Which MLflow registry to take the model from.
        data: Where the data folder is (default prediction-log location).
        model_source: Where model versions come from (default: the MLflow registry).
        store: An already open feature store (default: opened from ``feast``).
        auth: Who may call the prediction routes (from ``CHURN_SERVING_AUTH_*`` when
            omitted; off unless enabled).
    """
    settings = settings or ServingSettings()
    model = model or ModelSettings()
    auth = auth or AuthSettings()
    metrics = ServingMetrics(settings.metrics_dir)
    verifier = _token_verifier(auth, settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Opened through the checkpoint: a registry whose on-demand view code is not the
        # repo's is refused before Feast can run it on a lookup.
        feature_store = (
            store if store is not None else await asyncio.to_thread(open_feature_store, feast)
        )
        online = OnlineFeatures(feature_store, timeout_s=settings.online_timeout_s)
        source = (
            model_source
            if model_source is not None
            else await asyncio.to_thread(_mlflow_source, model, mlflow, data)
        )
        log = PredictionLog(
            (data or DataSettings()).prediction_log_path,
            flush_interval_s=settings.log_flush_interval_s,
            flush_rows=settings.log_flush_rows,
            on_written=metrics.log_rows.labels(outcome="written").inc,
            on_failed=metrics.log_rows.labels(outcome="kept_after_failure").inc,
            max_buffer_rows=settings.log_max_buffer_rows,
            on_dropped=metrics.log_rows.labels(outcome="dropped").inc,
        )
        service = PredictionService(
            settings=settings,
            threshold=model.decision_threshold,
            online=online,
            source=source,
            log=log,
            metrics=metrics,
        )
        app.state.service = service
        app.state.prediction_log = log
        log.start()
        await service.start()
        if verifier is not None:
            await verifier.start()
        try:
            yield
        finally:
            if verifier is not None:
                await verifier.stop()
            # uvicorn has finished the in-flight requests: stop scoring, then write
            # every buffered prediction before the process ends.
            await service.stop()
            await log.close()
            await online.close()
            metrics.close()

    app = ServingAPI(
        title="Churn Prediction API",
        version="1.0",
        description="Churn probability of a user from its Feast online features and the "
        "champion model of the MLflow registry.",
        lifespan=lifespan,
        telemetry=_telemetry(settings.opentelemetry),
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.auth = verifier
    app.include_router(
        prediction_router(batch_limit=settings.batch_limit, authenticated=verifier is not None)
    )
    if settings.admin_enabled:
        app.include_router(admin_router)
    elif settings.admin_token is not None:
        logger.warning(
            "admin routes are off: CHURN_SERVING_ADMIN_TOKEN is shorter than %d characters",
            MIN_ADMIN_TOKEN_CHARS,
        )
    app.add_exception_handler(ServingError, _serving_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.resolved_max_body_bytes(),
        on_refused=metrics.errors.labels(kind="payload_too_large").inc,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def create_app_from_environment() -> FastAPI:
    """The app with every setting from the environment (the factory each worker runs)."""
    return create_app(ServingSettings())


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _token_verifier(
    auth: AuthSettings, settings: ServingSettings, metrics: ServingMetrics
) -> TokenVerifier | None:
    """The bearer-token check of the prediction routes, when authentication is on."""
    if not auth.enabled:
        return None
    if not settings.tls_enabled and settings.host not in _LOOPBACK:
        logger.warning(
            "bearer tokens are required but travel in clear text to %s: set "
            "CHURN_SERVING_TLS_CERT_FILE and CHURN_SERVING_TLS_KEY_FILE, or terminate TLS "
            "in front of the service",
            settings.host,
        )
    keys = JwksKeys(auth, on_fetched=lambda outcome: metrics.jwks_fetches.labels(outcome).inc())
    return TokenVerifier(
        auth, keys, on_rejected=lambda reason: metrics.auth_rejections.labels(reason).inc()
    )


def _mlflow_source(
    model: ModelSettings, mlflow: MlflowSettings | None, data: DataSettings | None
) -> MlflowModelSource:
    registry = ModelRegistry((mlflow or MlflowSettings()).prepare(data))
    return MlflowModelSource(registry=registry, name=model.name, alias=model.alias)


async def _serving_error_handler(request: Request, error: Exception) -> Response:
    assert isinstance(error, ServingError)
    headers = {}
    if error.challenge is not None or error.status == 401:
        headers["WWW-Authenticate"] = error.challenge or "Bearer"
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(error.retry_after_s)
    return JSONResponse(
        {"kind": error.kind, "detail": error.detail}, status_code=error.status, headers=headers
    )


def _telemetry(enabled: bool) -> TelemetryConfig:
    """FastAPI's native OpenTelemetry, off unless asked for.

    When on, requests are traced and measured through the globally configured OpenTelemetry
    providers; off, no per-request check of those providers runs (about 3% of a request).
    """
    return TelemetryConfig(tracing=enabled, metrics=enabled, logs=enabled)


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


_MAX_REPORTED_ERRORS = 10
_MAX_MESSAGE_CHARS = 200


async def _validation_error_handler(request: Request, error: Exception) -> Response:
    """422 naming what is wrong, without echoing the input (bounded, whatever was sent)."""
    request.app.state.metrics.errors.labels(kind="invalid_request").inc()
    assert isinstance(error, RequestValidationError)
    errors = error.errors()
    detail = [
        {
            "type": str(item.get("type", "invalid")),
            "loc": list(item.get("loc", ()))[:5],
            "msg": str(item.get("msg", ""))[:_MAX_MESSAGE_CHARS],
        }
        for item in errors[:_MAX_REPORTED_ERRORS]
    ]
    if len(errors) > _MAX_REPORTED_ERRORS:
        detail.append(
            {
                "type": "too_many_errors",
                "loc": ["body"],
                "msg": f"{len(errors) - _MAX_REPORTED_ERRORS} more errors not listed",
            }
        )
    return JSONResponse({"detail": detail}, status_code=422)
