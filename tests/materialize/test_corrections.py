"""Corrections reach the online store on every profile: newer (event time, created) wins.

Ingest stores a correction with the same event time and a later ``created``; a
re-materialization of the range must then serve the corrected value, in Redis (production,
team with its SQL registry) as in SQLite (embedded).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from feast.value_type import ValueType

from core.feast_store import feature_store_session, open_feature_store
from core.settings import FeastProfile
from materialize.apply import apply_feature_repo
from materialize.ingest import ingest_raw_events
from materialize.online import materialize_online
from tests.utils.data import raw_events
from tests.utils.feast_repo import TestRepo, make_feature_repo
from tests.utils.materialize import FEATURES, VIEW, decode_redis, redis_hashes
from tests.utils.services import redis_client

EVENT = datetime(2026, 5, 1, 10, 0, 0, 250_000, tzinfo=UTC)
LOADED = datetime(2026, 5, 3, tzinfo=UTC)
START, END = EVENT - timedelta(days=1), EVENT + timedelta(days=1)


def _served(repo: TestRepo, users: list[int]) -> dict[int, float | None]:
    with feature_store_session(repo.feast) as store:
        response = store.get_online_features(
            features=[f"{VIEW}:feature_1"], entity_rows=[{"user_id": user} for user in users]
        ).to_dict()
    return dict(zip(response["user_id"], response["feature_1"], strict=True))


@pytest.mark.parametrize("profile", ["production", "embedded", "team"])
def test_a_correction_is_served_after_the_range_is_rematerialized(
    tmp_path: Path,
    feast_project: str,
    redis_available: None,
    request: pytest.FixtureRequest,
    profile: FeastProfile,
) -> None:
    registry_url = request.getfixturevalue("postgres_url") if profile == "team" else None
    repo = make_feature_repo(
        tmp_path, project=feast_project, profile=profile, registry_url=registry_url
    )
    rows = [(1, EVENT, 1.0, 2.0, 0), (2, EVENT, 5.0, 6.0, 1)]
    ingest_raw_events(raw_events(rows), data=repo.data, now=LOADED, backfill=True)
    apply_feature_repo(repo.feast)
    materialize_online(repo.feast, start=START, end=END)
    assert _served(repo, [1, 2]) == {1: 1.0, 2: 5.0}

    # The same key with another value: a correction, created an hour later.
    report = ingest_raw_events(
        raw_events([(1, EVENT, 99.0, 2.0, 0)]), data=repo.data, now=LOADED + timedelta(hours=1)
    )
    assert report.features.corrected == 1
    result = materialize_online(repo.feast, start=START, end=END)

    # SQLite keeps whole seconds, so an equal (event, created) is rewritten (same values)
    # rather than risk skipping a correction made within the same second.
    rewrites = 1 if profile == "embedded" else 0
    assert _served(repo, [1, 2]) == {1: 99.0, 2: 5.0}
    assert result.views[0].written == 1 + rewrites  # the corrected key
    again = materialize_online(repo.feast, start=START, end=END)
    assert again.views[0].written == 2 * rewrites
    assert _served(repo, [1, 2]) == {1: 99.0, 2: 5.0}


def _chunk(users: list[int], events: list[datetime], created: list[datetime], value: float):
    from core.compute.sampling import CREATED_COLUMN, EVENT_COLUMN
    from materialize.engine.encoding import encode_chunk

    table = pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "feature_1": pa.array([value] * len(users), pa.float64()),
            "feature_2": pa.array([value] * len(users), pa.float64()),
            EVENT_COLUMN: pa.array(events, pa.timestamp("us", tz="UTC")),
            CREATED_COLUMN: pa.array(created, pa.timestamp("us", tz="UTC")),
        }
    )
    return encode_chunk(
        table,
        join_keys={"user_id": ValueType.INT64},
        features=dict.fromkeys(FEATURES, ValueType.DOUBLE),
        event_column=EVENT_COLUMN,
    )


def _applied_writer(repo: TestRepo) -> tuple[Any, Any]:
    """Our Redis writer on the applied repo's project, and Feast's Redis client."""
    from core.feast_adapter.store import online_store_of, redis_client
    from materialize.engine.writers import RedisWriter

    apply_feature_repo(repo.feast)
    store = open_feature_store(repo.feast)
    client = redis_client(online_store_of(store), store.config.online_store)
    writer = RedisWriter(
        client,
        project=repo.project,
        view_name=VIEW,
        feature_names=FEATURES,
        ttl_seconds=None,
        batch_rows=10,
        pipeline_batches=2,
        label="test",
    )
    return writer, client


def test_redis_writer_orders_by_event_time_then_created(feature_repo: TestRepo) -> None:
    writer, _ = _applied_writer(feature_repo)
    early, late = EVENT, EVENT + timedelta(hours=1)
    pre_1970 = datetime(1969, 7, 20, 20, 17, tzinfo=UTC)

    assert writer.write(_chunk([1, 2, 3], [early, early, pre_1970], [late, late, late], 1.0)) == 3
    # Same event time: a later created wins, an earlier or equal one does not.
    assert writer.write(_chunk([1], [early], [late + timedelta(microseconds=1)], 2.0)) == 1
    assert writer.write(_chunk([2], [early], [early], 3.0)) == 0
    assert writer.write(_chunk([2], [early], [late], 4.0)) == 0
    # An older event time never wins, whatever its created time.
    assert (
        writer.write(_chunk([1], [early - timedelta(seconds=1)], [late + timedelta(days=9)], 5.0))
        == 0
    )
    # A value stored with negative seconds (before 1970) is older than any later one.
    assert writer.write(_chunk([3], [early], [early], 6.0)) == 1

    online = decode_redis(redis_hashes(feature_repo.project))
    assert {user: values["feature_1"] for user, (_, values) in online.items()} == {
        1: 2.0,
        2: 1.0,
        3: 6.0,
    }


def test_a_key_feast_wrote_without_created_is_upgraded_once(feature_repo: TestRepo) -> None:
    writer, client = _applied_writer(feature_repo)
    writer.write(_chunk([1], [EVENT], [EVENT], 1.0))
    (key,) = redis_hashes(feature_repo.project)
    full_key = key + feature_repo.project.encode()
    client.hdel(full_key, f"_created:{VIEW}")  # as Feast's own engine leaves a key

    assert writer.write(_chunk([1], [EVENT], [EVENT + timedelta(hours=1)], 7.0)) == 1
    assert writer.write(_chunk([1], [EVENT], [EVENT + timedelta(hours=1)], 7.0)) == 0
    assert redis_client().hexists(full_key, f"_created:{VIEW}")
