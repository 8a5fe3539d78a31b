"""Stage metrics: one textfile per stage and key, or a push; never a failed command."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.stage_metrics import (
    MetricsSettings,
    ViewRun,
    record_materialization,
    record_training,
)
from tests.utils.pushgateway import running_gateway
from tests.utils.workflow import read_textfile

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


def _run(view: str, written: int) -> ViewRun:
    return ViewRun(view=view, written=written, rows_in_range=written * 2, ttl_seconds=60, end=5)


def test_each_view_keeps_its_own_textfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURN_METRICS_TEXTFILE_DIR", str(tmp_path))
    record_materialization([_run("a", 3), _run("b", 4)], now=100.0)
    record_materialization([_run("a", 7)], now=200.0)  # an hourly run of view a only
    a = read_textfile(tmp_path / "materialize_a.prom")
    b = read_textfile(tmp_path / "materialize_b.prom")
    assert a['churn_materialize_last_success_timestamp_seconds{view="a"}'] == 200.0
    assert a['churn_materialize_rows_written{view="a"}'] == 7
    assert b['churn_materialize_last_success_timestamp_seconds{view="b"}'] == 100.0
    assert b['churn_materialize_rows_in_range{view="b"}'] == 8


def test_textfiles_default_to_the_data_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CHURN_DATA_DIR", str(tmp_path / "data"))
    assert MetricsSettings().resolved_textfile_dir() == tmp_path / "data" / "metrics"
    target = record_training(outcome="below_gate", test_auc=0.7, min_auc=0.78)
    assert target == str(tmp_path / "data" / "metrics" / "training.prom")
    metrics = read_textfile(Path(target))
    assert metrics['churn_training_last_outcome{outcome="below_gate"}'] == 1
    assert metrics['churn_training_last_outcome{outcome="promoted"}'] == 0
    assert metrics["churn_training_test_roc_auc"] == 0.7


def test_pushed_per_stage_and_key_when_a_pushgateway_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_METRICS_TEXTFILE_DIR", str(tmp_path))
    with running_gateway() as (address, received):
        monkeypatch.setenv("CHURN_METRICS_PUSHGATEWAY_URL", address)
        assert record_materialization([_run("user_features", 3)]) == [address]
    [(method, path, body)] = received
    assert (method, path) == ("PUT", "/metrics/job/churn/stage/materialize/view/user_features")
    assert b"churn_materialize_rows_written" in body
    assert not list(tmp_path.iterdir())


def test_unreachable_pushgateway_and_unwritable_folder_only_warn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHURN_METRICS_PUSHGATEWAY_URL", "127.0.0.1:9")  # refused
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("CHURN_METRICS_TEXTFILE_DIR", str(blocker / "metrics"))
    assert record_training(outcome="failed", test_auc=None, min_auc=0.78) is None
    err = capsys.readouterr().err
    assert "warning: could not push training metrics to 127.0.0.1:9" in err
    assert f"warning: could not write training metrics to {blocker / 'metrics'}" in err
