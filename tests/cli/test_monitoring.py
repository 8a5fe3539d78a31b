"""`churn drift` and `churn evaluate` as users run them: options, output and exit codes.

Two Parquet files for drift (the champion's windows: tests/monitoring/test_drift_snapshots.py),
a prediction log and a labels table for evaluate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from tests.utils.monitoring import START, make_feature_frame, write_parquet, write_prediction_log

CHURN = str(Path(sys.executable).with_name("churn"))
T = pd.Timestamp(START)


def _drift(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHURN, "drift", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    reference = write_parquet(make_feature_frame(3000, seed=1), tmp_path / "reference.parquet")
    current = write_parquet(
        make_feature_frame(3000, seed=2, feature_2_shift=2.0), tmp_path / "current.parquet"
    )
    same = write_parquet(make_feature_frame(3000, seed=1), tmp_path / "same.parquet")
    return reference, current, same


def test_shifted_files_exit_4_and_write_all_reports(files, tmp_path: Path) -> None:
    reference, current, _ = files
    out = tmp_path / "out"
    completed = _drift("--reference", str(reference), "--current", str(current), "--out", str(out))
    assert completed.returncode == 4, completed.stderr
    assert "drift: major (major: feature_2, feature_ratio; minor: none)" in completed.stdout
    assert f"report: {out / 'drift.html'}" in completed.stdout
    document = json.loads((out / "drift.json").read_text())
    assert document["summary"]["major"] == ["feature_2", "feature_ratio"]
    assert document["summary"]["sources"]["current"] == {"file": str(current)}
    assert (out / "drift.prom").read_text().count("churn_drift_severity{") == 7
    assert f"<b>current</b>: file: {current}</li>" in (out / "drift.html").read_text()
    assert all(
        f'id="{item["feature"]}"' in (out / "drift.html").read_text()
        for item in document["features"]
    )
    # The domain classifier sees the shift and names the shifted feature first.
    multivariate = document["summary"]["multivariate"]
    assert multivariate["status"] == "ok" and multivariate["severity"] != "none"
    assert multivariate["auroc"]["low"] > 0.5
    assert multivariate["top_features"][0] == "feature_2"
    assert multivariate["rows"] == {"reference": 3000, "current": 3000}
    assert "multivariate: " + multivariate["severity"] in completed.stdout
    assert "separating: feature_2" in completed.stdout
    assert [item["feature"] for item in document["quality"]] == [
        item["feature"] for item in document["features"]
    ]
    assert document["summary"]["quality"]["severity"] in ("none", "minor", "major")
    metrics = (out / "drift.prom").read_text()
    assert 'churn_drift_multivariate_auroc{bound="estimate"}' in metrics
    assert 'churn_drift_null_rate{feature="feature_2",window="current"} 0.0' in metrics
    assert "Multivariate drift: " in (out / "drift.html").read_text()


def test_identical_files_exit_0(files, tmp_path: Path) -> None:
    reference, _, same = files
    completed = _drift(
        "--reference", str(reference), "--current", str(same), "--out", str(tmp_path / "o")
    )
    assert completed.returncode == 0, completed.stderr
    assert "drift: none" in completed.stdout
    # The same rows on both sides: the classifier cannot tell them apart, nothing is off.
    assert "multivariate: none (domain classifier AUROC 0.500, 95% 0.500-0.500" in (
        completed.stdout
    )
    assert "quality: none (major: none; minor: none)" in completed.stdout


def test_features_option_limits_the_comparison(files, tmp_path: Path) -> None:
    reference, current, _ = files
    out = tmp_path / "out"
    completed = _drift(
        "--reference", str(reference), "--current", str(current),
        "--features", "feature_1,is_weekend", "--out", str(out),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    document = json.loads((out / "drift.json").read_text())
    assert [item["feature"] for item in document["features"]] == ["feature_1", "is_weekend"]


def test_bad_input_exits_2_naming_the_problem(files, tmp_path: Path) -> None:
    reference, current, _ = files
    missing = _drift("--reference", str(tmp_path / "nope.parquet"), "--current", str(current))
    assert missing.returncode == 2
    assert f"error: {tmp_path / 'nope.parquet'} does not exist" in missing.stderr
    unknown = _drift(
        "--reference", str(reference), "--current", str(current), "--features", "feature_9"
    )
    assert unknown.returncode == 2
    assert "unknown feature(s): reference lacks feature_9; current lacks feature_9" in (
        unknown.stderr
    )
    not_parquet = tmp_path / "bad.parquet"
    not_parquet.write_text("not parquet")
    bad = _drift("--reference", str(not_parquet), "--current", str(current))
    assert bad.returncode == 2 and "is not readable Parquet" in bad.stderr


def test_default_out_dir_is_under_the_data_dir(files, tmp_path: Path) -> None:
    reference, current, _ = files
    completed = _drift("--reference", str(reference), "--current", str(current))
    assert completed.returncode == 4
    reports = list((tmp_path / "data" / "monitoring" / "reports").glob("*/drift.html"))
    assert len(reports) == 1 and f"report: {reports[0]}" in completed.stdout


def test_prediction_logs_of_two_model_versions_are_not_drift(tmp_path: Path) -> None:
    def _log(version: str) -> Path:
        frame = make_feature_frame(3000, seed=1)
        frame["request_id"] = [f"{version}-{index}" for index in range(len(frame))]
        frame["model_name"] = "churn-predictor"
        frame["model_version"] = version
        frame["churn_probability"] = 0.3
        frame["churn_predicted"] = False
        return write_parquet(frame, tmp_path / f"log-v{version}.parquet")

    out = tmp_path / "out"
    completed = _drift(
        "--reference", str(_log("3")), "--current", str(_log("4")), "--out", str(out)
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    compared = {
        item["feature"] for item in json.loads((out / "drift.json").read_text())["features"]
    }
    assert not compared & {"model_name", "model_version", "churn_predicted", "request_id"}


def test_an_unknown_source_exits_2_naming_the_choices() -> None:
    completed = _drift("--source", "logs")
    assert completed.returncode == 2
    assert "error: --source 'logs': expected snapshots or predictions" in completed.stderr


def test_the_command_line_loads_no_monitoring_module_until_a_command_runs() -> None:
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, cli.main; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'monitoring'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"


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
    assert document["estimated"]["roc_auc"]["realized"] == pytest.approx(expected)
    assert "realized beside estimated without labels" in completed.stdout

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
    # 100 labelled predictions: below the minimum, no figure claimed.
    assert "version 1: 100 rows, too few for a figure (minimum 500)" in completed.stdout
    assert "insufficient data: 100 labelled predictions" in completed.stdout


def test_estimate_command_from_a_probability_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    scores = rng.beta(1.2, 4.0, size=3000)
    path = write_parquet(pd.DataFrame({"churn_probability": scores}), tmp_path / "p.parquet")
    out = tmp_path / "out"

    completed = subprocess.run(
        [CHURN, "estimate", "--current", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr
    document = json.loads((out / "estimate.json").read_text())
    assert document["rows"] == 3000 and document["status"] == "ok"
    for metric in ("roc_auc", "pr_auc", "brier", "churn_rate"):
        figure = document[metric]
        assert figure["low"] < figure["estimate"] < figure["high"]
    assert document["churn_rate"]["estimate"] == pytest.approx(scores.mean())
    assert "Estimated performance (no labels)" in (out / "estimate.html").read_text()
    prom = (tmp_path / "data" / "metrics" / "estimate.prom").read_text()
    assert 'churn_estimate_performance{bound="high",metric="roc_auc"}' in prom
    assert "ROC AUC" in completed.stdout
    assert document["out_of_range"] is None and document["support"].startswith("unknown")
    assert "churn_estimate_out_of_support 0.0" in prom

    few = write_parquet(pd.DataFrame({"churn_probability": scores[:7]}), tmp_path / "f.parquet")
    small = subprocess.run(
        [CHURN, "estimate", "--current", str(few), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert small.returncode == 0, small.stderr
    document = json.loads((out / "estimate.json").read_text())
    assert document["status"] == "insufficient_data" and document["roc_auc"] is None
    unusable = write_parquet(pd.DataFrame({"x": [1.0]}), tmp_path / "x.parquet")
    bad = subprocess.run(
        [CHURN, "estimate", "--current", str(unusable)], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2, bad.stdout


def test_estimate_of_a_probability_file_holds_it_to_the_champion_without_mlflow(
    tmp_path: Path,
) -> None:
    # The champion's test ROC AUC and calibration term come from the default SQLite store
    # read directly: a file of probabilities needs no MLflow, Feast or scikit-learn import.
    from mlflow import MlflowClient

    from core.estimate_shift import logit_moments
    from core.settings import MlflowSettings
    from tests.utils.serving import MODEL_NAME, register_model

    uri = MlflowSettings().prepare()
    version = register_model(uri, project="estimate_reference")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run_id = client.get_model_version(MODEL_NAME, version).run_id
    scores = np.random.default_rng(3).beta(1.2, 4.0, size=3000)
    mean, sd = logit_moments(scores)
    # The held-out logits sat one SD lower: distance 1, so this window's term is 0.02.
    metrics = {
        "test_roc_auc": 0.9,
        "test_estimate_calibration_sd": 0.01,
        "test_estimate_bias_per_distance": 0.02,
        "test_estimate_logit_mean": mean - sd,
        "test_estimate_logit_sd": sd,
    }
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    path = write_parquet(pd.DataFrame({"churn_probability": scores}), tmp_path / "p.parquet")
    out = tmp_path / "out"
    script = (
        "import sys\n"
        "from cli.main import main\n"
        f"sys.argv = ['churn', 'estimate', '--current', {str(path)!r}, '--out', {str(out)!r}]\n"
        "code = 0\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        "heavy = sorted({'mlflow', 'sklearn', 'feast', 'scipy'} & set(sys.modules))\n"
        "print('heavy imports:', heavy, 'exit', code)\n"
    )

    # As a user's shell has it (register_model's MLflow calls export another URI).
    environment = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=environment
    )

    assert "heavy imports: [] exit" in completed.stdout, completed.stdout + completed.stderr
    document = json.loads((out / "estimate.json").read_text())
    assert document["reference"] == {
        "model": f"{MODEL_NAME}@champion",
        "version": version,
        "roc_auc": 0.9,
        "calibration_sd": 0.01,
        "bias_per_distance": 0.02,
        "logit_mean": pytest.approx(mean - sd),
        "logit_sd": pytest.approx(sd),
        "ranges": {},
    }
    assert document["calibration_sd"] == pytest.approx(0.02)
    # The estimated AUC of these scores (about 0.76) is far below 0.9: harm, exit 4.
    assert "exit 4" in completed.stdout and document["harm"]
    assert "calibration term 0.0200" in completed.stdout

    # The version's training range (core.estimate_support), and a file whose rows carry a
    # feature column besides their probability: 73% of them below the training minimum.
    client.log_metric(run_id, "train_min.feature_1", 0.0)
    client.log_metric(run_id, "train_max.feature_1", 10.0)
    feature = np.where(np.arange(3000) < 2190, -1.0, 5.0)
    path = write_parquet(
        pd.DataFrame({"churn_probability": scores, "feature_1": feature}), tmp_path / "f.parquet"
    )
    refused = subprocess.run(
        [sys.executable, "-c", script.replace("p.parquet", "f.parquet")],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )

    # No figure, so no harm claimed (exit 0), and still no heavy import.
    assert "heavy imports: [] exit 0" in refused.stdout, refused.stdout + refused.stderr
    document = json.loads((out / "estimate.json").read_text())
    assert document["status"] == "out_of_support" and document["roc_auc"] is None
    assert document["out_of_range"] == {"feature_1": pytest.approx(0.73)}
    assert document["harm"] is None and "support" not in document
    assert document["reference"]["ranges"] == {"feature_1": [0.0, 10.0]}
    assert "out of support: no figure claimed" in (out / "estimate.html").read_text()
    prom = (tmp_path / "data" / "metrics" / "estimate.prom").read_text()
    assert "churn_estimate_out_of_support 1.0" in prom
    assert 'churn_estimate_out_of_range_share{feature="feature_1"} 0.73' in prom
    assert "churn_estimate_performance{" not in prom
    assert "out of support" in refused.stdout
