"""Importers (VIGOR, generic CSV, OSV-5M) on tiny fixtures written here, through the CLI."""

import json

import numpy as np
import pytest

from geocells.cli import main
from geocells.data.dataset import Dataset
from geocells.data.importers import assign_splits, carve_val
from geocells.geo import Region


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8jpeg")
    return path


def test_hash_splits_are_deterministic_and_proportional():
    ids = np.array([f"img{i}" for i in range(4000)], dtype=object)
    splits = assign_splits(ids, (0.7, 0.2, 0.1))
    assert splits.tolist() == assign_splits(ids[::-1], (0.7, 0.2, 0.1))[::-1].tolist()
    shares = [np.mean(splits == s) for s in ("train", "val", "test")]
    np.testing.assert_allclose(shares, [0.7, 0.2, 0.1], atol=0.03)
    with pytest.raises(ValueError, match="sum to 1"):
        assign_splits(ids, (0.5, 0.2, 0.1))
    carved = carve_val(ids, np.array(["train"] * 2000 + ["test"] * 2000, dtype=object), 0.25)
    assert np.all(carved[2000:] == "test")
    assert 0.2 < np.mean(carved[:2000] == "val") < 0.3


def test_vigor_import(tmp_path):
    root = tmp_path / "VIGOR"
    for city, lat in (("Chicago", 41.88), ("NewYork", 40.71)):
        for k in range(6):
            _touch(
                root
                / city
                / "panorama"
                / f"pano{k}{city[0]},{lat + k * 1e-3:.6f},{-87.6 + k * 1e-3:.6f},.jpg"
            )
        _touch(root / city / "satellite" / f"satellite_{lat}_-87.6.png")
    _touch(root / "Chicago" / "panorama" / "not-a-vigor-name.jpg")
    out = tmp_path / "dataset"
    assert main(["import", "vigor", str(root), "--out", str(out)]) == 0
    dataset = Dataset.open(out, strict=True)
    manifest = dataset.manifest
    assert len(manifest) == 12
    row = list(manifest.image_id).index("Chicago/pano2C")
    assert manifest.lat[row] == pytest.approx(41.882) and manifest.lon[row] == pytest.approx(
        -87.598
    )
    assert manifest.path[row].endswith("pano2C,41.882000,-87.598000,.jpg")
    assert set(manifest.split_name) <= {"train", "val", "test"}
    south, west, north, _ = dataset.region.bounds
    assert south < manifest.lat.min() and north > manifest.lat.max() and west < manifest.lon.min()

    # cross-area protocol: New York trains, Chicago tests
    out2 = tmp_path / "cross"
    assert main(["import", "vigor", str(root), "--out", str(out2), "--cross-area"]) == 0
    cross = Dataset.open(out2).manifest
    chicago = np.char.startswith(cross.image_id.astype(str), "Chicago/")
    assert np.all(cross.split_name[chicago] == "test")
    assert set(cross.split_name[~chicago]) <= {"train", "val"}


def test_csv_import_reports_bad_rows(tmp_path, capsys):
    images = tmp_path / "mp16"
    for name in ("a/1.jpg", "a/2.jpg", "b/3.jpg"):
        _touch(images / name)
    csv = tmp_path / "mp16.csv"
    csv.write_text(
        "IMG_FILE,LAT,LON\na/1.jpg,10.5,20.5\na/2.jpg,11.5,200\nb/3.jpg,12.5,22.5\nb/4.jpg,1,2\n"
    )
    out = tmp_path / "dataset"
    code = main(["import", "csv", str(csv), "--images", str(images), "--out", str(out),
                 "--split-fractions", "1,0,0"])  # fmt: skip
    assert code == 0
    assert "2 skipped" in capsys.readouterr().out  # lon 200 and the missing b/4.jpg
    manifest = Dataset.open(out).manifest
    assert manifest.image_id.tolist() == ["a/1.jpg", "b/3.jpg"]
    assert np.all(manifest.split_name == "train")
    assert manifest.path[1] == str(images / "b" / "3.jpg")
    # a second run skips the finished work, --overwrite redoes it (and its derived region)
    assert main(["import", "csv", str(csv), "--images", str(images), "--out", str(out)]) == 0
    assert "already imported" in capsys.readouterr().out
    csv.write_text("IMG_FILE,LAT,LON\na/1.jpg,30.5,20.5\n")
    argv = ["import", "csv", str(csv), "--images", str(images), "--out", str(out), "--overwrite"]
    assert main(argv) == 0
    dataset = Dataset.open(out)
    assert dataset.manifest.lat.tolist() == [30.5] and dataset.region.contains(30.5, 20.5)[0]
    # a region of the user's own is kept
    Region.from_bbox(0, 0, 1, 1).to_geojson(out / "region.geojson")
    assert main(argv) == 0
    assert Dataset.open(out).region.bounds == (0, 0, 1, 1)


def test_osv5m_import(tmp_path):
    root = tmp_path / "osv5m"
    header = "id,latitude,longitude,thumb_original_url,country,captured_at\n"
    (root / "images" / "train" / "00").mkdir(parents=True)
    root.joinpath("train.csv").write_text(
        header
        + "".join(f"{1000 + k},{45 + k / 100},{5 + k / 100},,FR,1600000000000\n" for k in range(20))
    )
    root.joinpath("test.csv").write_text(header + "77,-10.0,120.0,,ID,\n88,1,1,,XX,\n")
    for k in range(20):
        _touch(root / "images" / "train" / "00" / f"{1000 + k}.jpg")
    _touch(root / "images" / "test" / "01" / "77.jpg")  # 88 has no image
    out = tmp_path / "dataset"
    assert main(["import", "osv5m", str(root), "--out", str(out), "--val-fraction", "0.3"]) == 0
    manifest = Dataset.open(out, strict=True).manifest
    counts = manifest.counts()
    assert counts["test"] == 1 and counts["train"] + counts["val"] == 20 and counts["val"] > 0
    test = manifest.split("test")
    assert test.image_id.tolist() == ["77"] and test.lat[0] == -10.0
    assert manifest.captured_at[0].startswith("2020-09-13")
    region = json.loads((out / "region.geojson").read_text())
    assert region["type"] == "FeatureCollection"


def test_import_errors_are_one_line(tmp_path, capsys):
    assert main(["import", "osv5m", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "train.csv not found" in capsys.readouterr().err
    assert main(["import", "vigor", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no VIGOR panorama folder" in capsys.readouterr().err
