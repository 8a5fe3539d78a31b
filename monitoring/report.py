"""Drift reports people read: ``drift.json`` and a self-contained ``drift.html``.

The HTML page has no external resources: styles are inline and every plot is a PNG
embedded as a ``data:`` URI, so the file can be mailed or attached to a ticket as is.
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.files import finite_json, write_text_atomically
from monitoring.comparison import DriftReport
from monitoring.statistics import FeatureDrift

SEVERITY_COLOURS = {"none": "#2e7d32", "minor": "#ef6c00", "major": "#c62828"}
REFERENCE_COLOUR = "#1f77b4"
CURRENT_COLOUR = "#d62728"


def report_document(
    report: DriftReport,
    *,
    generated_at: datetime | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``drift.json`` document: features, score and summary (strict JSON values), plus
    ``extra`` top-level sections (the estimated performance)."""
    document = report.to_dict()
    document["summary"]["generated_at"] = (generated_at or datetime.now(UTC)).isoformat()
    document.update(extra or {})
    return finite_json(document)


def write_json(
    report: DriftReport,
    path: Path,
    *,
    generated_at: datetime | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``drift.json``."""
    document = report_document(report, generated_at=generated_at, extra=extra)
    write_text_atomically(path, json.dumps(document, indent=2, allow_nan=False) + "\n")
    return path


# ------------------------------------------------------------------------- HTML


def _plot_png(result: FeatureDrift) -> str | None:
    """The reference and current distributions of one column overlaid, as base64 PNG."""
    distribution = result.histogram
    if distribution is None:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display; a no-op when already selected
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 2.8), dpi=80)
    axes = figure.subplots()
    if distribution.labels is not None:
        positions = range(len(distribution.labels))
        width = 0.4
        axes.bar(
            [p - width / 2 for p in positions],
            distribution.reference,
            width,
            label="reference",
            color=REFERENCE_COLOUR,
        )
        axes.bar(
            [p + width / 2 for p in positions],
            distribution.current,
            width,
            label="current",
            color=CURRENT_COLOUR,
        )
        axes.set_xticks(list(positions), distribution.labels)
    else:
        edges = distribution.edges or []
        for values, label, colour in (
            (distribution.reference, "reference", REFERENCE_COLOUR),
            (distribution.current, "current", CURRENT_COLOUR),
        ):
            axes.stairs(values, edges, label=label, color=colour, fill=True, alpha=0.35)
            axes.stairs(values, edges, color=colour, linewidth=1.2)
        psi_edges = result.psi_bins.edges if result.psi_bins else None
        for edge in psi_edges or []:
            axes.axvline(edge, color="#999999", linewidth=0.6, linestyle=":")
    axes.set_ylabel("share of rows")
    axes.set_title(f"{result.feature} ({result.severity})", fontsize=10)
    axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _number(value: float | None, digits: str = ".3g") -> str:
    return "" if value is None else format(value, digits)


def _row(result: FeatureDrift) -> str:
    effect = ""
    if result.effect_size is not None:
        effect = f"{result.effect_size_name} {result.effect_size:.3f}"
    cells = [
        f'<a href="#{html.escape(result.feature)}">{html.escape(result.feature)}</a>',
        result.kind,
        result.test or "",
        _number(result.psi, ".4f"),
        _number(result.statistic, ".4g"),
        _number(result.p_value, ".3g"),
        _number(result.p_value_adjusted, ".3g"),
        effect,
        _number(result.mean_shift_sd, "+.2f"),
        f"{result.reference.null_rate:.1%} / {result.current.null_rate:.1%}",
        f'<b style="color:{SEVERITY_COLOURS[result.severity]}">{result.severity}</b>',
        html.escape("; ".join(result.reasons) or (result.note or "")),
    ]
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


_HEADERS = [
    "feature",
    "kind",
    "test",
    "PSI",
    "statistic",
    "p-value",
    "adjusted p",
    "effect size",
    "mean shift (ref. SD)",
    "nulls ref. / cur.",
    "severity",
    "why",
]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f3f3f3; }
section { margin-top: 1.5em; }
.meta { color: #555; font-size: 0.9em; }
"""


def _section(result: FeatureDrift) -> str:
    name = html.escape(result.feature)
    image = _plot_png(result)
    body = (
        f'<img alt="distributions of {name}" src="data:image/png;base64,{image}">'
        if image
        else f"<p>{html.escape(result.note or 'no values to plot')}</p>"
    )
    counts = (
        f"reference {result.reference.count} values, {result.reference.nulls} missing; "
        f"current {result.current.count} values, {result.current.nulls} missing"
    )
    return (
        f'<section id="{name}"><h3>{name}</h3><p class="meta">{html.escape(counts)}</p>'
        f"{body}</section>"
    )


def _severity(severity: str) -> str:
    return f'<b style="color:{SEVERITY_COLOURS[severity]}">{severity}</b>'


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{header}</th>" for header in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _multivariate_section(report: DriftReport) -> str:
    """The domain classifier's verdict and the features that separate the windows."""
    verdict = report.multivariate
    if verdict is None or verdict.status != "ok":
        why = verdict.note if verdict else "not measured"
        return f'<h2>Multivariate drift</h2><p class="meta">{html.escape(why or "")}</p>'
    rows = [[html.escape(item.feature), f"{item.importance:+.4f}"] for item in verdict.separation]
    named = ", ".join(verdict.top_features) or "none"
    settings = report.settings
    return (
        f"<h2>Multivariate drift: {_severity(verdict.severity)}</h2>"
        f'<p class="meta">A classifier trained to tell reference rows from current rows '
        f"({verdict.reference_rows} and {verdict.current_rows} sampled rows, "
        f"{len(verdict.fold_auroc)}-fold cross-validation) reaches AUROC "
        f"<b>{verdict.auroc:.3f}</b> (95% interval {verdict.low:.3f} to {verdict.high:.3f}; "
        f"0.5: it cannot tell them apart). Minor from {settings.multivariate_auc_minor:g}, "
        f"major from {settings.multivariate_auc_major:g}, with the interval above 0.5. "
        f"Separating features: {html.escape(named)}.</p>"
        + _table(["feature", "AUROC drop when permuted"], rows)
    )


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def _outside(out_of_range: dict[str, Any] | None) -> str:
    if out_of_range is None:
        return ""
    chance = _percent(out_of_range["expected_share"])
    return f"{_percent(out_of_range['share'])} (by chance {chance})"


def _quality_section(report: DriftReport) -> str:
    """Nulls, values outside the reference range and unseen categories, per feature."""
    quality = report.quality
    rows = []
    for check in quality.features:
        data = check.to_dict()
        out_of_range, unseen = data["out_of_range"], data["unseen_categories"]
        rows.append(
            [
                html.escape(check.feature),
                str(check.current_rows),
                f"{_percent(check.reference_null_rate)} / {_percent(check.current_null_rate)}",
                _outside(out_of_range),
                html.escape(", ".join(unseen["categories"]) + f" ({_percent(unseen['share'])})")
                if unseen and unseen["categories"]
                else "",
                _severity(check.severity),
                html.escape("; ".join(check.reasons) or check.status),
            ]
        )
    headers = [
        "feature",
        "current rows",
        "nulls ref. / cur.",
        "outside the reference range",
        "unseen categories",
        "severity",
        "why",
    ]
    return (
        f"<h2>Data quality: {_severity(quality.severity)}</h2>"
        '<p class="meta">The current window against the reference (with the champion, its '
        "training window).</p>" + _table(headers, rows)
    )


def _describe(value: Any) -> str:
    """A source description as text: ``key: value`` pairs, windows as ``start to end``."""
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_describe(item)}" for key, item in value.items())
    if isinstance(value, list | tuple):
        return " to ".join(map(str, value)) if len(value) == 2 else ", ".join(map(str, value))
    return str(value)


