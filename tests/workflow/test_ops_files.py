"""Every alert is unit-tested and has a runbook; the dashboard is Grafana JSON with queries."""

from __future__ import annotations

import re

import pytest
import yaml

from core.settings import PROJECT_ROOT
from tests.utils.ops import DASHBOARD, RULES, RULES_TEST, dashboard_expressions, rule_expressions

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`

RUNBOOKS = PROJECT_ROOT / "docs" / "roles" / "operator.md"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_is_unit_tested_firing() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    firing = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert firing == set(rule_expressions())


def test_every_alert_has_a_runbook_section_on_the_operator_page() -> None:
    anchors = {
        _slug(line.lstrip("#"))
        for line in RUNBOOKS.read_text().splitlines()
        if line.startswith("#")
    }
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for rule in (rule for group in groups for rule in group["rules"]):
        runbook = rule["annotations"]["runbook"]
        path, _, anchor = runbook.partition("#")
        assert path == "docs/roles/operator.md", rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no operator-page heading for #{anchor}"


def test_the_dashboard_is_grafana_json_with_queries() -> None:
    import json

    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "churn-platform"
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {
        "Serving",
        "Pipeline health",
        "Score distribution",
        "Served model version",
        "Streamed activity",
    } <= titles
    assert all("churn_" in expression for expression in dashboard_expressions())
