"""The HTML report, its figures and the text tables, on hand-made results."""

import re
from html.parser import HTMLParser

import numpy as np

from geocells.eval import plots
from geocells.eval.report import Example, ReportData, render_html, write_report
from geocells.eval.summary import CalibrationSource, EvalSummary
from geocells.eval.table import (
    ablation_checks,
    format_bytes,
    format_metric,
    results_table_text,
    strata_table_text,
)
from geocells.eval.visuals import read_kappa_curve
from geocells.scoring import metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _summary():
    errors = {
        "hybrid": np.array([10.0, 80.0, 300.0, 40.0]),
        "aerial": np.array([500.0, 90, 800, 60]),
    }
    labels = np.array(["covered", "uncovered", "covered", "uncovered"])
    summary = {"methods": {}, "strata": {"covered": {}}}
    for name, err in errors.items():
        summary["methods"][name] = {
            "label": f"{name} label",
            "storage_bytes": 2_000_000,
            "bytes_per_km2": 20_000.0,
            "metrics": metrics.summarize(err, err[:, None], np.array([1, 1, 0, 2]), top_k=(1,)),
        }
        for label, values in metrics.stratified(labels, err).items():
            summary["strata"]["covered"].setdefault(label, {})[name] = values
    return summary, errors


def _typed(summary: dict) -> EvalSummary:
    """The hand-made methods and strata as a whole ``metrics.json`` summary."""
    return EvalSummary(
        split="test", queries=4, train_images=10, database="/db", dataset="/data",
        region_area_km2=100.0, levels={"cell": 16, "proto": 15}, kappa=1.0,
        kappa_calibrated=True, calibration=summary.get("calibration"),
        methods=summary["methods"], strata=summary["strata"],
    )  # fmt: skip


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.links, self.open_tags = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "src" in attrs:
            self.sources.append(attrs["src"])
        if tag in ("link", "script") and ("href" in attrs or "src" in attrs):
            self.links.append(attrs)


def test_report_is_self_contained_and_complete(tmp_path):
    summary, errors = _summary()
    labels = {n: i["label"] for n, i in summary["methods"].items()}
    tile = np.full((32, 32, 3), 120, np.uint8)
    figures = {
        "recall": plots.recall_curves_png(errors, labels),
        "kappa": plots.kappa_curve_png([0.1, 1, 10], [0.2, 0.5, 0.3], 1.0),
        "error_map": plots.error_map_png(
            tile, (-500, 500, -500, 500), np.zeros((4, 2)), np.ones((4, 2)) * 50, errors["hybrid"]
        ),
    }
    assert all(png.startswith(PNG_MAGIC) for png in figures.values())
    example = Example(plots.image_jpeg(tile), "q0 · 10 m", True, [(plots.image_jpeg(tile), "#1")])
    report = ReportData(
        "title", {"split": "test"}, summary["methods"], summary["strata"], figures, [example],
        interactive_map_html="<html><body>map</body></html>",
    )  # fmt: skip
    path = write_report(report, tmp_path / "report.html")
    page = path.read_text(encoding="utf-8")
    assert page == render_html(report)
    collector = _Collector()
    collector.feed(page)
    # Every image is inline; nothing is fetched from anywhere.
    assert len(collector.sources) == 3 + 2  # three figures, one query, one tile
    assert all(src.startswith("data:image/") for src in collector.sources)
    assert collector.links == []
    assert "hybrid label" in page and "aerial label" in page
    assert "srcdoc=" in page
    # The hybrid row shows its recall within 100 m in percent: 3 of 4 queries.
    hybrid_row = re.search(r'<tr class="highlight">(.*?)</tr>', page).group(1)
    assert "75.0" in hybrid_row


def test_text_tables_list_every_method():
    summary, _ = _summary()
    table = results_table_text(_typed(summary))
    lines = table.splitlines()
    assert len(lines) == 2 + 2
    assert lines[2].startswith("| hybrid label | 25.0 % | 75.0 % |")
    strata = strata_table_text(_typed(summary))
    assert "covered" in strata.splitlines()[0] and "uncovered" in strata.splitlines()[0]
    # Hybrid: covered queries err 10 and 300 m -> 50 %; uncovered 80 and 40 m -> 100 %.
    assert "| hybrid label | 50.0 % | 100.0 % |" in strata


def test_read_kappa_curve(tmp_path):
    assert read_kappa_curve(tmp_path) is None
    (tmp_path / "calibration.csv").write_text(
        "kappa,recall_100m,median_error_m\n0.5,0.2,300\n2,0.4,90\n"
    )
    kappa, recall = read_kappa_curve(tmp_path)
    assert kappa == [0.5, 2.0]
    assert recall == [0.2, 0.4]


def test_ablation_checks_compare_hybrid_with_the_rest():
    summary, _ = _summary()
    summary["strata"] = {"level-16 cell": summary["strata"]["covered"]}
    lines = ablation_checks(_typed(summary))
    # hybrid 75 % within 100 m, aerial 50 %; uncovered queries: hybrid 100 %, aerial 100 %.
    assert lines[0] == "hybrid calibrated ≥ aerial label: 75.0 % vs 50.0 % (R@1@100m)"
    assert lines[1].startswith("uncovered level-16 cells (n=2): hybrid does not beat")


def test_ablation_says_when_calibration_kept_kappa_one():
    summary, _ = _summary()
    summary["methods"]["hybrid_k1"] = dict(summary["methods"]["hybrid"], label="hybrid κ = 1")
    summary["calibration"] = CalibrationSource(
        split="val", dataset="/data", dataset_sha256="ab", recall_100m=0.5, same_dataset=True,
        kappa_max_recall=1.57, max_gain_z=1.53, kept_kappa_1=True,
    )  # fmt: skip
    line = next(x for x in ablation_checks(_typed(summary)) if "hybrid κ = 1" in x)
    assert line.startswith("hybrid calibrated ≥ hybrid κ = 1: 75.0 % vs 75.0 %")
    assert line.endswith(
        "calibration kept κ = 1: the best κ on val (1.57) was within noise (z = 1.5)"
    )
    summary["calibration"].kept_kappa_1 = False
    assert "kept" not in next(x for x in ablation_checks(_typed(summary)) if "hybrid κ = 1" in x)


def test_table_cells_format_recall_errors_ranks_and_sizes():
    assert format_metric("R@1@100m", 0.0355) == "3.5 %"
    assert format_metric("R@1@100m", 0.0355, percent="") == "3.5"
    assert format_metric("median_error_m", 3878.36) == "3,878 m"
    assert format_metric("median_rank", 25.0) == "25"
    assert format_metric("median_rank", float("nan")) == "–"
    assert format_bytes(512) == "512 B"
    assert format_bytes(955_240) == "955.2 kB"
    assert format_bytes(3_726_840) == "3.7 MB"
    assert format_bytes(2.5e15) == "2,500.0 TB"
