"""Two samples compared column by column into a ``DriftReport`` (rendered by report.py).

Chooses the columns, compares each (:mod:`monitoring.columns`: in threads when the values
are in this process, from a backend's aggregates when they are not), adjusts the p-values
for multiple testing and grades each column with ``monitoring.severity``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from core.compute.statistics import Sample, StatisticsCompute
from core.errors import InputError
from monitoring.columns import compare_column, compare_sample_column, is_numeric
from monitoring.multivariate import MultivariateDrift, not_run
from monitoring.quality import QualityReport, assess_quality
from monitoring.settings import MonitoringSettings
from monitoring.severity import GradedFeatures, assign_severity
from monitoring.statistics import (
    KS_GRID,
    FeatureDrift,
    Role,
    adjust_p_values,
)


@dataclass(frozen=True)
class DriftReport(GradedFeatures):
    """Every compared column, the score's drift and what was left out, with why.

    Its severity is the worst of the univariate feature tests: the score is reported, not
    counted; the multivariate and quality findings are alert signals of their own.
    """

    features: tuple[FeatureDrift, ...]
    settings: MonitoringSettings
    score: FeatureDrift | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    reference_rows: int = 0
    current_rows: int = 0
    sources: dict[str, Any] = field(default_factory=dict)
    # The domain classifier's verdict (None: not asked for, e.g. a report built in a test).
    multivariate: MultivariateDrift | None = None

    @property
    def quality(self) -> QualityReport:
        """The data-quality checks of the current window against the reference."""
        return assess_quality(self.features, self.settings)

    def summary(self) -> dict[str, Any]:
        """Counts, flagged features, thresholds and sources."""
        settings = self.settings
        return {
            "severity": self.severity,
            "drift_detected": self.severity != "none",
            "features_compared": len(self.features),
            "major": self.names_with("major"),
            "minor": self.names_with("minor"),
            "insufficient_data": [
                item.feature for item in self.features if item.kind == "insufficient_data"
            ],
            "min_samples": settings.min_samples,
            "score_severity": self.score.severity if self.score else None,
            "skipped": self.skipped,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "correction": settings.correction,
            "thresholds": {
                "psi_major": settings.psi_major,
                "psi_minor": settings.psi_minor,
                "p_major": settings.p_major,
                "p_minor": settings.p_minor,
                "min_effect_size": settings.min_effect_size,
                "psi_bins": settings.psi_bins,
                "max_categories": settings.max_categories,
            },
            "sources": self.sources,
            "multivariate": (self.multivariate or not_run("not asked for")).to_dict(),
            "quality": self.quality.summary(),
        }

    def to_dict(self) -> dict[str, Any]:
        """The ``drift.json`` document."""
        return {
            "features": [item.to_dict() for item in self.features],
            "score": self.score.to_dict() if self.score else None,
            "quality": [item.to_dict() for item in self.quality.features],
            "summary": self.summary(),
        }


def check_features(
    features: Sequence[str], reference: Sequence[str], current: Sequence[str]
) -> None:
    """Every named feature must be a column of both samples.

    Raises:
        InputError: Names the missing features of each side.
    """
    missing = {
        side: [name for name in features if name not in columns]
        for side, columns in (("reference", reference), ("current", current))
    }
    problems = [f"{side} lacks {', '.join(names)}" for side, names in missing.items() if names]
    if problems:
        raise InputError("unknown feature(s): " + "; ".join(problems))


def select_columns(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    settings: MonitoringSettings,
    features: Sequence[str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The columns to compare, and the ones left out with the reason.

    With ``features`` every named column must exist in both frames. Otherwise every
    shared numeric, boolean or text column except ``settings.exclude_columns``;
    timestamps and text with more than ``max_string_categories`` values are skipped.

    Raises:
        InputError: A named feature is missing, or nothing is left to compare.
    """
    if features:
        check_features(features, list(reference.columns), list(current.columns))
        return list(features), {}
    skipped: dict[str, str] = {}
    for side, mine, other in (
        ("reference", reference, current),
        ("current", current, reference),
    ):
        for name in mine.columns:
            if name not in other.columns:
                skipped[name] = f"only in the {side} data"
    selected: list[str] = []
    for name in reference.columns:
        if name not in current.columns:
            continue
        if name in settings.exclude_columns:
            skipped[name] = "excluded (key or timestamp column)"
        elif pd.api.types.is_datetime64_any_dtype(reference[name]):
            skipped[name] = "timestamp column"
        elif not (is_numeric(reference[name]) or is_numeric(current[name])):
            distinct = pd.concat([reference[name], current[name]]).nunique()
            if distinct > settings.max_string_categories:
                skipped[name] = (
                    f"{distinct} distinct text values > {settings.max_string_categories}"
                    " (an identifier?)"
                )
            else:
                selected.append(name)
        else:
            selected.append(name)
    if not selected:
        raise InputError("no shared numeric or categorical column to compare")
    return selected, skipped


