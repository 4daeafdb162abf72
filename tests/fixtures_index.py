"""Shared pytest fixtures owned by the index tests (session-scoped, built once per worker).

- ``tiny_db``: the database of ``tiny_run`` over ``tiny_dataset``, calibrated on val.
- ``micro_db``: a database of an untrained, very small model over a hand-made dataset
  (random aerial raster, random ground images); fast, for the plumbing of locate/CLI.
"""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path

import numpy as np
import pytest

MICRO_BOUNDS = (48.000, 2.000, 48.006, 2.008)  # south, west, north, east


def _write_micro_dataset(root: Path, n_images: int = 24, seed: int = 0) -> Path:
    """region.geojson + a random GeoTIFF + random ground JPEGs (val and test)."""
    import rasterio
    from PIL import Image
    from rasterio.transform import Affine

    from geocells.data.manifest import GroundManifest
    from geocells.geo import Region

    south, west, north, east = MICRO_BOUNDS
    (root / "aerial").mkdir(parents=True)
    (root / "ground" / "images").mkdir(parents=True)
    Region.from_bbox(south, west, north, east).to_geojson(root / "region.geojson")
    rng = np.random.default_rng(seed)
    px, margin = 400, 0.003
    step_lon, step_lat = (east - west + 2 * margin) / px, (north - south + 2 * margin) / px
    transform = Affine(step_lon, 0, west - margin, 0, -step_lat, north + margin)
    profile = dict(driver="GTiff", width=px, height=px, count=3, dtype="uint8", crs="EPSG:4326")
    with rasterio.open(root / "aerial" / "mosaic.tif", "w", transform=transform, **profile) as tif:
        tif.write(rng.integers(0, 256, (3, px, px), dtype=np.uint8))
    paths = []
    for i in range(n_images):
        path = root / "ground" / "images" / f"{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    manifest = GroundManifest.from_columns(
        root / "ground",
        image_id=[f"{i:03d}" for i in range(n_images)],
        path=paths,
        lat=rng.uniform(south, north, n_images),
        lon=rng.uniform(west, east, n_images),
        split=["val" if i < 2 * n_images // 3 else "test" for i in range(n_images)],
    )
    manifest.write(root / "ground" / "manifest.parquet")
    return root


def _write_micro_run(run: Path, dataset: Path) -> Path:
    """An untrained model over the dataset's region, saved as ``run/checkpoints/last``."""
    import torch

    from geocells.geo import Region, region_cells
    from geocells.models import ModelConfig, build_model, save_model
    from geocells.train.config import ExperimentConfig

    torch.manual_seed(0)
    model_cfg = ModelConfig(
        backbone="test_resnet", clusters=4, cluster_dim=8, global_dim=16, hidden_dim=32, dim=32,
        input_size=96, aerial_input_size=96,
    )  # fmt: skip
    cells = region_cells(Region.from_geojson(dataset / "region.geojson"), 15)
    model = build_model(ExperimentConfig(model=model_cfg), cells, load_pretrained=False)
    save_model(model, run / "checkpoints" / "last.safetensors")
    return run


def build_micro_db(root: Path) -> Path:
    """Dataset, untrained run and calibrated database under ``root`` (reused if finished)."""
    from geocells.calibrate import stage as calibrate
    from geocells.db import build
    from geocells.db.store import Database

    out = root / "db"
    if (out / "meta.json").is_file() and Database.open(out).meta.kappa_calibrated:
        return out
    shutil.rmtree(root, ignore_errors=True)
    dataset = _write_micro_dataset(root / "dataset")
    run = _write_micro_run(root / "run", dataset)
    build.run(build.IndexConfig(chunk_size=16, progress=False), run, out, dataset=dataset)
    return calibrate.run(calibrate.CalibrateConfig(progress=False), out, dataset, split="val")


@pytest.fixture(scope="session")
def micro_db(tmp_path_factory) -> Path:
    """A calibrated database (about 40 level-16 cells) of an untrained tiny model over a
    hand-made dataset (``micro_db.parent / "dataset"``); built once per session, read-only."""
    # Named by the database format: worktrees of other versions share /tmp/pytest-of-USER.
    shared = tmp_path_factory.getbasetemp().parent / "geocells-index-v3"
    shared.mkdir(parents=True, exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return build_micro_db(shared / "micro")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def micro_dataset(micro_db) -> Path:
    """The hand-made dataset of ``micro_db`` (about 0.4 km², 24 ground images)."""
    return micro_db.parent / "dataset"


@pytest.fixture(scope="session")
def tiny_db(tiny_run, tiny_dataset, tmp_path_factory) -> Path:
    """The database of ``tiny_run`` over ``tiny_dataset``, calibrated on its val split."""
    from geocells.calibrate import stage as calibrate
    from geocells.db import build

    out = tmp_path_factory.mktemp("tiny_db") / "db"
    build.run(build.IndexConfig(progress=False), Path(tiny_run), out, dataset=Path(tiny_dataset))
    cfg = calibrate.CalibrateConfig(progress=False)
    return calibrate.run(cfg, out, Path(tiny_dataset), split="val")
