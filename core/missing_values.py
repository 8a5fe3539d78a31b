"""Missing feature values: the policy a feature service declares, applied in one place.

A feature service declares what happens to a user with a missing (null) feature value in
a Feast tag, beside its features (``feature_repo/services.py``)::

    FeatureService(name="churn_v1", ..., tags={"churn.missing_values": "model"})

- ``reject``: the user is not scored (``/predict`` answers 404 ``missing_features``,
  ``/predict/batch`` lists it under ``errors``, ``churn score`` lists it as unscored).
- ``model``: the missing values reach the model as NaN. Only a model that handles missing
  values natively (scikit-learn's ``allow_nan`` tag: HistGradientBoosting) is accepted; any
  other version is refused at load.
- ``fill``: each missing value is replaced by its feature's median on the training rows,
  recorded on the model version by ``churn train`` (tag :data:`FILL_VALUES_TAG`); a
  version without them is refused at load.

A service that declares nothing gets ``model`` when its model handles missing values (what
``churn train`` registers by default) and ``reject`` otherwise.

Serving (``/predict`` and ``/predict/batch``) and ``churn score`` build one
:class:`MissingValues` per model version and pass every matrix through
:meth:`MissingValues.apply`: the three paths decide the same way, on the same values.
Only NaN counts as missing; an infinite value stays an error of its own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from core.calibration import split_calibrated
from core.errors import FeatureServiceError, LineageError, ModelRefused

MissingValuePolicy = Literal["reject", "model", "fill"]
POLICIES: tuple[str, ...] = get_args(MissingValuePolicy)
# On the Feast FeatureService: its declared policy.
POLICY_TAG = "churn.missing_values"
# On the registered model version: {feature: median of the training rows}, as JSON.
FILL_VALUES_TAG = "churn.fill_values"


def declared_policy(tags: Mapping[str, str] | None, *, service: str) -> MissingValuePolicy | None:
    """The policy a feature service's tags declare (None: it declares none).

    Raises:
        FeatureServiceError: The tag holds something other than reject, model or fill.
    """
    value = (tags or {}).get(POLICY_TAG)
    if value is None:
        return None
    policy = value.strip().lower()
    if policy not in POLICIES:
        raise FeatureServiceError(
            f"feature service {service!r}: tag {POLICY_TAG}={value!r} is not one of "
            f"{', '.join(POLICIES)}"
        )
    return policy  # type: ignore[return-value]


def fill_values_tag(medians: Mapping[str, float]) -> dict[str, str]:
    """The model version tag recording the training medians (finite values only)."""
    finite = {name: float(value) for name, value in medians.items() if math.isfinite(value)}
    return {FILL_VALUES_TAG: json.dumps(finite)}


def read_fill_values(tags: Mapping[str, str] | None, *, owner: str) -> dict[str, float] | None:
    """The training medians a version's tags record (None: not recorded).

    Raises:
        LineageError: The tag is not a JSON object of numbers.
    """
    raw = (tags or {}).get(FILL_VALUES_TAG)
    if not raw:
        return None
    try:
        parsed = json.loads(raw)
        if not isinstance(parsed, dict):
            raise TypeError("not an object")
        return {str(name): float(value) for name, value in parsed.items()}
    except (TypeError, ValueError) as error:
        raise LineageError(
            f"{owner}: tag {FILL_VALUES_TAG} is not a JSON object of numbers"
        ) from error


def model_takes_missing(model: Any) -> bool:
    """Whether a fitted estimator accepts NaN inputs (scikit-learn's ``allow_nan`` tag).

    A calibrated model is judged by the model inside: its calibrator reads that model's
    score, never a feature, and scikit-learn's calibrated wrapper does not pass the tag on.
    """
    from sklearn.utils import get_tags

    try:
        return bool(get_tags(split_calibrated(model)[0]).input_tags.allow_nan)
    except (AttributeError, TypeError, ValueError):
        return False


@dataclass(frozen=True)
class MissingRows:
    """A matrix after the policy.

    Attributes:
        matrix: What the model scores (rows in input order; filled under ``fill``).
        missing: Per row and feature, whether the value was missing (None: none was).
        rejected: Per row, whether the policy refuses to score it.
        features: The columns, for :meth:`names`.
    """

    matrix: np.ndarray
    missing: np.ndarray | None
    rejected: np.ndarray
    features: tuple[str, ...]

    def names(self, row: int) -> tuple[str, ...]:
        """The features missing in ``row`` (empty when none)."""
        if self.missing is None:
            return ()
        return tuple(
            name for name, absent in zip(self.features, self.missing[row], strict=True) if absent
        )


@dataclass(frozen=True)
class MissingValues:
    """One model version's missing-value policy, checked against the model.

    Build it with :meth:`for_model`. Attributes:
        policy: What is done with a missing value.
        declared: Whether the feature service declared it (else the default applied).
        features: The model's columns, in order.
        fill: Per column, the value a missing one is replaced by (``fill`` only).
    """

    policy: MissingValuePolicy
    declared: bool
    features: tuple[str, ...]
    fill: np.ndarray | None = None

    @classmethod
    def for_model(
        cls,
        model: Any,
        features: Sequence[str],
        *,
        declared: MissingValuePolicy | None,
        fill_values: Mapping[str, float] | None,
        owner: str,
    ) -> MissingValues:
        """The policy for this model: the declared one, checked, or the default.

        Args:
            model: The fitted estimator.
            features: Its columns, in order.
            declared: The feature service's declared policy (None: the default).
            fill_values: The version's training medians (None: not recorded).
            owner: Names the version in errors.

        Raises:
            ModelRefused: ``model`` declared for an estimator that cannot take missing
                values, or ``fill`` declared for a version without a median per feature.
        """
        takes_missing = model_takes_missing(model)
        policy: MissingValuePolicy = declared or ("model" if takes_missing else "reject")
        features = tuple(features)
        if policy == "model" and not takes_missing:
            raise ModelRefused(
                f"{owner}: its feature service declares {POLICY_TAG}=model, but "
                f"{type(model).__name__} does not handle missing values; declare reject or "
                "fill, or train a family that does (hist_gradient_boosting)"
            )
        fill = None
        if policy == "fill":
            values = fill_values or {}
            absent = [name for name in features if not math.isfinite(values.get(name, math.nan))]
            if absent:
                raise ModelRefused(
                    f"{owner}: its feature service declares {POLICY_TAG}=fill, but the version "
                    f"records no training median for {', '.join(absent)} (tag "
                    f"{FILL_VALUES_TAG}); retrain it with `churn train`, or declare reject"
                )
            fill = np.array([values[name] for name in features], dtype=np.float64)
        return cls(policy=policy, declared=declared is not None, features=features, fill=fill)

    def describe(self) -> str:
        """One line: the policy and where it comes from."""
        origin = "declared by the feature service" if self.declared else "default"
        return f"missing values: {self.policy} ({origin})"

    def apply(self, matrix: np.ndarray) -> MissingRows:
        """The policy on a float64 matrix (model columns): what to score, what to refuse."""
        missing = np.isnan(matrix)
        if not missing.any():
            return MissingRows(matrix, None, np.zeros(len(matrix), dtype=bool), self.features)
        incomplete = missing.any(axis=1)
        if self.policy == "reject":
            return MissingRows(matrix, missing, incomplete, self.features)
        if self.policy == "fill":
            assert self.fill is not None  # for_model checked it
            matrix = np.where(missing, self.fill, matrix)
        return MissingRows(matrix, missing, np.zeros(len(matrix), dtype=bool), self.features)
