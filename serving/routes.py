"""HTTP routes: thin adapters between JSON bodies and the prediction service."""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.auth import Caller, TokenVerifier
from serving.errors import NO_MODEL_RETRY_AFTER_S, ServingError
from serving.features import RowProblem
from serving.metrics import ServingMetrics
from serving.schemas import (
    BatchPredictionResponse,
    BatchPredictRequest,
    ErrorResponse,
    FeatureProblemResponse,
    ForbiddenResponse,
    HealthResponse,
    InternalErrorResponse,
    ModelResponse,
    PayloadTooLargeResponse,
    PredictionResponse,
    PredictRequest,
    ReadinessResponse,
    ReloadResponse,
    UnauthorizedResponse,
    UnavailableResponse,
    ValidationErrorResponse,
    error_examples,
)
from serving.service import PredictionService, problem_error


class _ExactNumbersRequest(Request):
    """A request whose JSON numbers with a fraction or exponent parse as exact decimals.

    As floats, ``9007199254740993.0`` would become the id 9007199254740992 and
    ``1.0000000000000001`` the integer 1: another user, or a fraction silently dropped.
    """

    async def json(self) -> Any:
        if not hasattr(self, "_exact_json"):
            self._exact_json = json.loads(await self.body(), parse_float=Decimal)
        return self._exact_json


