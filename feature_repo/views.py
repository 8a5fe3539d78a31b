"""Batch feature views over the offline tables."""

from datetime import timedelta

from entities import user
from feast import FeatureView, Field
from feast.types import Float64
from sources import user_features_source

user_features = FeatureView(
    name="user_features",
    entities=[user],
    # Snapshots arrive every few days; a value older than three weeks no longer
    # describes the user and reads as missing in point-in-time joins.
    ttl=timedelta(days=21),
    schema=[
        Field(name="feature_1", dtype=Float64, description="Usage level (non-negative)."),
        Field(name="feature_2", dtype=Float64, description="Engagement score."),
    ],
    online=True,
    source=user_features_source,
    tags={"owner": "data-engineering"},
)
