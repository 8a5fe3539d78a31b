"""Entity samples and the latest row per entity: the protocol, and what both backends share.

- :meth:`SamplingCompute.sample_entities`: random distinct entities of a feature view's
  source, seeded (``churn skew-check``); :meth:`SamplingCompute.point_in_time_values`: the
  offline values of a feature service for those entities at one time.
- The latest row per entity inside a range is what materialization writes online. The
  local backend reads it in bounded chunks (``ParquetLatestReader`` in
  :mod:`core.compute.local.sampling`); on the spark profile the materialization engine's
  executors pick it while they write (``materialize.engine.backends``), since what they
  write is the stage's. Both name the rows' times :data:`EVENT_COLUMN` and
  :data:`CREATED_COLUMN`.

Spark executors import this module (for the column names) and must not import Feast: it
is imported only inside the functions that need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureService, FeatureView

# Names of the time columns in every chunk of latest rows (timestamps as stored; aware ones
# in UTC), for the local reader and the Spark executors alike.
EVENT_COLUMN = "__event_ts"
CREATED_COLUMN = "__created_ts"


@dataclass(frozen=True)
class SourceColumns:
    """Which source columns to read, and the feature-view names they take (field mapping)."""

    join_keys: dict[str, str]  # source column -> join key name
    features: dict[str, str]  # source column -> feature name
    timestamp: str
    created: str | None


@dataclass(frozen=True)
class EntityColumns:
    """A view's join keys and event time as its batch source names them."""

    join_keys: dict[str, str]  # source column -> join key name (the dummy entity left out)
    timestamp: str  # the source's event-time column


def entity_columns(view: FeatureView) -> EntityColumns:
    """The source columns of a view's join keys and event time (field mapping undone).

    Raises:
        ValueError: The view has no batch source.
    """
    from feast.feature_view import DUMMY_ENTITY_ID

    source = view.batch_source
    if source is None:
        raise ValueError(f"feature view {view.name} has no batch source")
    reverse = {mapped: column for column, mapped in (source.field_mapping or {}).items()}
    return EntityColumns(
        join_keys={
            reverse.get(column.name, column.name): column.name
            for column in view.entity_columns
            if column.name != DUMMY_ENTITY_ID
        },
        timestamp=reverse.get(source.timestamp_field, source.timestamp_field),
    )


class SamplingCompute(Protocol):
    """Entity samples and the offline values of sampled entities (``churn skew-check``)."""

    def sample_entities(
        self, view: FeatureView, *, at: datetime, size: int, seed: int
    ) -> list[dict[str, Any]]:
        """Up to ``size`` random distinct entities with a source row at or before ``at``.

        The same seed on the same source gives the same entities. Each entity is a dict of
        join key to value.

        Raises:
            InputError: The backend cannot read the view's source.
            OfflineSourceError: The source cannot be read.
        """
        ...

    def point_in_time_values(
        self,
        entity_rows: pd.DataFrame,
        *,
        service: FeatureService,
        columns: list[str],
        label: str,
    ) -> pd.DataFrame:
        """The service's point-in-time values for the entity rows, as one pandas frame.

        Args:
            entity_rows: Join keys, ``event_timestamp`` and request fields, one row each.
            service: The feature service to retrieve (on-demand features included).
            columns: The columns to keep (join keys and feature names).
            label: Prefix of anything staged on the way (the spark backend stages).

        Returns:
            One row per entity row, in the join's own order.
        """
        ...
