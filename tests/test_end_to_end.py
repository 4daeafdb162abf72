"""End to end: a database -> ``geocells eval`` -> metrics.json and a self-contained report.

``tiny_db`` is the real pipeline (tiny synthetic world -> a few training steps -> index ->
calibrate on val); ``micro_db`` (an untrained model over a hand-made dataset without
training images) checks the plumbing of the CLI, resuming and missing training data.
"""

import json
import re
import shutil
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from geocells import pipeline as demo
from geocells.cli import main as cli_main
from geocells.eval.evaluate import EvalOptions, run

CELL_METHODS = {"proto_lp", "proto_lc", "aerial", "hybrid_k1", "hybrid"}
THRESHOLDS = (25, 50, 100, 200, 500, 1000)


class _Page(HTMLParser):
    """Collects image sources and checks that every opened block tag is closed."""

    VOID = frozenset({"img", "meta", "br", "link", "input", "hr"})

    def __init__(self):
        super().__init__()
        self.sources, self.stack, self.errors = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.sources.append(attrs.get("src", ""))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def _check_report(out: Path, expected_methods: set[str]) -> dict:
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary["methods"]) == expected_methods
    queries = summary["queries"]
    assert queries > 0
    for name, info in summary["methods"].items():
        values = info["metrics"]
        assert values["queries"] == queries, name
        recalls = [values[f"R@1@{t}m"] for t in THRESHOLDS]
        assert all(0.0 <= r <= 1.0 for r in recalls), name
        assert recalls == sorted(recalls), name  # recall grows with the threshold
        assert values["R@1@100m"] <= values["R@5@100m"] <= values["R@10@100m"], name
        assert values["median_error_m"] >= 0 and info["storage_bytes"] > 0, name
    for kind, by_label in summary["strata"].items():
        total = sum(next(iter(per.values()))["queries"] for per in by_label.values())
        assert total == queries, kind
    # The hybrid answered through the deployed searcher (exact at this size: equal to exact).
    search = summary["search"]
    assert search["deployed_backend"] == "exact"
    assert search["r1_100m_deployed"] == search["r1_100m_exact"]
    assert search["r1_100m_exact"] == summary["methods"]["hybrid"]["metrics"]["R@1@100m"]
    page_text = (out / "report.html").read_text(encoding="utf-8")
    page = _Page()
    page.feed(page_text)
    assert page.errors == [] and page.stack == []
    assert len(page.sources) >= 3  # recall curves, error map, example images
    assert all(src.startswith("data:image/") for src in page.sources)
    assert not re.search(r"<(script|link)[^>]+(src|href)=\"https?:", page_text)
    for info in summary["methods"].values():
        assert info["label"].split(",")[0] in page_text
    _check_predictions(out, summary)
    return summary


def _check_predictions(out: Path, summary: dict) -> None:
    """predictions.parquet: a row per (query, method) that agrees with metrics.json."""
    import numpy as np
    import pyarrow.parquet as pq

    from geocells.geo import cell_to_latlng, haversine_m, token_to_cell

    table = pq.read_table(out / "predictions.parquet")
    frame = table.to_pydict()
    methods = list(summary["methods"])
    assert table.num_rows == summary["queries"] * len(methods)
    assert frame["method"][: len(methods)] == methods  # query-major
    assert len(set(frame["query_id"][: len(methods)])) == 1
    meta = table.schema.metadata
    assert json.loads(meta[b"geocells.methods"]) == {
        name: info["label"] for name, info in summary["methods"].items()
    }
    for name in methods:
        rows = [i for i, m in enumerate(frame["method"]) if m == name]
        errors = np.array([frame["error_m"][i] for i in rows])
        metrics = summary["methods"][name]["metrics"]
        assert np.mean(errors <= 100) == pytest.approx(metrics["R@1@100m"])
        assert np.median(errors) == pytest.approx(metrics["median_error_m"])
        for i in rows[:5]:
            lat, lon = np.array(frame["top_lat"][i]), np.array(frame["top_lon"][i])
            truth = haversine_m(lat, lon, frame["lat"][i], frame["lon"][i])
            assert frame["top_error_m"][i] == pytest.approx(truth)
            assert frame["top_error_m"][i][0] == pytest.approx(frame["error_m"][i])
            scores = frame["top_score"][i]
            assert scores == sorted(scores, reverse=True)
            if name in CELL_METHODS - {"proto_lp"}:  # answers are database cells
                centre = cell_to_latlng(token_to_cell(np.array(frame["top_token"][i])))
                np.testing.assert_allclose(np.stack(centre, 1), np.stack([lat, lon], 1))


