"""Materializing online: progress, the engine's options, the watermark in a SQL registry.

The command itself (incremental by default, keeping Feast's watermark):
tests/cli/test_materialize.py.
"""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

from core.feast_store import feature_store_session
from tests.utils.feast_repo import make_feature_repo
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
