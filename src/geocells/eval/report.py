"""One self-contained HTML evaluation report: every image inline (base64), no network access.

The page holds the results table, stratified tables, recall-vs-distance curves, the κ
curve, an error map over the aerial mosaic (static PNG, plus an interactive offline
Leaflet map from ``offlinefolium`` in an ``iframe srcdoc``), and example queries with
their top-3 aerial tiles.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from geocells.eval.table import format_bytes, format_metric
from geocells.io import atomic_write

logger = logging.getLogger(__name__)

TABLE_COLUMNS = (
    ("R@1@25m", "≤25 m"),
    ("R@1@50m", "≤50 m"),
    ("R@1@100m", "≤100 m"),
    ("R@1@200m", "≤200 m"),
    ("R@1@500m", "≤500 m"),
    ("R@1@1000m", "≤1 km"),
    ("R@5@100m", "R@5 ≤100 m"),
    ("median_error_m", "median err"),
    ("mean_error_m", "mean err"),
    ("median_rank", "median rank"),
)


@dataclass
class Example:
    """One query shown in the report with its top-3 answers."""

    query_jpeg: bytes
    caption: str
    correct: bool
    tiles: list[tuple[bytes, str]] = field(default_factory=list)  # (jpeg, caption)


@dataclass
class ReportData:
    """Everything the HTML page shows; figures are PNG/JPEG bytes."""

    title: str
    facts: Mapping[str, str]
    methods: Mapping[str, Mapping]  # name -> {"label", "metrics", "storage_bytes", ...}
    strata: Mapping[str, Mapping[str, Mapping[str, Mapping]]]  # kind -> label -> name -> metrics
    figures: Mapping[str, bytes]  # "recall", "kappa", "error_map" -> PNG
    examples: Sequence[Example] = ()
    interactive_map_html: str | None = None
    notes: Sequence[str] = ()
    strata_definitions: Mapping[str, str] = field(default_factory=dict)


def _img(data: bytes, alt: str, mime: str = "image/png", css: str = "") -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(alt)}" style="{css}" src="data:{mime};base64,{encoded}">'


def _format(key: str, value) -> str:
    return html.escape(format_metric(key, value, percent=""))


def results_table(methods: Mapping[str, Mapping], highlight: str = "hybrid") -> str:
    """The main table: recall columns in %, errors, rank and database size per method."""
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in TABLE_COLUMNS)
    rows = []
    for name, info in methods.items():
        cells = "".join(
            f"<td>{_format(key, info['metrics'].get(key))}</td>" for key, _ in TABLE_COLUMNS
        )
        size = "".join(
            f"<td>{format_bytes(info[key])}</td>" for key in ("storage_bytes", "bytes_per_km2")
        )
        css = ' class="highlight"' if name == highlight else ""
        rows.append(f"<tr{css}><th>{html.escape(info['label'])}</th>{cells}{size}</tr>")
    return (
        '<table class="results"><tr><th>method</th>'
        f"{head}<th>database</th><th>per km²</th></tr>{''.join(rows)}</table>"
        '<p class="small">Recall columns: % of test queries whose top-1 answer lies within the '
        "distance (R@5: any of the top 5). Rank: position of the first database item within "
        "200 m in the score-sorted database.</p>"
    )


def strata_table(
    strata: Mapping[str, Mapping[str, Mapping[str, Mapping]]],
    labels: Mapping[str, str],
    key: str = "R@1@100m",
) -> str:
    """``key`` per method (rows) and stratum (columns, grouped by stratification)."""
    groups = "".join(
        f'<th colspan="{len(by_label)}">{html.escape(kind)}</th>'
        for kind, by_label in strata.items()
    )
    columns = [(kind, label) for kind, by_label in strata.items() for label in by_label]
    head = "".join(
        f"<th>{html.escape(label)} (n={next(iter(strata[kind][label].values()))['queries']})</th>"
        for kind, label in columns
    )
    rows = "".join(
        f"<tr><th>{html.escape(text)}</th>"
        + "".join(
            f"<td>{_format(key, strata[kind][label].get(name, {}).get(key))}</td>"
            for kind, label in columns
        )
        + "</tr>"
        for name, text in labels.items()
    )
    return (
        f'<table class="results"><tr><th></th>{groups}</tr><tr><th>method</th>{head}</tr>'
        f"{rows}</table>"
    )


def _examples(examples: Sequence[Example]) -> str:
    blocks = []
    for example in examples:
        status = "right" if example.correct else "wrong"
        tiles = "".join(
            f"<figure>{_img(jpeg, cap, 'image/jpeg')}<figcaption>{html.escape(cap)}"
            "</figcaption></figure>"
            for jpeg, cap in example.tiles
        )
        blocks.append(
            f'<div class="example {status}"><figure>'
            f"{_img(example.query_jpeg, 'query', 'image/jpeg')}"
            f"<figcaption><b>{status}</b> · {html.escape(example.caption)}</figcaption></figure>"
            f"{tiles}</div>"
        )
    return "".join(blocks)


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1320px;color:#222;padding:0 16px}
h1{margin-bottom:4px} h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
table.results{border-collapse:collapse;font-size:14px;margin:8px 0}
table.results td,table.results th{border:1px solid #ddd;padding:4px 8px;text-align:right}
table.results th:first-child{text-align:left}
table.results tr.highlight{background:#fff3f0;font-weight:600}
.facts{columns:3;font-size:14px;color:#444} .small{font-size:12px;color:#666}
.row{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
.examples{display:grid;grid-template-columns:1fr 1fr;gap:4px 16px}
.example{display:flex;gap:8px;margin:4px 0;padding:6px;border-left:5px solid #34c759}
.example.wrong{border-left-color:#ff3b30}
.example figure{margin:0;font-size:12px;width:170px}
.example img{width:170px;height:128px;object-fit:cover;display:block}
.example figure:not(:first-child){width:134px}
.example figure:not(:first-child) img{width:128px}
iframe{width:100%;height:640px;border:1px solid #ddd}
"""


