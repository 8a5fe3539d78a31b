"""`churn evaluate`: predictions joined with late labels, ROC AUC and calibration."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from tests.utils.monitoring import START, write_parquet, write_prediction_log

CHURN = str(Path(sys.executable).with_name("churn"))
T = pd.Timestamp(START)


def test_evaluate_command_end_to_end(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    users = np.arange(1, 201)
    snapshots = pd.DataFrame(
        {
            "user_id": np.tile(users, 3),
            "event_timestamp": np.repeat([T, T + timedelta(days=3), T + timedelta(days=6)], 200),
        }
    )
    snapshots["event_timestamp"] = pd.to_datetime(snapshots["event_timestamp"], utc=True)
    scores = rng.random(len(snapshots))
    snapshots["label"] = (rng.random(len(snapshots)) < scores).astype(np.int64)
    write_parquet(snapshots, tmp_path / "data" / "offline" / "labels.parquet")
    write_prediction_log(
        tmp_path / "data", snapshots, scores=scores, features=[], delay=timedelta(hours=5)
    )
    out = tmp_path / "out"
    completed = subprocess.run(
        [CHURN, "evaluate", "--window", "7d", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    document = json.loads((out / "evaluation.json").read_text())
    expected = roc_auc_score(snapshots["label"], scores)
    assert document["roc_auc"] == pytest.approx(expected)
    assert document["matched"] == 600 and document["unmatched"] == 0
    assert f"ROC AUC {expected:.4f}" in completed.stdout
    assert "version 1: 600 rows" in completed.stdout

    below = subprocess.run(
        [CHURN, "evaluate", "--min-auc", "0.99"], capture_output=True, text=True, timeout=120
    )
    assert below.returncode == 4
    too_late = subprocess.run(
        [CHURN, "evaluate", "--until", "2026-01-01"], capture_output=True, text=True, timeout=120
    )
    assert too_late.returncode == 2
    assert "error: no prediction files" in too_late.stderr


def test_evaluate_reads_the_log_where_serving_was_told_to_write_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One variable moves the log for serving and for its readers alike.
    snapshots = pd.DataFrame(
        {"user_id": np.arange(1, 101), "event_timestamp": pd.Timestamp(T).tz_convert("UTC")}
    )
    snapshots["label"] = np.arange(100) % 2
    write_parquet(snapshots, tmp_path / "data" / "offline" / "labels.parquet")
    elsewhere = tmp_path / "mounted"
    write_prediction_log(
        elsewhere, snapshots, scores=np.linspace(0, 1, 100), features=[], delay=timedelta(hours=1)
    )
    monkeypatch.setenv("CHURN_PREDICTION_LOG_DIR", str(elsewhere / "predictions"))

    completed = subprocess.run(
        [CHURN, "evaluate", "--window", "7d"], capture_output=True, text=True, timeout=120
    )

    assert completed.returncode == 0, completed.stderr
    assert "version 1: 100 rows" in completed.stdout
