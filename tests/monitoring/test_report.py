"""drift.json, drift.html and the Prometheus metrics of a drift report."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring.comparison import DriftReport, compare_frames
from monitoring.metrics import publish_metrics
from monitoring.multivariate import detect_domain_shift
from monitoring.report import render_html, write_reports
from monitoring.settings import MonitoringSettings
from monitoring.severity import SEVERITY_RANK
from tests.utils.features import CHURN_V1_FEATURES
from tests.utils.monitoring import make_feature_frame
from tests.utils.pushgateway import running_gateway

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`

SETTINGS = MonitoringSettings()


@pytest.fixture(scope="module")
def report() -> DriftReport:
    reference = make_feature_frame(2000, seed=1)
    current = make_feature_frame(2000, seed=2, feature_1_scale=1.5)
    current.loc[:99, "feature_2"] = np.nan
    reference["empty"] = np.nan
    current["empty"] = np.nan
    rng = np.random.default_rng(0)
    reference["churn_probability"] = rng.beta(2, 5, 2000)
    current["churn_probability"] = rng.beta(2, 4, 2000)
    return compare_frames(reference, current, SETTINGS, score_column="churn_probability")


def test_json_has_the_documented_keys_for_every_feature(report: DriftReport, tmp_path) -> None:
    json_path, _ = write_reports(report, tmp_path / "out")
    document = json.loads(json_path.read_text())
    names = [item["feature"] for item in document["features"]]
    assert names == [*CHURN_V1_FEATURES, "empty"]
    for item in document["features"]:
        assert list(item)[:7] == [
            "feature",
            "test",
            "psi",
            "statistic",
            "p_value",
            "severity",
            "drift_detected",
        ]
    by_name = {item["feature"]: item for item in document["features"]}
    assert by_name["feature_1"]["severity"] == "major" and by_name["feature_1"]["drift_detected"]
    assert by_name["is_weekend"]["test"] == "chi2"
    assert by_name["feature_2"]["current"]["nulls"] == 100
    assert by_name["empty"]["psi"] is None and by_name["empty"]["severity"] == "none"
    summary = document["summary"]
    assert summary["major"] == ["feature_1", "feature_ratio", "feature_log"]
    assert summary["severity"] == "major" and summary["correction"] == "holm"
    assert document["score"]["feature"] == "churn_probability"
    assert summary["score_severity"] == document["score"]["severity"]


def test_html_is_self_contained_and_shows_every_feature(report: DriftReport) -> None:
    page = render_html(report)
    for item in [*report.features, report.score]:
        assert item is not None
        assert f'<section id="{item.feature}">' in page
        assert f'href="#{item.feature}"' in page  # summary table row links to the plot
    images = re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', page)
    assert len(images) == len(report.features) - 1 + 1  # "empty" has no plot, score has one
    assert "no values in either sample" in page
    assert "P-values are Holm-adjusted over the features and count only with an effect" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "<link" not in page and "<script" not in page


def test_metrics_textfile_has_gauges_per_feature(report: DriftReport, tmp_path) -> None:
    target = publish_metrics(report, SETTINGS, tmp_path)
    text = Path(str(target)).read_text()
    assert 'churn_drift_psi{feature="feature_1",role="feature"}' in text
    assert 'churn_drift_severity{feature="feature_1",role="feature"} 2.0' in text
    assert 'churn_drift_severity{feature="is_weekend",role="feature"} 0.0' in text
    assert 'churn_drift_statistic{feature="is_weekend",role="feature",test="chi2"}' in text
    assert 'churn_drift_psi{feature="churn_probability",role="score"}' in text
    assert "churn_drift_overall_severity 2.0" in text


@pytest.fixture
def gateway() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    """A stand-in Pushgateway recording what is pushed."""
    with running_gateway() as endpoint:
        yield endpoint


def test_metrics_are_pushed_when_a_pushgateway_is_configured(
    report: DriftReport, tmp_path, gateway
) -> None:
    address, received = gateway
    settings = MonitoringSettings(pushgateway_url=address, pushgateway_job="nightly")
    assert publish_metrics(report, settings, tmp_path) == address
    assert not (tmp_path / "drift.prom").exists()
    [(method, path, body)] = received
    assert (method, path) == ("PUT", "/metrics/job/nightly")
    assert b"churn_drift_psi" in body


def test_an_unreachable_pushgateway_falls_back_to_the_textfile(
    report: DriftReport, tmp_path, capsys
) -> None:
    settings = MonitoringSettings(pushgateway_url="127.0.0.1:9")  # discard port: refused
    assert publish_metrics(report, settings, tmp_path) == str(tmp_path / "drift.prom")
    assert "churn_drift_psi" in (tmp_path / "drift.prom").read_text()
    assert "warning: could not push metrics to 127.0.0.1:9" in capsys.readouterr().err


def test_constant_and_empty_columns_render(tmp_path) -> None:
    reference = pd.DataFrame({"constant": [1.0] * 50, "gone": [2.0, 3.0] * 25})
    current = pd.DataFrame({"constant": [1.0] * 40, "gone": [np.nan] * 40})
    _, html_path = write_reports(compare_frames(reference, current, SETTINGS), tmp_path)
    page = html_path.read_text()
    assert "all 40 current values are null (reference has 50)" in page
    assert '<section id="constant">' in page


def test_the_alert_signals_are_in_the_json_the_html_and_the_metrics(
    report: DriftReport, tmp_path: Path
) -> None:
    reference = make_feature_frame(600, seed=1)
    current = make_feature_frame(600, seed=2, feature_1_scale=1.5)
    verdict = detect_domain_shift(reference, current, CHURN_V1_FEATURES, SETTINGS)
    assert verdict.severity != "none"
    judged = replace(report, multivariate=verdict)

    json_path, html_path = write_reports(judged, tmp_path / "out")
    document = json.loads(json_path.read_text())
    multivariate = document["summary"]["multivariate"]
    assert list(multivariate)[:4] == ["status", "severity", "drift_detected", "auroc"]
    assert multivariate["auroc"]["estimate"] == pytest.approx(verdict.auroc)
    assert multivariate["top_features"][0] in ("feature_1", "feature_log", "feature_ratio")
    quality = document["summary"]["quality"]
    assert quality["minor"] == ["feature_2"]  # 100 nulls of 2,000: 5%
    assert quality["findings"]["feature_2"] == ["null rate 5.0% (reference 0.0%)"]
    by_name = {item["feature"]: item for item in document["quality"]}
    assert by_name["feature_2"]["null_rate"]["current"] == pytest.approx(0.05)
    assert by_name["is_weekend"]["unseen_categories"]["categories"] == []
    assert by_name["feature_1"]["out_of_range"]["share"] > 0  # scaled by 1.5
    page = html_path.read_text()
    assert "Multivariate drift: <b style" in page and "AUROC drop when permuted" in page
    assert "Data quality: <b style" in page and "null rate 5.0% (reference 0.0%)" in page

    text = Path(str(publish_metrics(judged, SETTINGS, tmp_path))).read_text()
    assert 'churn_drift_multivariate_auroc{bound="low"}' in text
    assert f"churn_drift_multivariate_severity {SEVERITY_RANK[verdict.severity]}.0" in text
    assert 'churn_drift_quality_severity{feature="feature_2"} 1.0' in text
    assert (
        'churn_drift_outside_reference_share{check="unseen_categories",feature="is_weekend"}'
        in (text)
    )
    assert "churn_drift_quality_overall_severity 1.0" in text


def test_a_report_without_the_classifier_says_so(report: DriftReport) -> None:
    summary = report.summary()
    assert summary["multivariate"]["status"] == "not_run"
    assert summary["multivariate"]["severity"] == "none"
    assert "Multivariate drift</h2>" in render_html(report)
