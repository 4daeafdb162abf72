"""The results table as Markdown text (for the terminal and the README)."""

from __future__ import annotations

import json
from pathlib import Path

COLUMNS = (
    ("R@1@25m", "≤25 m"),
    ("R@1@100m", "≤100 m"),
    ("R@1@200m", "≤200 m"),
    ("R@1@1000m", "≤1 km"),
    ("median_error_m", "median error"),
    ("median_rank", "median rank"),
)


def _cell(key: str, value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if key.startswith("R@"):
        return f"{100 * value:.1f} %"
    if key.endswith("_m"):
        return f"{value:,.0f} m"
    return f"{value:,.0f}"


def _size(num_bytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if num_bytes < 1000 or unit == "GB":
            return f"{num_bytes:,.1f} {unit}"
        num_bytes /= 1000
    return ""


def _load(metrics_json: Path | dict) -> dict:
    if isinstance(metrics_json, dict):
        return metrics_json
    return json.loads(Path(metrics_json).read_text())


def results_table_text(metrics_json: Path | dict, stratum: str | None = None) -> str:
    """Markdown table of every method in ``metrics.json`` (recall in %, database size)."""
    summary = _load(metrics_json)
    header = "| method | " + " | ".join(label for _, label in COLUMNS) + " | database | per km² |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 3)]
    for info in summary["methods"].values():
        values = " | ".join(_cell(key, info["metrics"].get(key)) for key, _ in COLUMNS)
        size = f"{_size(info['storage_bytes'])} | {_size(info['bytes_per_km2'])}"
        lines.append(f"| {info['label']} | {values} | {size} |")
    return "\n".join(lines)


def strata_table_text(metrics_json: Path | dict, key: str = "R@1@100m") -> str:
    """Markdown table of ``key`` per method and stratum, one column per stratum label."""
    summary = _load(metrics_json)
    labels = {name: info["label"] for name, info in summary["methods"].items()}
    columns = [(kind, label) for kind, by_label in summary["strata"].items() for label in by_label]
    lines = [
        "| method | " + " | ".join(f"{label} ({kind})" for kind, label in columns) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for name in summary["methods"]:
        values = " | ".join(
            _cell(key, summary["strata"][kind][label].get(name, {}).get(key))
            for kind, label in columns
        )
        lines.append(f"| {labels[name]} | {values} |")
    return "\n".join(lines)


def ablation_checks(metrics_json: Path | dict, key: str = "R@1@100m") -> list[str]:
    """The paper's ablation as lines of text: does the calibrated hybrid win, and where?"""
    summary = _load(metrics_json)
    methods = summary["methods"]
    if "hybrid" not in methods:
        return []
    hybrid = methods["hybrid"]["metrics"][key]
    lines = []
    for name in ("proto_lp", "proto_lc", "aerial", "hybrid_k1"):
        if name in methods:
            other = methods[name]["metrics"][key]
            verdict = "≥" if hybrid >= other else "<"
            lines.append(
                f"hybrid calibrated {verdict} {methods[name]['label']}: "
                f"{100 * hybrid:.1f} % vs {100 * other:.1f} % ({key})"
            )
    for kind, by_label in summary["strata"].items():
        uncovered = by_label.get("uncovered")
        if uncovered and "aerial" in uncovered:
            ours, theirs = uncovered["hybrid"][key], uncovered["aerial"][key]
            verdict = "beats" if ours > theirs else "does not beat"
            lines.append(
                f"uncovered {kind}s (n={uncovered['hybrid']['queries']}): hybrid {verdict} "
                f"aerial-only, {100 * ours:.1f} % vs {100 * theirs:.1f} %"
            )
    return lines
