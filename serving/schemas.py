"""Request and response bodies of the prediction API, and the bodies of its errors."""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from pydantic_core import PydanticCustomError

from serving.errors import UnavailableKind
from serving.features import ProblemKind, RowProblem
from serving.inference import EngineName
from serving.model import ServingModel
from serving.service import Prediction

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# The most user_ids a batch may ever hold (``batch_limit`` is at most this).
MAX_BATCH_LIMIT = 10_000


def _exact_integer(value: object) -> object:
    """A number with a zero fraction (``42.0``, ``4.2e1``) as the integer it denotes.

    JSON Schema's ``integer`` admits such numbers, so the API does too. Request bodies are
    parsed with exact decimals (``serving.routes``): a long id is never rounded to another
    user's on the way. Anything else (a string, a bool, NaN) is left to strict validation.
    """
    if (isinstance(value, Decimal) and value.is_finite()) or (
        isinstance(value, float) and math.isfinite(value)
    ):
        # Bounds first: int() of 1e999999999 would build a billion-digit number.
        if value > INT64_MAX:
            raise PydanticCustomError(
                "less_than_equal", "Input should be less than or equal to {le}", {"le": INT64_MAX}
            )
        if value < INT64_MIN:
            raise PydanticCustomError(
                "greater_than_equal",
                "Input should be greater than or equal to {ge}",
                {"ge": INT64_MIN},
            )
        if value != int(value):
            raise PydanticCustomError(
                "int_from_float",
                "Input should be a valid integer, got a number with a fractional part",
            )
        return int(value)
    return value


# Strict otherwise: "42", true or null is a wrong type (422), never coerced; bounded to
# int64, the entity key type of the feature store.
UserId = Annotated[
    int,
    Field(strict=True, ge=INT64_MIN, le=INT64_MAX, description="The user's id.", examples=[42]),
    # After the constraints, so it runs before them (and the schema keeps them).
    BeforeValidator(_exact_integer),
]


class PredictRequest(BaseModel):
    """One user to score."""

    model_config = ConfigDict(extra="forbid")

    user_id: UserId
    explain: bool = Field(
        default=False,
        strict=True,  # 0, 1 or "true" are wrong types (422), as for user_id
        description="Also return each feature's value and contribution.",
    )


_USER_IDS = "The users to score; answers keep this order (a repeated id is answered each time)."


class BatchPredictRequest(BaseModel):
    """Users to score together (at most the service's batch limit)."""

    model_config = ConfigDict(extra="forbid")

    user_ids: list[UserId] = Field(
        min_length=1, max_length=MAX_BATCH_LIMIT, description=_USER_IDS, examples=[[42, 43]]
    )
    explain: bool = Field(
        default=False,
        strict=True,  # 0, 1 or "true" are wrong types (422), as for user_id
        description="Also return each feature's value and contribution.",
    )

    @classmethod
    def limited_to(cls, limit: int) -> type[BatchPredictRequest]:
        """This request with at most ``limit`` user_ids: in the schema and in validation alike.

        One more id is a schema violation answered with 422, like any other.
        """
        return create_model(
            cls.__name__,
            __base__=cls,
            __doc__=f"Users to score together (at most {limit}).",
            __module__=cls.__module__,
            user_ids=(
                list[UserId],
                Field(min_length=1, max_length=limit, description=_USER_IDS, examples=[[42, 43]]),
            ),
        )


class FeatureReason(BaseModel):
    """One feature's part in a prediction (TreeSHAP value)."""

    feature: str
    value: float | None = Field(
        description="The feature's value for this prediction (the training median when it "
        "was missing and filled; null when it was missing and the model took it so)."
    )
    contribution: float = Field(
        description="Effect on the log-odds of churn (positive raises the risk)."
    )


def _absent(value: object) -> bool:
    return value is None


class ScoredUser(BaseModel):
    """The churn prediction of one user."""

    request_id: str = Field(description="Id of this prediction in the prediction log.")
    user_id: int
    churn_probability: float = Field(ge=0, le=1, description="Rounded to 4 decimals.")
    churn_predicted: bool = Field(description="churn_probability >= the decision threshold.")
    model_version: str
    # Present only with "explain": true (absent otherwise, so answers stay as before).
    reasons: list[FeatureReason] | None = Field(
        default=None,
        exclude_if=_absent,
        description='With "explain": true: every feature, largest absolute effect first '
        "(empty when the model family cannot be explained).",
    )
    base_value: float | None = Field(
        default=None,
        exclude_if=_absent,
        description="With explain: the log-odds the contributions start from; base_value "
        "plus the contributions is the model's log-odds.",
    )
    # Present only when a feature was missing (absent otherwise, so answers stay as before).
    missing_features: list[str] | None = Field(
        default=None,
        exclude_if=_absent,
        description="The features that had no value: scored as the feature service's "
        "missing-value policy says (by the model as missing, or filled with the training "
        "median). Absent when every feature had a value.",
    )

    @classmethod
    def of(cls, prediction: Prediction) -> ScoredUser:
        """From a service prediction."""
        return cls(**_scored_fields(prediction))


