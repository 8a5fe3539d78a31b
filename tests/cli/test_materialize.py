"""The data engineer's commands: options, output and exit codes.

`churn generate`, `ingest`, `apply`, `materialize` and `skew-check` (cli/materialize.py);
what the stage does behind them is tested in tests/materialize/.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import build_app
from core.exits import ExitCode
from core.feast_store import open_feature_store, run_feast_cli
from core.settings import DataSettings
from materialize.generate import generate_raw_events
from tests.utils.data import GOOD_ROWS_START, good_rows, raw_events, write_raw_events
from tests.utils.feast_repo import TestRepo, tamper_registry
from tests.utils.materialize import (
    END,
    ISO,
    START,
    VIEW,
    AppliedRepo,
    applied_repo_fixture,
    corrupt_online_feature_2,
    decode_redis,
    expected_online,
    point_churn_at,
    redis_hashes,
)

MIDDLE = END - timedelta(days=10)
SKEW_USERS = 120

applied = applied_repo_fixture()


def _churn(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(build_app(), list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def repo(applied: AppliedRepo, monkeypatch: pytest.MonkeyPatch) -> TestRepo:
    """The applied repo, fresh, with `churn` pointed at it through the environment."""
    return point_churn_at(applied.fresh(), monkeypatch)


@pytest.fixture
def materialized(applied: AppliedRepo, monkeypatch: pytest.MonkeyPatch) -> TestRepo:
    """The applied repo with a fresh offline table materialized over [START, END]."""
    applied.write_table(users=SKEW_USERS)
    repo = point_churn_at(applied.fresh(), monkeypatch)
    open_feature_store(repo.feast).materialize(START, END)
    return repo


# --- churn generate ---------------------------------------------------------------------------


@pytest.mark.unit
def test_generate_writes_the_file_and_reports_it(tmp_path: Path) -> None:
    out = tmp_path / "raw.parquet"
    arguments = ["generate", "--users", "20", "--days", "14", "--end", "2026-06-01"]
    result = CliRunner().invoke(build_app(), [*arguments, "--seed", "3", "--out", str(out)])

    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert f"wrote {len(frame)} rows of 20 users" in result.output
    assert str(out) in result.output
    pd.testing.assert_frame_equal(
        frame, generate_raw_events(users=20, days=14, end="2026-06-01", seed=3)
    )


@pytest.mark.unit
def test_generate_default_output_is_in_the_data_dir_and_not_in_the_future(
    tmp_path: Path,
) -> None:
    result = CliRunner().invoke(build_app(), ["generate", "--users", "5", "--days", "7"])

    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(tmp_path / "data" / "raw" / "events.parquet")
    assert frame["event_date"].max() < pd.Timestamp.now(tz="UTC")


@pytest.mark.unit
def test_generate_rejects_a_bad_shift(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        build_app(), ["generate", "--shift", "label=1", "--out", str(tmp_path / "x.parquet")]
    )

    assert result.exit_code == 2
    assert "FEATURE=SD" in result.output
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.unit
def test_generate_null_rate_default_is_the_stage_default() -> None:
    from cli.materialize import DEFAULT_NULL_RATE
    from materialize.generate import DEFAULT_NULL_RATE as STAGE_DEFAULT

    assert DEFAULT_NULL_RATE == STAGE_DEFAULT


# --- churn ingest -----------------------------------------------------------------------------


@pytest.mark.unit
def test_ingest_ingests_and_reports(tmp_path: Path) -> None:
    rows = [
        *good_rows(4, start=datetime(2026, 1, 5, tzinfo=UTC)),
        (None, GOOD_ROWS_START, 1.0, 1.0, 0),
    ]
    path = write_raw_events(tmp_path / "raw.parquet", raw_events(rows))

    result = CliRunner().invoke(build_app(), ["ingest", str(path)])

    assert result.exit_code == 0, result.output
    assert f"read 5 rows from {path}" in result.output
    assert "user features: 4 new, 0 corrected, 0 already present" in result.output
    assert "quarantined: 1 (null_user_id 1," in result.output
    assert len(pd.read_parquet(DataSettings().user_features_path)) == 4


@pytest.mark.unit
def test_ingest_exit_codes_on_bad_input(tmp_path: Path) -> None:
    frame = raw_events(good_rows(2)).drop(columns=["event_date"])
    path = write_raw_events(tmp_path / "raw.parquet", frame)

    schema = CliRunner().invoke(build_app(), ["ingest", str(path)])
    missing = CliRunner().invoke(build_app(), ["ingest", str(tmp_path / "none.parquet")])

    assert schema.exit_code == ExitCode.BAD_INPUT == 2
    assert "missing column(s): event_date" in schema.output
    assert missing.exit_code == ExitCode.FAILURE == 1
    assert "no such file" in missing.output
    assert not DataSettings().offline_dir.exists()


@pytest.mark.unit
def test_ingest_exits_0_on_ids_beyond_int64(tmp_path: Path) -> None:
    path = tmp_path / "raw.csv"
    path.write_text(
        "user_id,feature_1,feature_2,label,event_date\n"
        f"{2**64},1.0,2.0,0,2026-05-01T10:00:00Z\n"
        "3,1.0,2.0,0,2026-05-01T10:00:00Z\n"
    )

    result = CliRunner().invoke(build_app(), ["ingest", str(path)])

    assert result.exit_code == 0, result.output
    assert "unrepresentable_user_id 1" in result.output


@pytest.mark.unit
def test_ingest_backfill_flag(tmp_path: Path) -> None:
    path = write_raw_events(tmp_path / "raw.parquet", raw_events(good_rows(2)))

    result = CliRunner().invoke(build_app(), ["ingest", "--backfill", str(path)])

    assert result.exit_code == 0, result.output
    assert "back-fill: 2 new rows declared available at their event time" in result.output
    features = pd.read_parquet(DataSettings().user_features_path)
    assert (features["created"] == features["event_timestamp"]).all()


# --- churn apply ------------------------------------------------------------------------------


def test_apply_registers_the_repo_and_a_failing_apply_exits_1_with_feasts_output(
    feature_repo: TestRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_churn_at(feature_repo, monkeypatch)
    monkeypatch.setenv("CHURN_DATA_DIR", str(feature_repo.data.data_dir))

    code, out, _ = _churn("apply")

    assert code == 0, out
    assert f"applied {feature_repo.feast.repo_path} with profile production" in out
    assert "user_features" in {
        view.name for view in open_feature_store(feature_repo.feast).list_feature_views()
    }

    (feature_repo.feast.repo_path / "broken.py").write_text(
        "raise RuntimeError('broken definitions')\n"
    )
    code, _, err = _churn("apply")

    assert code == ExitCode.FAILURE == 1
    assert err.startswith("error: feast apply failed:") and "broken definitions" in err


# --- churn materialize ------------------------------------------------------------------------


def test_materialize_a_range_then_incrementally_then_feast_incrementally(
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


def test_materialize_bad_requests_exit_2_naming_the_problem(
    feature_repo: TestRepo, applied: AppliedRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_churn_at(feature_repo, monkeypatch)  # never applied
    code, _, err = _churn("materialize", "--start", "2026-03-02", "--end", "2026-03-01")
    assert code == 2 and "is after" in err
    code, _, err = _churn("materialize", "--end", "yesterday")
    assert code == 2 and "'yesterday' is not an ISO date" in err
    code, _, err = _churn("materialize", "--end", END.strftime(ISO))
    assert code == 2 and "run `churn apply` first" in err

    point_churn_at(applied.fresh(), monkeypatch)
    code, _, err = _churn("materialize", "--view", "nope", "--end", END.strftime(ISO))
    assert code == 2 and "unknown feature view(s) nope" in err


def test_materialize_reports_the_written_counts(applied: AppliedRepo, repo: TestRepo) -> None:
    frame = applied.write_table(users=50)

    code, out, _ = _churn("materialize", "--start", START.strftime(ISO), "--end", END.strftime(ISO))

    assert code == 0
    entities = len(expected_online(frame, start=START, end=END))
    assert f"user_features: {entities:,} entities written (0 not newer than online)" in out
    assert "with profile production (engine materialize.engine.FastEngine)" in out


@pytest.mark.unit
def test_materialize_reports_counts_for_either_engine_of_ours_and_names_feasts() -> None:
    from cli.materialize import _view_summary
    from materialize.engine import MaterializationStats

    def stats(engine: str) -> MaterializationStats:
        return MaterializationStats(
            view=VIEW, start=START, end=END, engine=engine, entities=7, written=5, seconds=1.0
        )

    for ours in ("fast", "spark"):
        assert _view_summary(stats(ours)).startswith(
            f"{VIEW}: 5 entities written (2 not newer than online)"
        )
    assert _view_summary(stats("feast-spark")) == (
        f"{VIEW}: materialized by Feast's feast-spark engine in 1.0 s"
    )


# --- churn skew-check -------------------------------------------------------------------------


def test_skew_check_agrees_after_materialization(materialized: TestRepo) -> None:
    code, out, _ = _churn("skew-check", "--sample", "40", "--seed", "3")

    assert code == 0, out
    assert "on 40 entities" in out and "OK: online and offline agree" in out


def test_skew_check_exits_1_naming_a_wrong_online_value(materialized: TestRepo) -> None:
    user = corrupt_online_feature_2(materialized, 12345.0)

    code, out, err = _churn("skew-check", "--sample", "1000", "--seed", "1")

    assert code == 1
    assert f"feature_2: {{'user_id': {user}}} online=12345.0" in out
    assert "FAIL: 2 mismatching values" in err


def test_skew_check_before_materializing_exits_2(repo: TestRepo) -> None:
    code, _, err = _churn("skew-check", "--sample", "5")

    assert code == 2 and "never materialized" in err


def test_skew_check_refuses_a_tampered_registry_without_running_its_code(
    materialized: TestRepo, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    tamper_registry(materialized, "user_feature_transforms", f"\nopen({str(marker)!r}, 'w')\n")

    code, out, err = _churn("skew-check", "--sample", "20", "--seed", "1")

    assert code == ExitCode.BAD_INPUT == 2, out + err
    assert "on-demand view code that Feast would execute" in err
    assert "user_feature_transforms: the registry's code differs" in err
    assert "mismatches" not in out  # refused before comparing anything
    assert not marker.exists()
