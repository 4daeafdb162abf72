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


def test_a_panorama_is_located_from_its_four_crops(tiny_db, tiny_dataset, tmp_path, capsys):
    from PIL import Image

    from geocells.config import resolve_config
    from geocells.data.panorama import fixed_crops
    from geocells.synth import SynthConfig
    from geocells.synth.capture import sample_capture
    from geocells.synth.street import StreetRenderer
    from geocells.synth.world import World

    data = Dataset.open(tiny_dataset)
    cfg = resolve_config(SynthConfig, data.world["config"])
    world = World(cfg)
    test = data.manifest.split("test")
    x, y = world.to_xy(test.lat[:1], test.lon[:1])
    capture = [sample_capture(cfg.test_campaign, np.random.default_rng(3))]
    pano = StreetRenderer(world, 64, 90.0, 2.5, cfg.max_view_m, panorama=True).render(
        x, y, np.zeros(1), capture
    )[0]
    localizer = Localizer.load(tiny_db)
    crops = localizer.model.ground.encode(list(fixed_crops(pano, 0.0, 4, 64)))
    mean = crops.mean(0) / np.linalg.norm(crops.mean(0))
    np.testing.assert_allclose(localizer.embed([pano], panorama=True)[0], mean, atol=1e-5)
    best = localizer.locate([pano], top_k=1, panorama=True)[0][0]
    assert best.token == localizer.search(mean[None], 1)[0][0].token
    path, wide = tmp_path / "pano.jpg", tmp_path / "wide.jpg"
    Image.fromarray(pano).save(path, quality=95)
    Image.fromarray(pano[:, :100]).save(wide)
    assert main(["locate", str(tiny_db), str(path), str(wide), "--panorama", "--no-progress"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in out["results"]] == [str(path)]
    assert "twice as wide" in out["failures"][0]["error"]
