"""Drift policy: how severe a column's drift is, from its PSI, p-value and effect size.

The thresholds come from ``MonitoringSettings``; the statistics are computed in
``monitoring.statistics``. ``major`` / ``minor`` / ``none`` decide what the drift job
reports and whether it triggers a retraining.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Protocol

from monitoring.settings import MonitoringSettings
from monitoring.statistics import FeatureDrift, Severity

SEVERITIES: tuple[Severity, ...] = ("none", "minor", "major")
SEVERITY_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}


def worst_severity(severities: Iterable[str]) -> Severity:
    """The worst of some severities (``none`` when there are none)."""
    return SEVERITIES[max((SEVERITY_RANK[item] for item in severities), default=0)]


class _Graded(Protocol):
    @property
    def feature(self) -> str: ...

    @property
    def severity(self) -> Severity: ...


class GradedFeatures:
    """A report's per-feature findings, each with a severity: the worst, and who has which."""

    features: Sequence[_Graded]

    @property
    def severity(self) -> Severity:
        """The worst severity over the features."""
        return worst_severity(item.severity for item in self.features)

    def names_with(self, severity: Severity) -> list[str]:
        """Features with exactly this severity."""
        return [item.feature for item in self.features if item.severity == severity]


def assign_severity(result: FeatureDrift, settings: MonitoringSettings) -> FeatureDrift:
    """Severity and its reasons from PSI and the (adjusted) p-value.

    ``major`` when PSI > psi_major or p < p_major, ``minor`` when PSI > psi_minor or
    p < p_minor, else ``none``. A p-value counts only when the effect size reaches
    ``min_effect_size`` (otherwise the note says so). A column whose values vanished on one
    side only is ``major``.
    """
    if result.kind == "insufficient_data":
        return replace(result, severity="none", reasons=())
    if result.kind == "empty":
        one_sided = (result.reference.count == 0) != (result.current.count == 0)
        return replace(
            result,
            severity="major" if one_sided else "none",
            reasons=(result.note or "no values",) if one_sided else (),
        )
    reasons: list[str] = []
    rank = 0
    if result.psi is not None:
        if result.psi > settings.psi_major:
            rank, reasons = 2, [f"PSI {result.psi:.3f} > {settings.psi_major:g}"]
        elif result.psi > settings.psi_minor:
            rank, reasons = 1, [f"PSI {result.psi:.3f} > {settings.psi_minor:g}"]
    p_value = result.p_value_adjusted if result.p_value_adjusted is not None else result.p_value
    label = "adjusted p" if result.p_value_adjusted is not None else "p"
    test = "KS" if result.test == "ks" else "chi-square"
    effect = result.effect_size or 0.0
    note = result.note
    for level, threshold in ((2, settings.p_major), (1, settings.p_minor)):
        if p_value is None or p_value >= threshold:
            continue
        if effect < settings.min_effect_size:  # detectable, but too small to act on
            note = note or (
                f"{test} {label} {p_value:.2g} < {threshold:g} not counted: "
                f"{result.effect_size_name} {effect:.3f} < {settings.min_effect_size:g}"
            )
        else:
            if level >= rank:
                reasons.append(f"{test} {label} {p_value:.2g} < {threshold:g}")
            rank = max(rank, level)
        break
    return replace(
        result, severity=SEVERITIES[rank], reasons=tuple(reasons) if rank else (), note=note
    )
