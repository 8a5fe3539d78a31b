"""Opening a profile's feature store."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from core.feast_store import open_feature_store, release_feature_store
from tests.utils.feast_repo import make_feature_repo
from tests.utils.services import unique_name

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


def test_a_spark_profile_driver_runs_in_utc_with_its_own_python_on_the_executors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pyspark collects timestamps as naive local times and Feast's Spark store reads the
    # entity range as UTC: a driver in New York would cut the join's last five hours.
    # Executors without PYSPARK_PYTHON ran a bare python3 without pandas (make demo-spark).
    repo = make_feature_repo(tmp_path, project=unique_name("tz"), profile="spark")
    monkeypatch.delenv("PYSPARK_PYTHON", raising=False)
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert time.localtime().tm_gmtoff != 0
        store = open_feature_store(repo.feast)
        release_feature_store(store)
        assert time.localtime().tm_gmtoff == 0
        assert os.environ["PYSPARK_PYTHON"] == sys.executable
    finally:
        monkeypatch.undo()
        time.tzset()