@pytest.mark.slow
def test_eval_tiny_pipeline(tiny_db, tiny_dataset, tmp_path):
    options = EvalOptions(progress=False, examples_per_kind=1, interactive_map=False)
    out = run(options, tiny_db, None, tmp_path / "report", split="test")
    summary = _check_report(out, CELL_METHODS | {"ground_retrieval", "colour_histogram"})
    assert Path(summary["dataset"]) == Path(tiny_dataset).resolve()
    assert summary["train_images"] > 0
    assert summary["kappa"] == json.loads((Path(tiny_db) / "meta.json").read_text())["kappa"]
    # The ground-retrieval database is the training images; cell methods share the cells.
    methods = summary["methods"]
    assert methods["ground_retrieval"]["database_items"] == summary["train_images"]
    assert methods["aerial"]["database_items"] == methods["hybrid"]["database_items"]
    assert "κ" in (out / "report.html").read_text(encoding="utf-8")
    # Without the ground-retrieval baseline the training images are not embedded (only
    # where they are counts, for the strata), and everything else is the same.
    options = replace(options, ground_retrieval=False)
    lean = run(options, tiny_db, None, tmp_path / "lean", split="test")
    assert not list((lean / "cache").glob("train-*"))
    assert list((out / "cache").glob("train-*"))
    summary_lean = _check_report(lean, CELL_METHODS | {"colour_histogram"})
    assert summary_lean["strata"] == {
        kind: {label: {k: v for k, v in per.items() if k != "ground_retrieval"}
               for label, per in by_label.items()}
        for kind, by_label in summary["strata"].items()
    }  # fmt: skip
    assert summary_lean["train_images"] == summary["train_images"]
    assert summary_lean["methods"]["hybrid"] == summary["methods"]["hybrid"]


def test_eval_cli_resumes_and_handles_no_training_images(micro_db, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["eval", str(micro_db), "--out", str(out), "--no-interactive-map"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "| hybrid, calibrated κ" in printed and "report.html" in printed
    # Without training images there is no ground-retrieval baseline; the rest is there.
    _check_report(out, CELL_METHODS | {"colour_histogram"})
    stamp = (out / "metrics.json").stat().st_mtime_ns
    assert cli_main(argv) == 0  # finished: skipped
    assert (out / "metrics.json").stat().st_mtime_ns == stamp
    assert cli_main(["eval", str(micro_db), "--out", str(out), "--split", "nope"]) == 2


def test_eval_agrees_with_calibrate_and_flags_another_dataset(
    micro_db, micro_dataset, tmp_path, caplog
):
    calibration = json.loads((micro_db / "meta.json").read_text())["calibration"]
    options = EvalOptions(progress=False, interactive_map=False, colour_histogram=False)
    # Same dataset and split as calibrate: the calibrated hybrid scores what calibrate said.
    same = json.loads((run(options, micro_db, None, tmp_path / "same", split="val")
                       / "metrics.json").read_text())  # fmt: skip
    assert same["calibration"]["same_dataset"] and same["calibration"]["split"] == "val"
    hybrid = same["methods"]["hybrid"]["metrics"]
    assert hybrid["queries"] == calibration["queries"]
    assert hybrid["R@1@100m"] == pytest.approx(calibration["recall"])
    assert "another dataset" not in caplog.text
    # Another dataset (here: another world.json) is said so, in the log and in metrics.json.
    other = shutil.copytree(micro_dataset, tmp_path / "other")
    (other / "world.json").write_text('{"seed": 1}')
    out = run(options, micro_db, other, tmp_path / "other-report", split="val")
    assert not json.loads((out / "metrics.json").read_text())["calibration"]["same_dataset"]
    assert "calibrated on the val split of another dataset" in caplog.text
    assert "ANOTHER dataset" in (out / "report.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_demo_resumes_every_stage(tiny_dataset, tiny_run, tmp_path, capsys):
    out = tmp_path / "demo"
    # Start from the tiny world and the tiny training run, as if the demo had been killed
    # after training: it must pick both up, then index, calibrate and evaluate.
    shutil.copytree(tiny_dataset, out / "dataset")
    shutil.copytree(tiny_run, out / "run")
    report = demo.run(out, synth_preset="tiny", train_preset="tiny")
    state = json.loads((out / demo.STATE_FILE).read_text())
    assert set(state["done"]) == {"synth", "train", "index", "calibrate", "eval"}
    assert state["done"]["calibrate"] == str(out / "db") == state["done"]["index"]
    meta = json.loads((out / "db" / "meta.json").read_text())
    assert meta["kappa_calibrated"] and meta["calibration"]["split"] == "val"
    # The demo leaves out the ground-retrieval baseline (pipeline.EVAL_DEFAULTS).
    summary = _check_report(report, CELL_METHODS | {"colour_histogram"})
    assert summary["split"] == "test" and summary["kappa"] == meta["kappa"]
    stamp = (report / "metrics.json").stat().st_mtime_ns
    # A second run skips every stage.
    demo.run(out, synth_preset="tiny", train_preset="tiny")
    assert json.loads((out / demo.STATE_FILE).read_text()) == state
    assert (report / "metrics.json").stat().st_mtime_ns == stamp
    # Other settings in the same folder are refused, in one line from the CLI.
    assert cli_main(["demo", "--out", str(out), "synth.seed=5"]) == 2
    assert "geocells demo: error:" in capsys.readouterr().err