class PredictionResponse(ScoredUser):
    """The churn prediction of one user, with the time taken."""

    latency_ms: float = Field(description="Time spent answering, in milliseconds.")

    @staticmethod
    def fields(prediction: Prediction, latency_ms: float) -> dict[str, Any]:
        """The response's fields, from a service prediction."""
        return {**_scored_fields(prediction), "latency_ms": round(latency_ms, 3)}


def _scored_fields(prediction: Prediction) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "request_id": prediction.request_id,
        "user_id": prediction.user_id,
        "churn_probability": round(prediction.churn_probability, 4),
        "churn_predicted": prediction.churn_predicted,
        "model_version": prediction.model_version,
    }
    if prediction.reasons is not None:
        # Plain dicts: /predict renders them straight to JSON, ScoredUser validates them.
        fields["reasons"] = [
            {"feature": r.feature, "value": r.value, "contribution": r.contribution}
            for r in prediction.reasons
        ]
        fields["base_value"] = prediction.base_value
    if prediction.missing_features:
        fields["missing_features"] = list(prediction.missing_features)
    return fields


class UserError(BaseModel):
    """Why one user of a batch got no prediction."""

    user_id: int
    kind: ProblemKind
    detail: str


class BatchPredictionResponse(BaseModel):
    """Predictions of a batch; users without one are listed under errors."""

    predictions: list[ScoredUser]
    errors: list[UserError]
    latency_ms: float

    @classmethod
    def answer(
        cls, user_ids: list[int], results: list[Prediction | RowProblem], latency_ms: float
    ) -> BatchPredictionResponse:
        """From the service's per-user results (same order as ``user_ids``)."""
        predictions: list[ScoredUser] = []
        errors: list[UserError] = []
        for user_id, result in zip(user_ids, results, strict=True):
            if isinstance(result, Prediction):
                predictions.append(ScoredUser.of(result))
            else:
                errors.append(UserError(user_id=user_id, kind=result.kind, detail=result.detail))
        return cls(predictions=predictions, errors=errors, latency_ms=round(latency_ms, 3))


class ErrorResponse(BaseModel):
    """What went wrong: a machine-readable kind and a sentence for people."""

    kind: str
    detail: str


class FeatureProblemResponse(ErrorResponse):
    """404: the user's online features cannot be scored (nothing to predict from)."""

    kind: ProblemKind


class PayloadTooLargeResponse(ErrorResponse):
    """413: the body is over the size limit; refused before it is read or parsed."""

    kind: Literal["payload_too_large"]


class UnavailableResponse(ErrorResponse):
    """503: the service cannot answer now; retry after the ``Retry-After`` seconds."""

    kind: UnavailableKind


class InternalErrorResponse(ErrorResponse):
    """500: the prediction failed unexpectedly (the service log says why)."""

    kind: Literal["internal_error"]


class UnauthorizedResponse(ErrorResponse):
    """401: the bearer token is missing or not valid (``WWW-Authenticate`` says which)."""

    kind: Literal["unauthorized"]


class ForbiddenResponse(ErrorResponse):
    """403: the bearer token is valid but lacks the scope or role the service requires."""

    kind: Literal["forbidden"]


class ValidationIssue(BaseModel):
    """One problem of an invalid request (the input itself is never echoed)."""

    type: str = Field(description='What is wrong, e.g. "int_type" or "too_long".')
    loc: list[str | int] = Field(description='Where, e.g. ["body", "user_ids", 3].')
    msg: str = Field(description="The problem in a sentence.")


