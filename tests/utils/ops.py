"""Readers of ops/: the metric names the Prometheus rules and the Grafana dashboard query,
and the names a Prometheus exposition (``/metrics`` or a textfile) exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from core.settings import PROJECT_ROOT

OPS = PROJECT_ROOT / "workflow" / "ops"
RULES = OPS / "prometheus" / "rules.yml"
RULES_TEST = OPS / "prometheus" / "rules_test.yml"
DASHBOARD = OPS / "grafana" / "churn-platform.json"

_METRIC = re.compile(r"\b(churn_[a-z0-9_]+)\b")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created"),
}


def rule_expressions(path: Path = RULES) -> dict[str, str]:
    """alert name -> PromQL expression."""
    groups = yaml.safe_load(path.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_expressions(path: Path = DASHBOARD) -> list[str]:
    """Every PromQL expression of the dashboard's panels."""
    panels = json.loads(path.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def queried_names() -> set[str]:
    """Metric names the rules and the dashboard query."""
    expressions = [*rule_expressions().values(), *dashboard_expressions()]
    return {name for expression in expressions for name in _METRIC.findall(expression)}


def exported_names(exposition: str) -> set[str]:
    """Series names a Prometheus text exposition exports, declared families included.

    A labelled family with no child yet has no sample but is declared (HELP/TYPE): its
    series names follow from its type.
    """
    from prometheus_client.parser import text_string_to_metric_families

    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names
