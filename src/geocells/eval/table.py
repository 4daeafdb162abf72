"""The results table as Markdown text (for the terminal and the README)."""

from __future__ import annotations

from pathlib import Path

from geocells.eval.summary import EvalSummary

COLUMNS = (
    ("R@1@25m", "≤25 m"),
    ("R@1@100m", "≤100 m"),
    ("R@1@200m", "≤200 m"),
    ("R@1@1000m", "≤1 km"),
    ("median_error_m", "median error"),
    ("median_rank", "median rank"),
)


def format_metric(key: str, value, percent: str = " %") -> str:
    """One metric as text: recalls in percent (suffix ``percent``), errors in m, counts."""
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if key.startswith("R@"):
        return f"{100 * value:.1f}{percent}"
    if key.endswith("_m"):
        return f"{value:,.0f} m"
    if isinstance(value, str):
        return value
    return f"{value:,.0f}"


def format_bytes(num_bytes: float) -> str:
    """A byte count with a decimal unit (B, kB, MB, GB, TB)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if num_bytes < 1000 or unit == "TB":
            return f"{num_bytes:,.0f} B" if unit == "B" else f"{num_bytes:,.1f} {unit}"
        num_bytes /= 1000
    return ""


def results_table_text(report: EvalSummary | Path, stratum: str | None = None) -> str:
    """Markdown table of every method in ``metrics.json`` (recall in %, database size)."""
    summary = EvalSummary.of(report)
    header = "| method | " + " | ".join(label for _, label in COLUMNS) + " | database | per km² |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 3)]
    for info in summary.methods.values():
        values = " | ".join(format_metric(key, info["metrics"].get(key)) for key, _ in COLUMNS)
        size = f"{format_bytes(info['storage_bytes'])} | {format_bytes(info['bytes_per_km2'])}"
        lines.append(f"| {info['label']} | {values} | {size} |")
    return "\n".join(lines)


def strata_table_text(report: EvalSummary | Path, key: str = "R@1@100m") -> str:
    """Markdown table of ``key`` per method and stratum, one column per stratum label."""
    summary = EvalSummary.of(report)
    labels = {name: info["label"] for name, info in summary.methods.items()}
    columns = [(kind, label) for kind, by_label in summary.strata.items() for label in by_label]
    lines = [
        "| method | " + " | ".join(f"{label} ({kind})" for kind, label in columns) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for name in summary.methods:
        values = " | ".join(
            format_metric(key, summary.strata[kind][label].get(name, {}).get(key))
            for kind, label in columns
        )
        lines.append(f"| {labels[name]} | {values} |")
    return "\n".join(lines)


def ablation_checks(report: EvalSummary | Path, key: str = "R@1@100m") -> list[str]:
    """The paper's ablation as lines of text: does the calibrated hybrid win, and where?"""
    summary = EvalSummary.of(report)
    methods = summary.methods
    if "hybrid" not in methods:
        return []
    hybrid = methods["hybrid"]["metrics"][key]
    lines = []
    calibration = summary.calibration
    for name in ("proto_lp", "proto_lc", "aerial", "hybrid_k1"):
        if name in methods:
            other = methods[name]["metrics"][key]
            verdict = "≥" if hybrid >= other else "<"
            note = ""
            if name == "hybrid_k1" and calibration is not None and calibration.kept_kappa_1:
                z = calibration.max_gain_z
                note = (
                    f"; calibration kept κ = 1: the best κ on {calibration.split} "
                    f"({calibration.kappa_max_recall:.3g}) was within noise"
                    + ("" if z is None else f" (z = {z:.1f})")
                )
            lines.append(
                f"hybrid calibrated {verdict} {methods[name]['label']}: "
                f"{100 * hybrid:.1f} % vs {100 * other:.1f} % ({key}){note}"
            )
    for kind, by_label in summary.strata.items():
        uncovered = by_label.get("uncovered")
        if uncovered and "aerial" in uncovered:
            ours, theirs = uncovered["hybrid"][key], uncovered["aerial"][key]
            verdict = "beats" if ours > theirs else "does not beat"
            lines.append(
                f"uncovered {kind}s (n={uncovered['hybrid']['queries']}): hybrid {verdict} "
                f"aerial-only, {100 * ours:.1f} % vs {100 * theirs:.1f} %"
            )
    return lines