def compare_frames(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    settings: MonitoringSettings,
    *,
    features: Sequence[str] | None = None,
    score_column: str | None = None,
    sources: dict[str, Any] | None = None,
) -> DriftReport:
    """Compare two samples column by column and grade each column's drift.

    Args:
        reference: The baseline sample (e.g. the champion's training window).
        current: The sample to check (e.g. the last 7 days).
        settings: Bins, thresholds, correction and thread count.
        features: Columns to compare; default: see :func:`select_columns`.
        score_column: A model-score column present in both frames, compared as a
            continuous column and reported apart (it does not set the overall severity).
        sources: Where the samples came from, copied into the summary.

    Raises:
        InputError: A named column is missing or nothing can be compared.
    """
    if reference.empty or current.empty:
        empty = "reference" if reference.empty else "current"
        raise InputError(f"the {empty} sample has no rows")
    names, skipped = select_columns(reference, current, settings, features)
    if score_column:
        names = [name for name in names if name != score_column]
        skipped.pop(score_column, None)
    jobs: list[tuple[str, Role]] = [(name, "feature") for name in names]
    if score_column:
        if score_column not in reference.columns or score_column not in current.columns:
            raise InputError(f"score column {score_column!r} is not in both samples")
        jobs.append((score_column, "score"))

    def compare(job: tuple[str, Role]) -> FeatureDrift:
        return compare_column(job[0], reference[job[0]], current[job[0]], settings, role=job[1])

    workers = min(settings.workers or os.cpu_count() or 1, len(jobs))
    if workers == 1:
        results = [compare(job) for job in jobs]
    else:
        # numpy sorts and searches release the GIL, so threads compare columns in parallel.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(compare, jobs))
    return _graded_report(
        results,
        settings,
        skipped=skipped,
        rows=(len(reference), len(current)),
        sources=sources,
    )


def compare_samples(
    compute: StatisticsCompute,
    reference: Sample,
    current: Sample,
    settings: MonitoringSettings,
    *,
    features: Sequence[str],
    score_column: str | None = None,
    sources: dict[str, Any] | None = None,
    ks_grid: int = KS_GRID,
) -> DriftReport:
    """:func:`compare_frames` for two samples a backend holds, from its aggregates.

    Only the named numeric features (and the score) are compared, column by column, each
    with a few aggregates where the rows are (:class:`monitoring.columns.SamplePair`).

    Raises:
        InputError: A named column is missing from a sample, or a sample has no rows.
    """
    for side, sample in (("reference", reference), ("current", current)):
        if sample.rows == 0:
            raise InputError(f"the {side} sample has no rows")
    names = [*features, *([score_column] if score_column else [])]
    check_features(names, reference.columns, current.columns)
    samples = (reference, current)
    results = [
        compare_sample_column(compute, name, samples, settings, ks_grid=ks_grid)
        for name in features
    ]
    if score_column:
        results.append(
            compare_sample_column(
                compute, score_column, samples, settings, role="score", ks_grid=ks_grid
            )
        )
    return _graded_report(
        results, settings, skipped={}, rows=(reference.rows, current.rows), sources=sources
    )


def _graded_report(
    results: list[FeatureDrift],
    settings: MonitoringSettings,
    *,
    skipped: dict[str, str],
    rows: tuple[int, int],
    sources: dict[str, Any] | None,
) -> DriftReport:
    """The report of the compared columns: p-values adjusted over the features, graded."""
    feature_results = [item for item in results if item.role == "feature"]
    tested = [index for index, item in enumerate(feature_results) if item.p_value is not None]
    if settings.correction != "none":
        adjusted = adjust_p_values(
            [feature_results[index].p_value or 0.0 for index in tested], settings.correction
        )
        for index, value in zip(tested, adjusted, strict=True):
            feature_results[index] = replace(feature_results[index], p_value_adjusted=value)
    graded = tuple(assign_severity(item, settings) for item in feature_results)
    score = next((item for item in results if item.role == "score"), None)
    return DriftReport(
        features=graded,
        settings=settings,
        score=assign_severity(score, settings) if score else None,
        skipped=skipped,
        reference_rows=rows[0],
        current_rows=rows[1],
        sources=sources or {},
    )
