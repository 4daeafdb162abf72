"""The synthetic dataset on disk: formats, georeferencing, coverage, determinism, CLI."""

import json

import numpy as np
import pytest

from geocells.cli import main as cli_main
from geocells.config import load_preset, resolve_config
from geocells.data import Dataset
from geocells.geo import haversine_m, latlng_to_cell, region_cells
from geocells.synth import SynthConfig, run
from geocells.synth.aerial import AerialRenderer
from geocells.synth.capture import campaign_capture
from geocells.synth.world import BUILDING, World

MINI = ["size_km=0.5", "margin_m=120", "n_train=10", "n_val=3", "n_test=3", "image_size=32"]


def _world(dataset):
    return World(resolve_config(SynthConfig, dataset.world["config"]))


def test_tiny_dataset_is_complete(tiny_dataset):
    dataset = Dataset.open(tiny_dataset, strict=True)
    counts = dataset.manifest.counts()
    cfg = dataset.world["config"]
    assert counts == {"train": cfg["n_train"], "val": cfg["n_val"], "test": cfg["n_test"]}
    assert dataset.region.contains(dataset.manifest.lat, dataset.manifest.lon).all()
    assert dataset.aerial.contains(dataset.manifest.lat, dataset.manifest.lon).all()
    assert (
        np.isfinite(dataset.manifest.heading).all()
        and (dataset.manifest.fov == cfg["fov_deg"]).all()
    )


def test_building_shows_at_its_lat_lon_in_the_geotiff(tiny_dataset):
    dataset = Dataset.open(tiny_dataset)
    world = _world(dataset)
    cx, cy = world.center_xy
    gx, gy = np.meshgrid(cx[0] + np.arange(-300, 300, 4.0), cy[0] + np.arange(-300, 300, 4.0))
    lay = world.layout(gx.ravel(), gy.ravel())
    buildings = np.flatnonzero(lay.kind == BUILDING)
    i = buildings[len(buildings) // 3]
    lat, lon = world.to_latlon(gx.ravel()[i], gy.ravel()[i])
    read = dataset.aerial.crop(float(lat), float(lon), 48.0, 48).astype(float)
    renderer = AerialRenderer(
        world, campaign_capture(world.cfg.aerial_campaign, world.cfg.seed), world.cfg.gsd_m
    )
    truth = renderer.crop(gx.ravel()[i], gy.ravel()[i], 48.0, 48).astype(float)
    error = np.abs(read - truth).mean()
    shifted = renderer.crop(gx.ravel()[i] + 4.0, gy.ravel()[i], 48.0, 48).astype(float)
    assert error < 12.0, error
    assert error < 0.6 * np.abs(read - shifted).mean()


def test_coverage_leaves_cells_uncovered_and_queries_are_new(tiny_dataset):
    dataset = Dataset.open(tiny_dataset)
    manifest = dataset.manifest
    train, queries = manifest.split("train"), [manifest.split("val"), manifest.split("test")]
    cells = region_cells(dataset.region, 15)
    covered = np.isin(cells, latlng_to_cell(train.lat, train.lon, 15))
    assert 1 - covered.mean() >= 0.30
    for split in queries:
        for lat, lon in zip(split.lat, split.lon):
            assert haversine_m(lat, lon, train.lat, train.lon).min() >= 10.0
    test = manifest.split("test")
    in_covered = np.isin(
        latlng_to_cell(test.lat, test.lon, 15), latlng_to_cell(train.lat, train.lon, 15)
    )
    assert in_covered.any() and not in_covered.all()
    assert set(test.captured_at.astype(str)).isdisjoint(set(train.captured_at.astype(str)))


def _files(root):
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_and_resume(tmp_path):
    cfg = resolve_config(SynthConfig, load_preset("tiny", "synth"), MINI)
    first = _files(run(cfg, tmp_path / "a"))
    assert "aerial/orthophoto.tif" in first and "ground/manifest.parquet" in first
    assert first == _files(run(cfg, tmp_path / "b"))
    # Resume after an interruption: lost images and manifest come back identical.
    (tmp_path / "a" / "ground" / "manifest.parquet").unlink()
    (tmp_path / "a" / "ground" / "images" / "train-000003.jpg").unlink()
    assert _files(run(cfg, tmp_path / "a")) == first
    # --overwrite clears only another world: the same one is kept (nothing re-rendered).
    stamp = (tmp_path / "a" / "aerial" / "orthophoto.tif").stat().st_mtime_ns
    run(cfg, tmp_path / "a", overwrite=True)
    assert (tmp_path / "a" / "aerial" / "orthophoto.tif").stat().st_mtime_ns == stamp
    other = resolve_config(SynthConfig, load_preset("tiny", "synth"), [*MINI, "seed=5"])
    with pytest.raises(ValueError, match="overwrite"):
        run(other, tmp_path / "a")
    assert (
        json.loads((run(other, tmp_path / "a", overwrite=True) / "world.json").read_text())["seed"]
        == 5
    )


def test_cli_generates_and_previews(tmp_path, capsys):
    out = tmp_path / "ds"
    assert cli_main(["synth", "--preset", "tiny", "--out", str(out), *MINI, "n_train=24"]) == 0
    assert json.loads((out / "world.json").read_text())["config"]["n_train"] == 24
    assert cli_main(["synth", "--preset", "tiny", "--out", str(out), "bogus_key=1"]) == 2
    assert "bogus_key" in capsys.readouterr().err
    png = tmp_path / "preview.png"
    assert cli_main(["synth", "preview", str(out), "--out", str(png), "--rows", "2"]) == 0
    assert png.stat().st_size > 1000


def test_bad_config_values_are_named(tmp_path, capsys):
    code = cli_main(
        ["synth", "--preset", "tiny", "--out", str(tmp_path / "x"), "gsd_m=-1", "image_size=4"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "gsd_m" in err and "image_size" in err
    assert not (tmp_path / "x").exists()
