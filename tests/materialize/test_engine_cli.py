"""`churn materialize`: Feast-driven, incremental by default, keeps Feast's watermark."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import build_app
from core.feast_store import feature_store_session, open_feature_store, run_feast_cli
from tests.utils.feast_repo import TestRepo, make_feature_repo
from tests.utils.materialize import (
    END,
    ISO,
    START,
    VIEW,
    AppliedRepo,
    applied_repo_fixture,
    decode_redis,
    expected_online,
    redis_hashes,
    write_offline_table,
)

MIDDLE = END - timedelta(days=10)


applied = applied_repo_fixture()


def _point_churn_at(repo: TestRepo, monkeypatch: pytest.MonkeyPatch) -> TestRepo:
    monkeypatch.setenv("CHURN_FEAST_REPO_PATH", str(repo.feast.repo_path))
    monkeypatch.setenv("CHURN_REDIS_URL", repo.feast.redis_url)
    return repo


@pytest.fixture
def repo(applied: AppliedRepo, monkeypatch: pytest.MonkeyPatch) -> TestRepo:
    """The applied repo, fresh, with `churn` pointed at it through the environment."""
    return _point_churn_at(applied.fresh(), monkeypatch)


def _churn(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(build_app(), list(args))
    return result.exit_code, result.stdout, result.stderr


def test_range_then_incremental_then_feast_incremental(
    applied: AppliedRepo, repo: TestRepo
) -> None:
    offline = applied.write_table(users=200)
    later = END + timedelta(hours=2)  # user 1 has a row at END + 1h

    code, out, _ = _churn(
        "materialize", "--start", START.strftime(ISO), "--end", MIDDLE.strftime(ISO)
    )
    assert code == 0, out
    assert "user_features: " in out and "entities written" in out
    code, out, _ = _churn("materialize", "--end", END.strftime(ISO))  # incremental
    assert code == 0, out
    feast = run_feast_cli(repo.feast, "materialize-incremental", later.strftime(ISO))

    assert "2026-03-02 12:00:00+00:00" in feast.stdout  # Feast starts where churn ended
    view = open_feature_store(repo.feast).get_feature_view(VIEW)
    assert view.materialization_intervals == [(START, MIDDLE), (MIDDLE, END), (END, later)]
    online = decode_redis(redis_hashes(repo.project))
    assert online == expected_online(offline, start=START, end=later)


def test_bad_requests_exit_2_naming_the_problem(
    feature_repo: TestRepo, applied: AppliedRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    _point_churn_at(feature_repo, monkeypatch)  # never applied
    code, _, err = _churn("materialize", "--start", "2026-03-02", "--end", "2026-03-01")
    assert code == 2 and "is after" in err
    code, _, err = _churn("materialize", "--end", "yesterday")
    assert code == 2 and "'yesterday' is not an ISO date" in err
    code, _, err = _churn("materialize", "--end", END.strftime(ISO))
    assert code == 2 and "run `churn apply` first" in err

    _point_churn_at(applied.fresh(), monkeypatch)
    code, _, err = _churn("materialize", "--view", "nope", "--end", END.strftime(ISO))
    assert code == 2 and "unknown feature view(s) nope" in err


def test_written_counts_are_reported(applied: AppliedRepo, repo: TestRepo) -> None:
    frame = applied.write_table(users=50)

    code, out, _ = _churn("materialize", "--start", START.strftime(ISO), "--end", END.strftime(ISO))

    assert code == 0
    entities = len(expected_online(frame, start=START, end=END))
    assert f"user_features: {entities:,} entities written (0 not newer than online)" in out
    assert "with profile production (engine materialize.engine.FastEngine)" in out


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