class ValidationErrorResponse(BaseModel):
    """422: the body is not what the schema admits (at most 10 problems, then a count)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": [
                        {
                            "type": "int_type",
                            "loc": ["body", "user_id"],
                            "msg": "Input should be a valid integer",
                        }
                    ]
                },
                {
                    "detail": [
                        {
                            "type": "too_long",
                            "loc": ["body", "user_ids"],
                            "msg": "List should have at most 100 items after validation, not 101",
                        }
                    ]
                },
            ]
        }
    )

    detail: list[ValidationIssue]


# One example of each error kind, as the API reference shows them.
ERROR_EXAMPLES: dict[str, str] = {
    "unknown_user": "user 42 has no features in the online store",
    "stale_features": "features of user 42 in user_features are 30 days old, older than "
    "the view's TTL of 21 days",
    "missing_features": "user 42 has no value for feature_2 in the online store",
    "invalid_feature_value": "user 42 has a non-numeric value for feature_1",
    "feature_transform_failed": "on-demand view user_feature_transforms failed for user 42: "
    "ZeroDivisionError",
    "non_finite_features": "user 42 has a non-finite value for feature_ratio",
    "payload_too_large": "the request body exceeds the limit of 67936 bytes",
    "no_model": "no model is being served: no version of 'churn-predictor' has alias 'champion'",
    "store_unavailable": "the online store did not answer within 500 ms",
    "overloaded": "the service has 2040 rows waiting, at its limit of 2048: retry shortly",
    "deadline_exceeded": "no answer within the 2 s deadline",
    "internal_error": "the prediction failed (see the service log)",
    "unauthorized": "the bearer token has expired",
    "forbidden": 'the bearer token lacks the scope "churn:predict"',
    "auth_unavailable": "tokens cannot be checked now: the issuer's keys are not available",
}


def error_examples(model: type[ErrorResponse]) -> dict[str, dict[str, Any]]:
    """OpenAPI examples of an error body: one per kind its model admits."""
    kinds = get_args(model.model_fields["kind"].annotation)
    return {
        kind: {"summary": kind, "value": {"kind": kind, "detail": ERROR_EXAMPLES[kind]}}
        for kind in kinds
    }


class HealthResponse(BaseModel):
    """Liveness: the process answers."""

    status: Literal["ok"] = "ok"
    model_loaded: bool
    model_version: str | None


class ReadinessResponse(BaseModel):
    """Readiness: a model is loaded and the online store answers."""

    model_config = ConfigDict(from_attributes=True)  # built from the service's Readiness

    ready: bool
    model_loaded: bool
    model_version: str | None
    online_store: str = Field(description='"ok" or what is wrong with the online store.')
    backlog_rows: int = Field(description="Rows waiting to be scored.")
    detail: str | None


class InferenceInfo(BaseModel):
    """How the served model is evaluated."""

    engine: EngineName = Field(
        description="flat_forest: the trees as numpy arrays; sklearn: predict_proba."
    )
    reason: str = Field(description="Exactness and timings of the engines compared at load.")
    check_rows: int = Field(description="Training test rows the engine was checked on.")
    native_threads: int = Field(
        description="OpenMP/BLAS threads the inference thread may use (as it sees them)."
    )


class ModelResponse(BaseModel):
    """The model being served and where its features come from."""

    name: str
    version: str
    alias: str
    run_id: str | None
    feature_service: str
    feast_project: str
    features: list[str]
    lookup: Literal["redis", "feast-sdk"]
    missing_values: Literal["reject", "model", "fill"] = Field(
        description="What a missing feature value gets: reject (404 missing_features), "
        "model (the model takes it as missing) or fill (the training median)."
    )
    inference: InferenceInfo
    loaded_at: datetime

    @classmethod
    def of(cls, model: ServingModel, alias: str, *, native_threads: int) -> ModelResponse:
        """From the served model and the thread count its inference thread sees."""
        return cls(
            name=model.name,
            version=model.version,
            alias=alias,
            run_id=model.run_id,
            feature_service=model.plan.service_name,
            feast_project=model.plan.project,
            features=list(model.features),
            lookup="redis" if model.plan.fast_path else "feast-sdk",
            missing_values=model.missing.policy,
            inference=InferenceInfo(
                engine=model.predictor.engine,
                reason=model.engine.reason,
                check_rows=model.engine.check_rows,
                native_threads=native_threads,
            ),
            loaded_at=model.loaded_at,
        )


class ReloadResponse(BaseModel):
    """What an on-demand reload did."""

    model_config = ConfigDict(from_attributes=True)  # built from the service's ReloadOutcome

    outcome: Literal["loaded", "unchanged", "refused", "no_model", "failed"]
    model_version: str | None
    previous_version: str | None
    detail: str
