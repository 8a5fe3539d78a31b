"""The champion lock of a SQLite store: a file lock beside the database."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.utils.locks import assert_serializes

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


def test_the_sqlite_lock_is_a_file_lock_beside_the_database(tmp_path: Path) -> None:
    assert_serializes(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "unused")
    assert (tmp_path / "mlflow.db.champion_m.lock").exists()
    assert not (tmp_path / "unused").exists()
