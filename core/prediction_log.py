"""The prediction log's contract: where serving writes it and what monitoring reads back.

Serving appends every prediction as Parquet under ``<root>/date=YYYY-MM-DD/``; ``churn
drift --source predictions`` and ``churn evaluate`` read those partitions. Both sides take
the layout and the columns from here, so they cannot drift apart. The folder is one
setting: ``CHURN_PREDICTION_LOG_DIR`` (:class:`core.settings.DataSettings`).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

REQUEST_ID = "request_id"
USER_ID = "user_id"
TIMESTAMP = "event_timestamp"
MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"
PROBABILITY = "churn_probability"
PREDICTED = "churn_predicted"

# The fixed columns, in order; the model's feature values (float64) follow them.
FIXED_COLUMNS: tuple[str, ...] = (
    REQUEST_ID,
    USER_ID,
    TIMESTAMP,
    MODEL_NAME,
    MODEL_VERSION,
    PROBABILITY,
    PREDICTED,
)

_PARTITION_PREFIX = "date="


def prediction_log_schema(features: tuple[str, ...] | list[str]) -> pa.Schema:
    """Arrow schema of a log file written for a model with these features."""
    import pyarrow as pa

    fixed = [
        pa.field(REQUEST_ID, pa.string()),
        pa.field(USER_ID, pa.int64()),
        pa.field(TIMESTAMP, pa.timestamp("ns", tz="UTC")),
        pa.field(MODEL_NAME, pa.string()),
        pa.field(MODEL_VERSION, pa.string()),
        pa.field(PROBABILITY, pa.float64()),
        pa.field(PREDICTED, pa.bool_()),
    ]
    return pa.schema([*fixed, *(pa.field(name, pa.float64()) for name in features)])


def partition_dir(root: Path, day: date | str) -> Path:
    """The folder of one UTC day's predictions."""
    text = day if isinstance(day, str) else day.isoformat()
    return root / f"{_PARTITION_PREFIX}{text}"


def list_partitions(root: Path) -> list[tuple[date, Path]]:
    """The day partitions under ``root``, oldest first (folders not named ``date=`` skipped)."""
    found = []
    for path in root.glob(f"{_PARTITION_PREFIX}*"):
        try:
            day = date.fromisoformat(path.name.removeprefix(_PARTITION_PREFIX))
        except ValueError:
            continue
        found.append((day, path))
    return sorted(found)
