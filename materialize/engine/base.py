"""What our two engines share: the per-view skeleton, the stats, the view checks, options.

Both :class:`materialize.engine.FastEngine` and the spark backend's engine
(:mod:`materialize.engine.backends.spark`) materialize a view the same way around their own
fast path: a view they cannot take goes to Feast's own engine of the same kind unchanged,
every view's run is recorded as :class:`MaterializationStats`, and a failure of the fast
path becomes a failed Feast job (Feast raises it once every view has run).
:class:`FallbackEngine` is that skeleton, written once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

from feast import FeatureView
from feast.feature_view import DUMMY_ENTITY_ID
from feast.infra.common.materialization_job import (
    MaterializationJob,
    MaterializationJobStatus,
    MaterializationTask,
)
from feast.infra.registry.base_registry import BaseRegistry
from feast.repo_config import FeastConfigBaseModel
from pydantic import PositiveInt

from core.compute.sampling import SourceColumns
from core.feast_adapter.engine import source_column_names

logger = logging.getLogger(__name__)

# The job class Feast's engine of the same kind returns.
JobT = TypeVar("JobT", bound=MaterializationJob)


class RedisWriteOptions(FeastConfigBaseModel):
    """The Redis writer's options of every engine's ``batch_engine:`` block (declared once)."""

    write_batch_rows: PositiveInt = 1_000
    """Entities per Redis script call (Redis is busy for about 2 ms per 1000 entities)."""

    pipeline_batches: PositiveInt = 4
    """Redis script calls sent per round trip."""


@dataclass(frozen=True)
class MaterializationStats:
    """What one feature view's materialization did."""

    view: str
    start: datetime
    end: datetime
    # "fast" or "spark" (ours), or Feast's engine a view was handed to: "feast-local",
    # "feast-spark".
    engine: str
    entities: int = 0  # latest rows read (one per entity in the range)
    rows_in_range: int = 0
    rejected_rows: int = 0  # rows in the range without a join key
    written: int = 0  # entities written (newer than what was online)
    expired: int = 0  # entities deleted as older than key_ttl_seconds (SQLite)
    chunks: int = 0
    seconds: float = 0.0

    @property
    def skipped(self) -> int:
        """Entities not written because the online value was as new or newer."""
        return self.entities - self.written

    @property
    def by_feast(self) -> bool:
        """Whether Feast's own engine materialized the view (no counts of ours)."""
        return self.engine.startswith("feast-")


def unsupported_view_reason(view: Any) -> str | None:
    """Why our encoder cannot take ``view``, whatever its source (None when it can)."""
    if not isinstance(view, FeatureView):
        return f"{type(view).__name__} is not a plain feature view"
    if getattr(view, "feature_transformation", None) or getattr(view, "aggregations", None):
        return "it has a transformation or aggregations"
    if getattr(view, "offline", False) or getattr(view, "enable_validation", False):
        return "it writes back offline or validates rows"
    if not view.entity_columns:
        return "it has no join keys"
    return None


def source_columns(view: FeatureView, registry: BaseRegistry, project: str) -> SourceColumns:
    """Source columns of the view and the names they take (Feast's field mapping)."""
    entities = [registry.get_entity(name, project) for name in view.entities]
    names = source_column_names(view, entities)
    # Same order as Feast's list of (reverse-mapped) join keys.
    join_names = [entity.join_key for entity in entities if entity.join_key != DUMMY_ENTITY_ID]
    return SourceColumns(
        join_keys=dict(zip(names.join_keys, join_names, strict=True)),
        features=dict(zip(names.features, [f.name for f in view.features], strict=True)),
        timestamp=names.timestamp,
        created=names.created,
    )


def redis_label(connection_string: str) -> str:
    """host:port (and db) of a Feast Redis connection string, without any password."""
    parts = connection_string.split(",")
    nodes = [part for part in parts if "=" not in part]
    databases = [part for part in parts if part.startswith("db=")]
    return ",".join(nodes + databases)


class FallbackEngine(Generic[JobT]):
    """The per-view skeleton of our engines (mixed into a Feast compute engine).

    A subclass names Feast's engine it falls back to and the job class that engine
    returns, and calls :meth:`run_view` from its ``materialize_view``.
    """

    fallback_engine: ClassVar[str]  # the stats' name for Feast's engine, e.g. "feast-local"
    fallback_label: ClassVar[str]  # how the log names it, e.g. "Feast's local engine"
    job_class: Callable[..., JobT]  # the job class of that engine (its constructor)
    results: list[MaterializationStats]

    def run_view(
        self,
        task: MaterializationTask,
        *,
        reason: str | None,
        with_feast: Callable[[], JobT],
        ours: Callable[[], MaterializationStats],
        warn: bool = True,
    ) -> JobT:
        """Materialize one view: ``ours`` when ``reason`` is None, else ``with_feast``.

        Args:
            task: Feast's task for the view.
            reason: Why our fast path cannot take the view (None: it can).
            with_feast: Runs Feast's own engine on the view.
            ours: Runs our fast path on the view and returns its stats.
            warn: Log the hand-over to Feast's engine (off where the caller already said
                why, louder).

        Returns:
            Feast's job for the view: failed (with the error) when ``ours`` raised.
        """
        view = task.feature_view
        if reason is not None:
            if warn:
                logger.warning(
                    "%s: %s materializes it (%s)", view.name, self.fallback_label, reason
                )
            started = time.monotonic()
            job = with_feast()
            self.results.append(
                MaterializationStats(
                    view=view.name,
                    start=task.start_time,
                    end=task.end_time,
                    engine=self.fallback_engine,
                    seconds=time.monotonic() - started,
                )
            )
            return job
        job_id = f"{view.name}-{task.start_time}-{task.end_time}"
        try:
            stats = ours()
        except Exception as error:
            return self.job_class(job_id=job_id, status=MaterializationJobStatus.ERROR, error=error)
        self.results.append(stats)
        return self.job_class(job_id=job_id, status=MaterializationJobStatus.SUCCEEDED)
