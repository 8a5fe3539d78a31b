"""Batch scoring's checks that need no store: the users file, a dead worker, a moved alias."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.errors import UnavailableError

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


def test_users_files_are_read_as_integer_ids_or_refused(tmp_path: Path) -> None:
    from core.errors import InputError
    from serving.batch import read_users_file

    text = tmp_path / "users.txt"
    text.write_text("3\n1\n\n3\n2\n")
    csv = tmp_path / "users.csv"
    csv.write_text("user_id,segment\n5,a\n4,b\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id\n5\nabc\n4.5\n")

    assert read_users_file(text).tolist() == [1, 2, 3]
    assert read_users_file(csv).tolist() == [4, 5]
    with pytest.raises(InputError, match="2 value\\(s\\) are not integer user ids"):
        read_users_file(bad)


def test_a_scoring_worker_that_dies_is_a_scoring_failure() -> None:
    """The model loads and scores in a second process; if it dies, the run fails (exit 1)."""
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from core.exits import ExitCode, exit_code_for
    from serving.batch.chunks import outcome_of

    died: Future[object] = Future()
    died.set_exception(BrokenProcessPool("a child process terminated abruptly"))

    with pytest.raises(UnavailableError, match="scoring worker process stopped") as raised:
        outcome_of(died)
    assert exit_code_for(raised.value) == ExitCode.FAILURE


def test_an_alias_that_moves_between_lookup_and_load_fails_the_run(tmp_path: Path) -> None:
    """The lookup and the load ask MLflow apart; a promotion in between is not scored."""
    from concurrent.futures import Future

    from core.exits import ExitCode, exit_code_for
    from serving.batch import ScoreOutcome
    from serving.batch.chunks import check_loaded
    from serving.batch.registry import RegisteredVersion
    from serving.batch.worker import LoadedInWorker

    found = RegisteredVersion(
        name="churn-predictor",
        version="1",
        service="churn_v1",
        features=("feature_1",),
        project=None,
    )
    loading: Future[LoadedInWorker] = Future()
    loading.set_result(LoadedInWorker("2", "HistGradientBoostingClassifier", "", 0.1))
    result = ScoreOutcome(
        path=tmp_path / "s.parquet",
        unscored_path=tmp_path / "u.parquet",
        at=pd.Timestamp.now(tz="UTC").to_pydatetime(),
        model_name="churn-predictor",
        model_version="1",
    )

    with pytest.raises(UnavailableError, match="version 1 was looked up but version 2") as raised:
        check_loaded(loading, found, result)
    assert exit_code_for(raised.value) == ExitCode.FAILURE
