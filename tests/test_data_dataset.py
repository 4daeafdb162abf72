"""Dataset.open and ``geocells dataset check`` on a tiny dataset written here."""

import json

import numpy as np
import pytest

import test_data_aerial as scene
from geocells.cli import main
from geocells.data.aerial.base import metres_per_degree
from geocells.data.dataset import Dataset
from geocells.data.manifest import GroundManifest
from geocells.geo.region import Region


def _tiny_dataset(root, bad_row=True):
    """3 km region; train images in two places (two in one spot), val/test, a GeoTIFF."""
    metres_lat, metres_lon = metres_per_degree(scene.CENTER_LAT)
    lat0, lon0 = scene.CENTER_LAT, scene.CENTER_LON
    Region.from_bbox(
        lat0 - 1500 / metres_lat, lon0 - 1500 / metres_lon,
        lat0 + 1500 / metres_lat, lon0 + 1500 / metres_lon,
    ).to_geojson(root / "region.geojson")  # fmt: skip
    images = root / "ground" / "images"
    images.mkdir(parents=True)
    far_lat = lat0 + 1000 / metres_lat  # 1 km north: another level-15 cell
    rows = [("t1", lat0, lon0, "train"), ("t2", lat0, lon0, "train"),
            ("t3", far_lat, lon0, "train"), ("v1", lat0, lon0, "val"),
            ("q1", lat0, lon0, "test"), ("q2", lat0 - 1200 / metres_lat, lon0, "test")]  # fmt: skip
    for image_id, *_ in rows:
        (images / f"{image_id}.jpg").write_bytes(b"jpeg")
    ids, lats, lons, splits = zip(*rows, strict=True)
    manifest = GroundManifest.from_columns(
        root / "ground",
        image_id=list(ids),
        path=[f"images/{i}.jpg" for i in ids],
        lat=list(lats),
        lon=list(lons),
        split=list(splits),
    )
    manifest.write(root / "ground" / "manifest.parquet")
    if bad_row:  # append a row whose image is missing
        bad = GroundManifest.from_columns(
            root / "ground", check_files=False, image_id=["gone"],
            path=["images/gone.jpg"], lat=[lat0], lon=[lon0], split=["train"],
        )  # fmt: skip
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.concat_tables(
            [manifest.to_table(root / "ground"), bad.to_table(root / "ground")]
        )
        pq.write_table(table, root / "ground" / "manifest.parquet")
    (root / "aerial").mkdir()
    scene.write_geotiff(root / "aerial" / "ortho.tif", resolution=4.0)
    (root / "world.json").write_text(json.dumps({"seed": 3}))
    return root


def test_dataset_open_and_parts(tmp_path):
    dataset = Dataset.open(_tiny_dataset(tmp_path))
    assert len(dataset.manifest) == 6 and len(dataset.manifest.bad_rows) == 1
    assert dataset.world == {"seed": 3}
    assert dataset.region.contains(scene.CENTER_LAT, scene.CENTER_LON)[0]
    crop = dataset.aerial.crop(scene.CENTER_LAT, scene.CENTER_LON, 120, 60)
    assert crop.shape == (60, 60, 3)
    with pytest.raises(ValueError, match="1 of 7 rows are bad"):
        _ = Dataset.open(tmp_path, strict=True).manifest


def test_missing_parts_have_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        Dataset.open(tmp_path / "nope")
    with pytest.raises(ValueError, match="not a geocells dataset"):
        Dataset.open(tmp_path)
    (tmp_path / "aerial").mkdir()
    dataset = Dataset.open(tmp_path)
    with pytest.raises(FileNotFoundError, match="no ground manifest"):
        _ = dataset.manifest
    with pytest.raises(FileNotFoundError, match="no aerial imagery"):
        _ = dataset.aerial
    with pytest.raises(FileNotFoundError, match=r"region\.geojson"):
        _ = dataset.region
    assert dataset.world is None


def test_dataset_check_json(tmp_path, capsys):
    from geocells.geo import latlng_to_cell

    root = _tiny_dataset(tmp_path)
    assert main(["dataset", "check", str(root), "--json"]) == 1  # bad rows: a PROBLEM
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == {"train": 3, "val": 1, "test": 2}
    assert report["bad_rows"]["count"] == 1 and "gone" in report["bad_rows"]["first"][0]
    level15 = report["levels"]["15"]
    train_cells = latlng_to_cell(
        np.array(
            [scene.CENTER_LAT, scene.CENTER_LAT + 1000 / metres_per_degree(scene.CENTER_LAT)[0]]
        ),
        np.array([scene.CENTER_LON] * 2),
        15,
    )
    assert level15["covered_cells"] == len(set(train_cells.tolist())) == 2
    assert level15["median_images_per_covered_cell"] == 1.5
    assert level15["max_images_per_cell"] == 2
    total = level15["region_cells"]
    assert 100 < total < 400  # ~9 km² of ~0.08 km² cells
    assert level15["region_cells_without_train_image"] == pytest.approx(1 - 2 / total)
    assert level15["val_in_covered_cells"] == 1.0
    assert level15["test_in_covered_cells"] == 0.5
    assert report["images_outside_region"] == 0
    aerial_share = report["aerial"]["region_cell_centres_covered"]
    assert 0 < aerial_share < 0.1  # a 0.4 km square in a 3 km one
    assert any("bad manifest rows" in p for p in report["problems"])


def test_dataset_check_table_and_strict(tmp_path, capsys):
    root = _tiny_dataset(tmp_path)
    assert main(["dataset", "check", str(root)]) == 1  # it prints a PROBLEM
    text = capsys.readouterr().out
    assert "level 15" in text and "region cells without train" in text and "aerial" in text
    assert main(["dataset", "check", str(root), "--strict"]) == 2
    assert "rows are bad" in capsys.readouterr().err
