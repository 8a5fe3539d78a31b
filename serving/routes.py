"""HTTP routes: thin adapters between JSON bodies and the prediction service."""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.features import RowProblem
from serving.metrics import ServingMetrics
from serving.schemas import (
    BatchPredictionResponse,
    BatchPredictRequest,
    ErrorResponse,
    HealthResponse,
    ModelResponse,
    PredictionResponse,
    PredictRequest,
    ReadinessResponse,
    ReloadResponse,
)
from serving.service import PredictionService, ServingError, problem_error


# Dependencies are coroutines: FastAPI would run plain functions in its thread pool, one
# thread hop per request for a dictionary lookup.
async def _service(request: Request) -> PredictionService:
    service: PredictionService = request.app.state.service
    return service


async def _metrics(request: Request) -> ServingMetrics:
    metrics: ServingMetrics = request.app.state.metrics
    return metrics


ServiceDep = Annotated[PredictionService, Depends(_service)]
MetricsDep = Annotated[ServingMetrics, Depends(_metrics)]

_bearer = HTTPBearer(auto_error=False, description="The admin token (CHURN_SERVING_ADMIN_TOKEN).")


async def _require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    settings = request.app.state.settings
    token = settings.admin_token
    given = credentials.credentials if credentials else ""
    if (
        not settings.admin_enabled
        or token is None
        or not secrets.compare_digest(given.encode(), token.get_secret_value().encode())
    ):
        request.app.state.metrics.errors.labels(kind="unauthorized").inc()
        raise ServingError("unauthorized", 401, "a valid admin bearer token is required")


AdminDep = Annotated[None, Depends(_require_admin)]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}


router = APIRouter()
admin_router = APIRouter(prefix="/admin", tags=["admin"])


@router.post(
    "/predict",
    response_model=PredictionResponse,
    responses=_errors(404, 413, 503),
    tags=["predictions"],
)
async def predict(
    body: PredictRequest, service: ServiceDep, request: Request
) -> PredictionResponse:
    """Churn probability of one user, from its online features and the served model."""
    started = time.perf_counter()
    [result] = await service.predict(
        [body.user_id], client_gone=request.is_disconnected, explain=body.explain
    )
    if isinstance(result, RowProblem):
        raise problem_error(result)
    # Built from our own dataclass, so FastAPI's second validation of the response model
    # is skipped (the schema still documents it).
    return JSONResponse(  # type: ignore[return-value]
        PredictionResponse.fields(result, (time.perf_counter() - started) * 1000)
    )


@router.post(
    "/predict/batch",
    response_model=BatchPredictionResponse,
    responses=_errors(413, 503),
    tags=["predictions"],
)
async def predict_batch(
    body: BatchPredictRequest, service: ServiceDep, request: Request
) -> BatchPredictionResponse:
    """Churn probabilities of several users in one lookup; unknown users listed as errors."""
    started = time.perf_counter()
    service.check_batch_size(len(body.user_ids))
    results = await service.predict(
        body.user_ids, client_gone=request.is_disconnected, explain=body.explain
    )
    elapsed_ms = (time.perf_counter() - started) * 1000
    return BatchPredictionResponse.answer(body.user_ids, results, elapsed_ms)


@router.get("/health", response_model=HealthResponse, tags=["operations"])
async def health(service: ServiceDep) -> HealthResponse:
    """Liveness: answers while the process runs, with whether a model is loaded."""
    model = service.model
    return HealthResponse(
        model_loaded=model is not None, model_version=model.version if model else None
    )


@router.get(
    "/ready",
    response_model=ReadinessResponse,
    responses={503: {"model": ReadinessResponse}},
    tags=["operations"],
)
async def ready(service: ServiceDep, response: Response) -> ReadinessResponse:
    """Readiness: 200 when a model is loaded and the online store answers, else 503."""
    readiness = await service.readiness()
    if not readiness.ready:
        response.status_code = 503
    return ReadinessResponse.model_validate(readiness)


@router.get("/model", response_model=ModelResponse, responses=_errors(503), tags=["operations"])
async def model_info(service: ServiceDep) -> ModelResponse:
    """The model version being served, its feature service and features."""
    model = service.model
    if model is None:
        raise ServingError("no_model", 503, "no model is being served")
    threads = await service.inference_threads_seen()
    return ModelResponse.of(model, service.source.alias, native_threads=threads)


@router.get(
    "/metrics",
    response_model=str,
    response_class=PlainTextResponse,
    tags=["operations"],
)
async def metrics(registry: MetricsDep) -> PlainTextResponse:
    """Prometheus metrics of this service."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return PlainTextResponse(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)


@admin_router.post(
    "/reload",
    response_model=ReloadResponse,
    responses={
        **_errors(401),
        409: {"model": ReloadResponse, "description": "The version was refused."},
        503: {"model": ReloadResponse, "description": "No version, or the load failed."},
    },
)
async def reload_model(_: AdminDep, service: ServiceDep) -> JSONResponse:
    """Load the version behind the alias now (the alias only: no model URI is accepted)."""
    outcome = await service.reload(force=True)
    status = {"loaded": 200, "unchanged": 200, "refused": 409}.get(outcome.outcome, 503)
    return JSONResponse(
        ReloadResponse.model_validate(outcome).model_dump(mode="json"), status_code=status
    )
