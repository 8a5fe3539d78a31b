"""Feature services: one versioned service per model."""

from feast import FeatureService
from on_demand_views import activity_windows, request_time_features, user_feature_transforms
from views import user_features

# The seven model features, in the model's column order. Its missing-value policy is not
# declared, so the default applies: `model` for a model that takes missing values (what
# `churn train` registers), `reject` for one that does not. To declare one, add
# "churn.missing_values": "reject" | "model" | "fill" to its tags (docs: ML engineer).
churn_v1 = FeatureService(
    name="churn_v1",
    features=[
        user_features[["feature_1", "feature_2"]],
        user_feature_transforms[["feature_ratio", "feature_log"]],
        request_time_features[["day_of_week_sin", "day_of_week_cos", "is_weekend"]],
    ],
    description="Features of the churn model, version 1.",
    tags={"model": "churn-predictor"},
)

# churn_v1's seven features, then the four streamed activity windows.
churn_v2 = FeatureService(
    name="churn_v2",
    features=[
        user_features[["feature_1", "feature_2"]],
        user_feature_transforms[["feature_ratio", "feature_log"]],
        request_time_features[["day_of_week_sin", "day_of_week_cos", "is_weekend"]],
        activity_windows[["events_1h", "events_24h", "events_7d", "minutes_since_last_event"]],
    ],
    description="Features of the churn model, version 2: version 1 plus streamed activity.",
    tags={"model": "churn-predictor"},
)
