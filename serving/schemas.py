"""Request and response bodies of the prediction API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.features import ProblemKind, RowProblem
from serving.inference import EngineName
from serving.model import ServingModel
from serving.service import Prediction

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Strict: "42" or 42.0 is a wrong type (422), not silently coerced; bounded to int64,
# the entity key type of the feature store.
UserId = Annotated[
    int,
    Field(strict=True, ge=INT64_MIN, le=INT64_MAX, description="The user's id.", examples=[42]),
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


class BatchPredictRequest(BaseModel):
    """Users to score together (at most the configured batch limit)."""

    model_config = ConfigDict(extra="forbid")

    # The schema's hard cap; the configured limit (batch_limit, at most this) answers 413.
    user_ids: list[UserId] = Field(min_length=1, max_length=10_000, examples=[[42, 43]])
    explain: bool = Field(
        default=False,
        strict=True,  # 0, 1 or "true" are wrong types (422), as for user_id
        description="Also return each feature's value and contribution.",
    )


class FeatureReason(BaseModel):
    """One feature's part in a prediction (TreeSHAP value)."""

    feature: str
    value: float = Field(description="The feature's value for this prediction.")
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

    kind: str = Field(examples=["unknown_user"])
    detail: str = Field(examples=["user 42 has no features in the online store"])


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