def _p_value_rule(report: DriftReport) -> str:
    settings = report.settings
    names = {"holm": "Holm-adjusted", "bh": "Benjamini-Hochberg-adjusted", "none": "raw"}
    rule = f"P-values are {names[settings.correction]} over the features"
    if settings.min_effect_size > 0:
        rule += (
            f" and count only with an effect size (KS statistic or Cramér's V) of at least "
            f"{settings.min_effect_size:g}"
        )
    return rule + "."


def render_html(
    report: DriftReport, *, generated_at: datetime | None = None, sections: str = ""
) -> str:
    """The self-contained HTML report: summary table and one overlaid plot per column."""
    summary = report.summary()
    generated = (generated_at or datetime.now(UTC)).isoformat(timespec="seconds")
    results = [*report.features, *([report.score] if report.score else [])]
    rows = "".join(_row(result) for result in results)
    sources = "".join(
        f"<li><b>{html.escape(side)}</b>: {html.escape(_describe(value))}</li>"
        for side, value in report.sources.items()
    )
    skipped = "".join(
        f"<li>{html.escape(name)}: {html.escape(reason)}</li>"
        for name, reason in report.skipped.items()
    )
    thresholds = ", ".join(f"{key} {value}" for key, value in summary["thresholds"].items())
    colour = SEVERITY_COLOURS[report.severity]
    flagged = ", ".join(summary["major"]) or "none"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Drift report</title>
<style>{_STYLE}</style></head><body>
<h1>Drift report: <span style="color:{colour}">{report.severity}</span></h1>
<p class="meta">Generated {generated}. Reference {report.reference_rows} rows, current
{report.current_rows} rows. Major drift: {html.escape(flagged)}. Minor drift:
{html.escape(", ".join(summary["minor"]) or "none")}.
Score drift: {html.escape(str(summary["score_severity"] or "not measured"))}.</p>
<p class="meta">Severity: major when PSI &gt; {report.settings.psi_major:g} or p &lt;
{report.settings.p_major:g}; minor when PSI &gt; {report.settings.psi_minor:g} or p &lt;
{report.settings.p_minor:g}. {html.escape(_p_value_rule(report))}
Settings: {html.escape(thresholds)}.</p>
<ul class="meta">{sources}</ul>
<table><tr>{"".join(f"<th>{header}</th>" for header in _HEADERS)}</tr>{rows}</table>
{f'<p class="meta">Not compared:</p><ul class="meta">{skipped}</ul>' if skipped else ""}
{_multivariate_section(report)}
{_quality_section(report)}
{sections}
<h2>Distributions</h2>
<p class="meta">Reference in blue, current in red; dotted lines are the PSI bin edges
(reference deciles; the outer bins are open-ended).</p>
{"".join(_section(result) for result in results)}
</body></html>
"""


def write_reports(
    report: DriftReport,
    out_dir: Path,
    *,
    generated_at: datetime | None = None,
    extra: dict[str, Any] | None = None,
    sections: str = "",
) -> tuple[Path, Path]:
    """Write ``drift.json`` (with ``extra`` sections) and ``drift.html`` (with the HTML
    ``sections`` after the summary) into ``out_dir`` (created)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    generated_at = generated_at or datetime.now(UTC)
    json_path = write_json(report, out_dir / "drift.json", generated_at=generated_at, extra=extra)
    html_path = out_dir / "drift.html"
    write_text_atomically(
        html_path, render_html(report, generated_at=generated_at, sections=sections)
    )
    return json_path, html_path