class ExactNumbersRoute(APIRoute):
    """A route whose JSON body is parsed with exact decimals (see ``UserId``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def exact_numbers_handler(request: Request) -> Response:
            return await handler(_ExactNumbersRequest(request.scope, request.receive))

        return exact_numbers_handler


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
        raise ServingError("unauthorized", "a valid admin bearer token is required")


AdminDep = Annotated[None, Depends(_require_admin)]

_caller_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="CallerJWT",
    bearerFormat="JWT",
    description="A JWT from the configured issuer (CHURN_SERVING_AUTH_*), when authentication "
    "is on.",
)


async def _require_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_caller_bearer)],
) -> Caller:
    verifier: TokenVerifier = request.app.state.auth
    try:
        return await verifier.authenticate(credentials.credentials if credentials else None)
    except ServingError as error:
        request.app.state.metrics.errors.labels(kind=error.kind).inc()
        raise


# The caller of a prediction route. prediction_router puts its dependency on the guarded
# routes when authentication is on (not in their signatures: the security scheme must be in
# the published schema only then); a route that needs the caller itself can take one.
CallerDep = Annotated[Caller, Depends(_require_caller)]


_CHALLENGE = {
    "WWW-Authenticate": {
        "description": 'The challenge (RFC 6750), e.g. Bearer error="invalid_token".',
        "required": True,
        "schema": {"type": "string"},
    }
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
# Every error body a route can answer with, by status: its model, and one example per kind.
_ERRORS: dict[int, tuple[type[ErrorResponse], str, dict[str, Any]]] = {
    401: (UnauthorizedResponse, "The bearer token is missing or not valid.", _CHALLENGE),
    403: (ForbiddenResponse, "The bearer token lacks the required scope or role.", _CHALLENGE),
    404: (FeatureProblemResponse, "The user's features cannot be scored.", {}),
    413: (PayloadTooLargeResponse, "The body is over the size limit (refused unread).", {}),
    500: (InternalErrorResponse, "The prediction failed unexpectedly.", {}),
    503: (UnavailableResponse, "The service cannot answer now: retry later.", _RETRY_AFTER),
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        if status == 422:
            responses[422] = {
                "model": ValidationErrorResponse,
                "description": "The body is not what the schema admits.",
            }
            continue
        model, description, headers = _ERRORS[status]
        responses[status] = {
            "model": model,
            "description": description,
            "content": {"application/json": {"examples": error_examples(model)}},
            **({"headers": headers} if headers else {}),
        }
    return responses


# The routes of callers (guarded when authentication is on) but /predict/batch, whose body
# depends on the app (prediction_router), and the routes of probes and scrapers (open).
_routes = APIRouter(route_class=ExactNumbersRoute)
_open_routes = APIRouter()
admin_router = APIRouter(prefix="/admin", tags=["admin"])


def prediction_router(*, batch_limit: int, authenticated: bool = False) -> APIRouter:
    """The public routes, ``/predict/batch`` taking at most ``batch_limit`` user_ids.

    The limit is in the published schema (``maxItems``) and in validation alike: one id
    more is answered with 422, as the schema says. With ``authenticated``, ``/predict``,
    ``/predict/batch`` and ``/model`` require a bearer token (``app.state.auth`` checks
    it; 401 and 403 are in their schema); ``/health``, ``/ready`` and ``/metrics`` stay open.
    """
    guard: dict[str, Any] = {}
    if authenticated:
        guard = {"dependencies": [*get_args(CallerDep)[1:]], "responses": _errors(401, 403)}
    router = APIRouter()
    router.include_router(_routes, **guard)
    router.include_router(_open_routes)
    router.add_api_route(
        "/predict/batch",
        _batch_route(BatchPredictRequest.limited_to(batch_limit)),
        methods=["POST"],
        response_model=BatchPredictionResponse,
        responses={**_errors(413, 422, 500, 503), **guard.get("responses", {})},
        dependencies=guard.get("dependencies"),
        tags=["predictions"],
        route_class_override=ExactNumbersRoute,
    )
    return router


@_routes.post(
    "/predict",
    response_model=PredictionResponse,
    responses=_errors(404, 413, 422, 500, 503),
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


def _batch_route(
    request_model: type[BatchPredictRequest],
) -> Callable[..., Coroutine[Any, Any, BatchPredictionResponse]]:
    async def predict_batch(
        body: BatchPredictRequest, service: ServiceDep, request: Request
    ) -> BatchPredictionResponse:
        """Churn probabilities of several users in one lookup; unknown users listed as errors."""
        started = time.perf_counter()
        results = await service.predict(
            body.user_ids, client_gone=request.is_disconnected, explain=body.explain
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        return BatchPredictionResponse.answer(body.user_ids, results, elapsed_ms)

    # FastAPI validates the body, and documents it, with the annotated model: this app's.
    predict_batch.__annotations__["body"] = request_model
    return predict_batch


@_open_routes.get("/health", response_model=HealthResponse, tags=["operations"])
async def health(service: ServiceDep) -> HealthResponse:
    """Liveness: answers while the process runs, with whether a model is loaded."""
    model = service.model
    return HealthResponse(
        model_loaded=model is not None, model_version=model.version if model else None
    )


@_open_routes.get(
    "/ready",
    response_model=ReadinessResponse,
    responses={503: {"model": ReadinessResponse, "description": "Not ready, and why."}},
    tags=["operations"],
)
async def ready(service: ServiceDep, request: Request, response: Response) -> ReadinessResponse:
    """Readiness: 200 when a model is loaded and the online store answers, else 503."""
    readiness = await service.readiness()
    verifier: TokenVerifier | None = request.app.state.auth
    if verifier is not None and verifier.problem is not None:
        # Serving no token is serving no prediction: not ready either.
        detail = "; ".join(filter(None, [readiness.detail, verifier.problem]))
        readiness = dataclasses.replace(readiness, ready=False, detail=detail)
    if not readiness.ready:
        response.status_code = 503
    return ReadinessResponse.model_validate(readiness)


@_routes.get("/model", response_model=ModelResponse, responses=_errors(503), tags=["operations"])
async def model_info(service: ServiceDep) -> ModelResponse:
    """The model version being served, its feature service and features."""
    model = service.model
    if model is None:
        raise ServingError(
            "no_model", "no model is being served", retry_after_s=NO_MODEL_RETRY_AFTER_S
        )
    threads = await service.inference_threads_seen()
    return ModelResponse.of(model, service.source.alias, native_threads=threads)


@_open_routes.get(
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
