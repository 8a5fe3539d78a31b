"""Materializing online: progress, the engine's options, the watermark in a SQL registry.

The command itself (incremental by default, keeping Feast's watermark):
tests/cli/test_materialize.py.
"""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest

from core.compute.local.sampling import ChunkPlan
from core.feast_store import feature_store_session, open_feature_store
from materialize.engine.progress import BarProgress, LogProgress, make_progress
from tests.utils.feast_repo import TestRepo, make_feature_repo
from tests.utils.materialize import (
    END,
    START,
    VIEW,
    decode_redis,
    expected_online,
    redis_hashes,
    write_offline_table,
)

MIDDLE = END - timedelta(days=10)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "kind"), [(_Terminal(), BarProgress), (io.StringIO(), LogProgress)]
)
def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere(
    stream: io.StringIO, kind: type
) -> None:
    progress = make_progress(stream)
    progress.start("user_features", ChunkPlan(entities=10, rows=12, rejected_rows=1, chunks=2))
    progress.advance(6)
    progress.advance(4)
    progress.finish(written=9, skipped=1)

    assert type(progress) is kind
    text = stream.getvalue()
    assert "10 entities (12 rows in range, 1 rejected without a join key)" in text
    assert "wrote 9 entities (1 not newer than online)" in text
    assert "rows/s" in text
    if kind is LogProgress:
        assert "chunk 2/2: 10/10 rows (100%)" in text
    else:
        assert "━" in text  # rich's bar


def test_engine_options_are_validated(feature_repo: TestRepo) -> None:
    from pydantic import ValidationError

    from materialize.engine import ENGINE_TYPE, FastEngine, FastEngineConfig

    stores = {"repo_config": None, "offline_store": None, "online_store": None}
    with pytest.raises(ValidationError, match="chunk_row\n"):
        FastEngine(**stores, type=ENGINE_TYPE, chunk_row=5)  # misspelt
    with pytest.raises(ValidationError, match="chunk_rows"):
        FastEngine(**stores, type=ENGINE_TYPE, chunk_rows=0)
    assert FastEngine(**stores, type=ENGINE_TYPE, chunk_rows=7).config.chunk_rows == 7
    # The shipped profiles select the engine, and Feast finds its config class.
    for profile in ("production", "embedded"):
        settings = feature_repo.feast.model_copy(update={"profile": profile})
        config = open_feature_store(settings).config.batch_engine
        assert isinstance(config, FastEngineConfig) and config.type == ENGINE_TYPE


def test_team_profile_records_the_watermark_in_the_sql_registry(
    tmp_path: Path, feast_project: str, postgres_url: str, redis_available: None
) -> None:
    from materialize.apply import apply_feature_repo
    from materialize.online import materialize_online

    repo = make_feature_repo(
        tmp_path, project=feast_project, profile="team", registry_url=postgres_url
    )
    offline = write_offline_table(users=60)
    apply_feature_repo(repo.feast)

    result = materialize_online(repo.feast, start=START, end=MIDDLE)
    materialize_online(repo.feast, end=END)  # incremental, from the registry's watermark

    (stats,) = result.views
    assert stats.engine == "fast" and stats.written > 0
    with feature_store_session(repo.feast) as store:
        view = store.get_feature_view(VIEW)
    assert view.materialization_intervals == [(START, MIDDLE), (MIDDLE, END)]
    online = decode_redis(redis_hashes(feast_project))
    assert online == expected_online(offline, start=START, end=END)
