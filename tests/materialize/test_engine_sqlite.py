"""FastEngine into the embedded profile's SQLite store: Feast's rows exactly, newer-wins."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from core.feast_store import open_feature_store
from tests.utils.feast_repo import TestRepo
from tests.utils.materialize import (
    END,
    FEATURES,
    START,
    VIEW,
    AppliedRepo,
    applied_repo_fixture,
    engine_results,
    expected_online,
    sqlite_rows,
    use_engine,
    write_user_features,
)

applied = applied_repo_fixture("embedded")


@pytest.fixture
def repo(applied: AppliedRepo) -> TestRepo:
    """The applied repo, fresh: empty online table, no materialization recorded."""
    return applied.fresh()


@pytest.fixture
def offline(applied: AppliedRepo) -> pd.DataFrame:
    """The offline user-features table the repo reads."""
    return applied.write_table(users=250)


def _rows(repo: TestRepo) -> dict:
    return sqlite_rows(repo.data.data_dir / "online_store.db", f"{repo.project}_{VIEW}")


def test_writes_the_rows_feast_writes(
    tmp_path: Path, repo: TestRepo, offline: pd.DataFrame
) -> None:
    stock = AppliedRepo(tmp_path, profile="embedded").fresh()
    use_engine(stock, "stock")
    write_user_features(stock.data.user_features_path, offline)
    open_feature_store(stock.feast).materialize(START, END)  # Feast's local engine
    fast = repo
    use_engine(fast, "fast", chunk_rows=60)
    open_feature_store(fast.feast).materialize(START, END)

    expected = expected_online(offline, start=START, end=END)
    ours = _rows(fast)
    assert ours == _rows(stock)  # every column: value, value_text, event_ts, created_ts
    assert len(ours) == len(expected) * len(FEATURES)
    users = sorted(offline["user_id"].unique().tolist())
    rows = [{"user_id": user, "event_timestamp": END} for user in users]
    refs = [f"{VIEW}:{name}" for name in FEATURES]
    read = {}
    for repo in (stock, fast):
        store = open_feature_store(repo.feast)
        read[repo.project] = (
            store.get_online_features(features=refs, entity_rows=rows).to_dict(
                include_event_timestamps=True
            ),
            store.get_online_features(
                features=store.get_feature_service("churn_v1"), entity_rows=rows
            ).to_dict(),
        )
    assert read[fast.project] == read[stock.project]
    view = read[fast.project][0]
    for index, user in enumerate(users):
        event_time, values = expected.get(user, (None, dict.fromkeys(FEATURES)))
        assert {name: view[name][index] for name in FEATURES} == values
        if event_time is not None:
            assert view["feature_1__ts"][index] == int(event_time.timestamp())


def test_older_values_never_replace_newer_ones(repo: TestRepo, offline: pd.DataFrame) -> None:
    store = open_feature_store(repo.feast)
    store.materialize(START, END)
    newer = _rows(repo)

    store.materialize(START - timedelta(days=30), END - timedelta(days=10))
    after = _rows(repo)

    assert {key: after[key] for key in newer} == newer
    assert len(after) > len(newer)  # users whose only rows are older were added
    store.materialize(START - timedelta(days=400), START - timedelta(days=300))  # no rows
    assert _rows(repo) == after


def test_rows_older_than_the_key_ttl_are_deleted_after_a_run(
    repo: TestRepo, offline: pd.DataFrame
) -> None:
    from tests.utils.materialize import latest_rows

    use_engine(repo, "fast", key_ttl_seconds=11 * 86_400)
    store = open_feature_store(repo.feast)
    store.materialize(START, END)
    latest = latest_rows(offline, start=START, end=END)
    assert len({key for key, _ in _rows(repo)}) == len(latest)

    # Ten days later, with no new rows: users whose latest value is older than 11 days
    # before the end go; the run's own range is [END, END + 10 days], so nothing protects them.
    later = END + timedelta(days=10)
    stats = _materialize_stats(store, END, later)[-1]

    latest = latest_rows(offline, start=START, end=later)  # user 1 has a row after END
    stale = latest["event_timestamp"] < pd.Timestamp(later - timedelta(days=11))
    assert 0 < stale.sum() < len(latest)
    assert stats.expired == int(stale.sum())
    assert len({key for key, _ in _rows(repo)}) == int((~stale).sum())


def test_a_backfill_of_an_old_range_is_not_expired(repo: TestRepo, offline: pd.DataFrame) -> None:
    use_engine(repo, "fast", key_ttl_seconds=86_400)
    store = open_feature_store(repo.feast)

    stats = _materialize_stats(store, START, END)[-1]

    assert stats.expired == 0  # every row is inside the run's own range
    assert stats.written == len({key for key, _ in _rows(repo)})


def _materialize_stats(store: object, start: object, end: object) -> list:
    store.materialize(start, end)  # type: ignore[attr-defined]
    return engine_results(store)
