"""Online features for the prediction service: a feature service resolved once, read fast.

- :mod:`serving.features.plan`: resolving a feature service into a read plan (once per
  model load).
- :mod:`serving.features.reader`: executing a plan per request (direct Redis or the SDK).
- :mod:`serving.features.rows`: the result rows and why a row cannot be scored.
"""

from serving.features.plan import FeaturePlan, FeatureServiceError, resolve_feature_plan
from serving.features.reader import OnlineFeatures
from serving.features.rows import FeatureRows, ProblemKind, RowProblem

__all__ = [
    "FeaturePlan",
    "FeatureRows",
    "FeatureServiceError",
    "OnlineFeatures",
    "ProblemKind",
    "RowProblem",
    "resolve_feature_plan",
]
