"""The real pipeline on the tiny synthetic world: tiny_run -> index -> calibrate -> locate."""

import json

import numpy as np

from geocells.calibrate.kappa import kappa_grid
from geocells.cli import main
from geocells.data.dataset import Dataset
from geocells.db.store import Database
from geocells.geo import region_cells
from geocells.locate import Localizer


def test_tiny_database_covers_the_region(tiny_db, tiny_dataset):
    database = Database.open(tiny_db)
    data = Dataset.open(tiny_dataset)
    np.testing.assert_array_equal(database.cells, region_cells(data.region, database.cell_level))
    assert database.meta.kappa_calibrated
    assert database.meta.cells_without_aerial == 0
    lines = (tiny_db / "calibration.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + len(kappa_grid())  # header + one row per κ


def test_tiny_locate_and_rerun_is_a_no_op(tiny_db, tiny_dataset, tiny_run, capsys):
    data = Dataset.open(tiny_dataset)
    paths = list(data.manifest.split("test").path[:8])
    predictions = Localizer.load(tiny_db).locate(paths, top_k=3)
    assert [len(p) for p in predictions] == [3] * len(paths)
    assert all(0 <= p.confidence <= 1 for ranked in predictions for p in ranked)
    before = (tiny_db / "meta.json").read_text()
    argv = ["index", str(tiny_run), "--out", str(tiny_db), "--dataset", str(tiny_dataset)]
    assert main(argv) == 0  # finished database: skipped, calibration kept
    assert (tiny_db / "meta.json").read_text() == before
    assert json.loads(before)["kappa_calibrated"]
