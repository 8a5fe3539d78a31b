"""FastEngine into the embedded profile's SQLite store: Feast's rows exactly, newer-wins."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from materialize.apply import apply_feature_repo
from materialize.store import open_feature_store, run_feast_cli
from tests.utils.feast_repo import TestRepo, make_feature_repo
from tests.utils.materialize import (
    END,
    FEATURES,
    ISO,
    START,
    VIEW,
    expected_online,
    sqlite_rows,
    use_engine,
    write_offline_table,
)
from tests.utils.services import unique_name


@pytest.fixture
def offline() -> pd.DataFrame:
    """The offline user-features table every test repo of the test reads."""
    return write_offline_table(users=250)


def _embedded(root: Path, engine: str, **options: object) -> TestRepo:
    repo = make_feature_repo(root, project=unique_name("churn_test"), profile="embedded")
    use_engine(repo, engine, **options)
    apply_feature_repo(repo.feast)
    return repo


def _rows(repo: TestRepo) -> dict:
    return sqlite_rows(repo.data.data_dir / "online_store.db", f"{repo.project}_{VIEW}")


def test_writes_the_rows_feast_writes(tmp_path: Path, offline: pd.DataFrame) -> None:
    stock = _embedded(tmp_path / "stock", "stock")
    fast = _embedded(tmp_path / "fast", "fast", chunk_rows=60)
    run_feast_cli(stock.feast, "materialize", START.strftime(ISO), END.strftime(ISO))
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


def test_older_values_never_replace_newer_ones(tmp_path: Path, offline: pd.DataFrame) -> None:
    repo = _embedded(tmp_path, "fast")
    store = open_feature_store(repo.feast)
    store.materialize(START, END)
    newer = _rows(repo)

    store.materialize(START - timedelta(days=30), END - timedelta(days=10))
    after = _rows(repo)

    assert {key: after[key] for key in newer} == newer
    assert len(after) > len(newer)  # users whose only rows are older were added