def render_html(report: ReportData) -> str:
    """The complete report page as one HTML string."""
    labels = {name: info["label"] for name, info in report.methods.items()}
    facts = "".join(
        f"<div><b>{html.escape(k)}</b>: {html.escape(v)}</div>" for k, v in report.facts.items()
    )
    strata = strata_table(report.strata, labels) + "".join(
        f'<p class="small"><b>{html.escape(kind)}</b> — {html.escape(text)}</p>'
        for kind, text in report.strata_definitions.items()
    )
    figures = report.figures
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(report.title)}"
        f"</title><style>{STYLE}</style></head><body><h1>{html.escape(report.title)}</h1>",
        f'<div class="facts">{facts}</div>',
        "".join(f'<p class="small">{html.escape(n)}</p>' for n in report.notes),
        "<h2>Results</h2>",
        results_table(report.methods),
        "<h2>Recall@1 within 100 m by stratum</h2>",
        strata,
        '<h2>Recall against distance, and κ calibration</h2><div class="row">',
        _img(figures["recall"], "recall curves") if "recall" in figures else "",
        _img(figures["kappa"], "kappa curve") if "kappa" in figures else "<p>No κ curve.</p>",
        "</div><h2>Error map (hybrid, calibrated κ)</h2>",
        _img(figures["error_map"], "error map") if "error_map" in figures else "",
    ]
    if report.interactive_map_html:
        parts.append(
            "<h3>Interactive map (offline Leaflet)</h3>"
            f'<iframe srcdoc="{html.escape(report.interactive_map_html, quote=True)}"></iframe>'
        )
    parts += [
        "<h2>Examples: queries and their top-3 cells (hybrid, calibrated κ)</h2>",
        f'<div class="examples">{_examples(report.examples)}</div>',
        "</body></html>",
    ]
    return "".join(parts)


def write_report(report: ReportData, path: Path) -> Path:
    """Write the page atomically to ``path``."""
    with atomic_write(path) as partial:
        partial.write_text(render_html(report), encoding="utf-8")
    return path
