"""Batch feature views over the offline tables."""

from datetime import timedelta

from entities import user
from feast import FeatureView, Field
from feast.types import Array, Float64, Int64
from sources import user_activity_push, user_features_source

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

# The state of a user's activity: per-minute event counts (tiles) over the last 7 days
# before the newest event. The windowed features are computed from it at the request time
# (on_demand_views.activity_windows), so a quiet user's counts fall without a new write.
user_activity = FeatureView(
    name="user_activity",
    entities=[user],
    # No ttl: an old state still answers (its windows are empty), online and offline alike.
    ttl=timedelta(0),
    schema=[
        Field(
            name="tile_minutes",
            dtype=Array(Int64),
            description="Epoch minutes with at least one event, ascending (7 days kept).",
        ),
        Field(name="tile_counts", dtype=Array(Int64), description="Events in each minute."),
    ],
    # Not materialized by Feast (online=False means exactly that): `churn stream` writes
    # it online as events arrive, and push sources write it too; reads work either way.
    online=False,
    source=user_activity_push,
    tags={"owner": "data-engineering", "written_by": "churn stream"},
)
