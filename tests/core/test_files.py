"""Durable replacement: the new content is synced before the rename, the folder after it."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from core.files import atomic_path, write_text_atomically

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


class _Recorder:
    """Records fsync and rename calls in order (the real calls still run)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str]] = []
        fsync, replace = os.fsync, os.replace

        def _fsync(descriptor: int) -> None:
            self.calls.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
            fsync(descriptor)

        def _replace(source: str | Path, target: str | Path) -> None:
            self.calls.append(("replace", str(target)))
            replace(source, target)

        monkeypatch.setattr(os, "fsync", _fsync)
        monkeypatch.setattr(os, "replace", _replace)


def _assert_synced_then_renamed(calls: list[tuple[str, str]], target: Path) -> None:
    kinds = [kind for kind, _ in calls]
    assert kinds == ["fsync", "replace", "fsync"], calls
    assert Path(calls[0][1]).parent == target.parent  # the temporary file beside the target
    assert calls[1][1] == str(target)
    assert calls[2][1] == str(target.parent)  # the folder entry of the rename


def test_text_is_synced_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder(monkeypatch)
    target = tmp_path / "report.json"

    write_text_atomically(target, "{}\n")

    assert target.read_text() == "{}\n"
    _assert_synced_then_renamed(recorder.calls, target)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "table.parquet"
    target.write_text("old")

    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("disk full")

    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["table.parquet"]


def test_offline_tables_and_quarantine_are_synced_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from materialize.offline_tables import write_parquet_atomically

    recorder = _Recorder(monkeypatch)
    target = tmp_path / "offline" / "user_features.parquet"

    write_parquet_atomically(pd.DataFrame({"a": [1]}), target)

    _assert_synced_then_renamed(recorder.calls, target)


def test_prediction_log_parts_are_synced_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from serving import prediction_log

    recorder = _Recorder(monkeypatch)
    chunk = prediction_log.LogChunk(
        request_ids=["r1"],
        user_ids=np.array([1], dtype=np.int64),
        timestamps=np.array(["2026-05-01T10:00:00"], dtype="datetime64[ns]"),
        model_name="churn",
        model_version="1",
        probabilities=np.array([0.5]),
        predicted=np.array([True]),
        features=("feature_1", "feature_2"),
        matrix=np.array([[1.0, 2.0]]),
    )
    written = prediction_log._write_chunks(tmp_path, [chunk])

    (part,) = written
    _assert_synced_then_renamed(recorder.calls, part)
