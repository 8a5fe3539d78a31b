"""Data quality of the current window, judged against the reference (the training set).

Three checks per feature, each from figures the column comparison already computed
(:mod:`monitoring.columns`, in this process or from a backend's aggregates), so they cost
nothing more and mean the same on every backend:

- **nulls**: the current null rate (null, NaN or infinite) above the reference's by at
  least ``quality_null_minor`` / ``_major`` (absolute shares);
- **out of range**: the share of current values outside the reference's ``[min, max]``,
  less the ``2 / (n + 1)`` a sample of the reference's own distribution shows, at least
  ``quality_out_of_range_minor`` / ``_major`` (continuous columns);
- **unseen categories**: the share of current values in categories the reference never
  had, at least ``quality_unseen_minor`` / ``_major`` (categorical columns).

With the champion's lineage the reference is its training window, rebuilt through its
feature service: the values the model was fitted on. A current window with fewer than
``min_samples`` rows is ``insufficient_data``: no finding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from monitoring.settings import MonitoringSettings
from monitoring.severity import GradedFeatures, worst_severity
from monitoring.statistics import Coverage, FeatureDrift, Severity

Check = Literal["nulls", "out_of_range", "unseen_categories"]


@dataclass(frozen=True)
class FeatureQuality:
    """The quality checks of one feature's current values."""

    feature: str
    status: Literal["ok", "insufficient_data"]
    reference_rows: int
    current_rows: int
    reference_null_rate: float
    current_null_rate: float
    coverage: Coverage | None
    severity: Severity = "none"
    checks: tuple[tuple[Check, Severity], ...] = ()
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (one entry of ``quality.features`` in drift.json)."""
        coverage = self.coverage
        data: dict[str, Any] = {
            "feature": self.feature,
            "status": self.status,
            "severity": self.severity,
            "rows": {"reference": self.reference_rows, "current": self.current_rows},
            "null_rate": {
                "reference": self.reference_null_rate,
                "current": self.current_null_rate,
                "increase": self.current_null_rate - self.reference_null_rate,
            },
            "out_of_range": None,
            "unseen_categories": None,
            "checks": dict(self.checks),
            "reasons": list(self.reasons),
        }
        if coverage is not None and coverage.low is not None:
            data["out_of_range"] = {
                "reference_min": coverage.low,
                "reference_max": coverage.high,
                "below": coverage.below,
                "above": coverage.above,
                "share": coverage.share,
                "expected_share": coverage.expected_share,
            }
        elif coverage is not None:
            data["unseen_categories"] = {
                "categories": list(coverage.unseen),
                "count": coverage.outside,
                "share": coverage.share,
            }
        return data


@dataclass(frozen=True)
class QualityReport(GradedFeatures):
    """The quality checks of every feature, and the thresholds they were judged by."""

    features: tuple[FeatureQuality, ...]
    settings: MonitoringSettings

    def summary(self) -> dict[str, Any]:
        """``summary.quality`` of drift.json: severity, flagged features, their reasons."""
        settings = self.settings
        return {
            "severity": self.severity,
            "issues_detected": self.severity != "none",
            "major": self.names_with("major"),
            "minor": self.names_with("minor"),
            "findings": {
                item.feature: list(item.reasons) for item in self.features if item.reasons
            },
            "insufficient_data": [
                item.feature for item in self.features if item.status == "insufficient_data"
            ],
            "thresholds": {
                "null_minor": settings.quality_null_minor,
                "null_major": settings.quality_null_major,
                "out_of_range_minor": settings.quality_out_of_range_minor,
                "out_of_range_major": settings.quality_out_of_range_major,
                "unseen_minor": settings.quality_unseen_minor,
                "unseen_major": settings.quality_unseen_major,
            },
        }


def _level(value: float, minor: float, major: float) -> Severity:
    if value >= major:
        return "major"
    return "minor" if value >= minor else "none"


def check_feature(result: FeatureDrift, settings: MonitoringSettings) -> FeatureQuality:
    """The quality checks of one compared feature."""
    reference, current = result.reference, result.current
    reference_rows, current_rows = reference.count + reference.nulls, current.count + current.nulls
    base: dict[str, Any] = {
        "feature": result.feature,
        "reference_rows": reference_rows,
        "current_rows": current_rows,
        "reference_null_rate": reference.null_rate,
        "current_null_rate": current.null_rate,
        "coverage": result.coverage,
    }
    if min(reference_rows, current_rows) < settings.min_samples:
        return FeatureQuality(status="insufficient_data", **base)
    checks: list[tuple[Check, Severity]] = []
    reasons: list[str] = []
    increase = current.null_rate - reference.null_rate
    level = _level(increase, settings.quality_null_minor, settings.quality_null_major)
    checks.append(("nulls", level))
    if level != "none":
        reasons.append(f"null rate {current.null_rate:.1%} (reference {reference.null_rate:.1%})")
    coverage = result.coverage
    if coverage is not None and coverage.low is not None:
        excess = coverage.share - coverage.expected_share
        minor, major = settings.quality_out_of_range_minor, settings.quality_out_of_range_major
        level = _level(excess, minor, major)
        checks.append(("out_of_range", level))
        if level != "none":
            reasons.append(
                f"{coverage.share:.1%} of values outside the reference range "
                f"[{coverage.low:.4g}, {coverage.high:.4g}] ({coverage.below} below, "
                f"{coverage.above} above)"
            )
    elif coverage is not None:
        minor, major = settings.quality_unseen_minor, settings.quality_unseen_major
        level = _level(coverage.share, minor, major)
        checks.append(("unseen_categories", level))
        if level != "none":
            reasons.append(
                f"{coverage.share:.1%} of values in categories the reference never had: "
                + ", ".join(coverage.unseen)
            )
    return FeatureQuality(
        status="ok",
        severity=worst_severity(severity for _, severity in checks),
        checks=tuple(checks),
        reasons=tuple(reasons),
        **base,
    )


def assess_quality(features: Sequence[FeatureDrift], settings: MonitoringSettings) -> QualityReport:
    """The quality checks of every compared feature (the score is not a feature)."""
    checked = tuple(check_feature(item, settings) for item in features if item.role == "feature")
    return QualityReport(features=checked, settings=settings)
