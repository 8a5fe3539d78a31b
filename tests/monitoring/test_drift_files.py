"""`churn drift --reference A --current B`: two Parquet files, end to end with exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.utils.monitoring import make_feature_frame, write_parquet

CHURN = str(Path(sys.executable).with_name("churn"))


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


def test_identical_files_exit_0(files, tmp_path: Path) -> None:
    reference, _, same = files
    completed = _drift(
        "--reference", str(reference), "--current", str(same), "--out", str(tmp_path / "o")
    )
    assert completed.returncode == 0, completed.stderr
    assert "drift: none" in completed.stdout


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
