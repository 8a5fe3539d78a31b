"""On-demand feature views: derived features computed at read time, online and offline.

Python mode is used because it costs about 0.17 ms per online lookup against 2.3 ms for
pandas mode. Feast re-executes the function source at serving time, so every import must
sit inside the function body.
"""

from typing import Any

from feast import Field
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64
from sources import request_time
from views import user_activity, user_features


@on_demand_feature_view(
    sources=[user_features],
    schema=[Field(name="feature_ratio", dtype=Float64), Field(name="feature_log", dtype=Float64)],
    mode="python",
    description="feature_1 / (feature_2 + 1e-8) and log1p(max(feature_1, 0)).",
)
def user_feature_transforms(inputs: dict[str, Any]) -> dict[str, Any]:
    import math

    def _missing(value: Any) -> bool:
        return value is None or (isinstance(value, float) and math.isnan(value))

    ratios: list[float | None] = []
    logs: list[float | None] = []
    for f1, f2 in zip(inputs["feature_1"], inputs["feature_2"], strict=True):
        ratios.append(None if _missing(f1) or _missing(f2) else float(f1) / (float(f2) + 1e-8))
        logs.append(None if _missing(f1) else math.log1p(max(float(f1), 0.0)))
    return {"feature_ratio": ratios, "feature_log": logs}


@on_demand_feature_view(
    sources=[request_time],
    schema=[
        Field(name="day_of_week_sin", dtype=Float64),
        Field(name="day_of_week_cos", dtype=Float64),
        Field(name="is_weekend", dtype=Int64),
    ],
    mode="python",
    description="Cyclical day of week (Monday = 0) and weekend flag of the request time, in UTC.",
)
def request_time_features(inputs: dict[str, Any]) -> dict[str, Any]:
    import math
    from datetime import datetime, timezone

    def _to_utc(value: Any) -> datetime:
        # Request values are not converted to the declared type: a datetime from Python,
        # epoch seconds or an ISO string through `feast serve` JSON, a pandas Timestamp
        # offline.
        if isinstance(value, datetime):
            return (
                value.astimezone(timezone.utc)
                if value.tzinfo
                else value.replace(tzinfo=timezone.utc)
            )
        if isinstance(value, int | float):
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
        if isinstance(value, str):
            if value.lstrip("-").isdigit():
                return datetime.fromtimestamp(int(value), tz=timezone.utc)
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return (
                parsed.astimezone(timezone.utc)
                if parsed.tzinfo
                else parsed.replace(tzinfo=timezone.utc)
            )
        seconds = getattr(value, "seconds", None)  # a protobuf Timestamp
        if seconds is not None:
            return datetime.fromtimestamp(seconds, tz=timezone.utc)
        raise TypeError(
            f"request field event_timestamp has unsupported type {type(value).__name__}"
        )

    sins: list[float] = []
    coss: list[float] = []
    weekends: list[int] = []
    for value in inputs["event_timestamp"]:
        day = _to_utc(value).weekday()
        sins.append(math.sin(2 * math.pi * day / 7))
        coss.append(math.cos(2 * math.pi * day / 7))
        weekends.append(1 if day >= 5 else 0)
    return {"day_of_week_sin": sins, "day_of_week_cos": coss, "is_weekend": weekends}


@on_demand_feature_view(
    sources=[user_activity, request_time],
    schema=[
        Field(name="events_1h", dtype=Int64),
        Field(name="events_24h", dtype=Int64),
        Field(name="events_7d", dtype=Int64),
        Field(name="minutes_since_last_event", dtype=Int64),
    ],
    mode="python",
    description="Events in the 1 h, 24 h and 7 days before the request's minute, and whole "
    "minutes since the last event's minute (capped at 7 days), from the activity tiles.",
)
def activity_windows(inputs: dict[str, Any]) -> dict[str, Any]:
    import math
    from bisect import bisect_left
    from datetime import datetime, timezone

    # Granularity one minute: a window ending at request time T counts the events of the
    # whole minutes before T's minute, [M - w, M) with M = T floored to the minute. The
    # current minute is left out, so a value never depends on events after T.
    week = 7 * 24 * 60

    def _minute(value: Any) -> int:
        # Request values are not converted to the declared type (see request_time_features).
        if isinstance(value, datetime):
            aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
            return math.floor(aware.timestamp() / 60)
        if isinstance(value, int | float):
            return math.floor(float(value) / 60)
        if isinstance(value, str):
            if value.lstrip("-").isdigit():
                return math.floor(int(value) / 60)
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            aware = parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
            return math.floor(aware.timestamp() / 60)
        seconds = getattr(value, "seconds", None)  # a protobuf Timestamp
        if seconds is not None:
            return math.floor(seconds / 60)
        raise TypeError(
            f"request field event_timestamp has unsupported type {type(value).__name__}"
        )

    def _ints(value: Any) -> list[int]:
        # A list online, a numpy array offline, None (or NaN) where the user has no state.
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return []
        return [int(item) for item in value]

    out: dict[str, list[int]] = {
        "events_1h": [],
        "events_24h": [],
        "events_7d": [],
        "minutes_since_last_event": [],
    }
    for minutes_raw, counts_raw, when in zip(
        inputs["tile_minutes"], inputs["tile_counts"], inputs["event_timestamp"], strict=True
    ):
        minutes = _ints(minutes_raw)
        counts = _ints(counts_raw)
        now = _minute(when)
        end = bisect_left(minutes, now)  # tiles before the request's minute
        totals = [0]
        for count in counts[:end]:
            totals.append(totals[-1] + count)
        for name, width in (("events_1h", 60), ("events_24h", 1440), ("events_7d", week)):
            out[name].append(totals[end] - totals[bisect_left(minutes, now - width, 0, end)])
        out["minutes_since_last_event"].append(min(now - minutes[end - 1], week) if end else week)
    return out
