"""VIGOR import on a fixture in the published layouts: splits, panoramas, satellite crops."""

import numpy as np
import pytest

from fixtures_import import BLUE, GREEN, RED, VIGOR_TILE_PX, build_vigor, vigor_metres_per_px
from geocells.cli import main
from geocells.data.aerial import OutOfCoverageError
from geocells.data.aerial.base import metres_per_degree
from geocells.data.dataset import Dataset


def _official(root, city, stem):
    return {line.split()[0] for line in (root / "splits" / city / f"{stem}.txt").open()}


@pytest.mark.parametrize("layout", ["original", "sample4geo"])
def test_vigor_same_area_from_a_relative_root(tmp_path, monkeypatch, layout):
    expected = build_vigor(tmp_path / "VIGOR", layout)
    monkeypatch.chdir(tmp_path)  # relative root and output, as a new user types them
    argv = ["import", "vigor", "VIGOR", "--out", "ds", "--val-fraction", "0.5"]
    assert main(argv) == 0
    monkeypatch.chdir("/")  # the manifest must not depend on the working directory
    manifest = Dataset.open(tmp_path / "ds", strict=True).manifest
    assert len(manifest) == 12
    for city, panoramas in expected["panoramas"].items():
        rows = np.char.find(manifest.path.astype(str), f"/{city}/") >= 0
        names = np.array([p.rsplit("/", 1)[1] for p in manifest.path[rows]])
        splits = manifest.split_name[rows]
        official = tmp_path / "VIGOR"
        assert set(names[splits == "test"]) == _official(official, city, "same_area_balanced_test")
        assert set(names[splits != "test"]) == _official(official, city, "same_area_balanced_train")
        name, lat, lon = panoramas[2]
        row = np.flatnonzero(rows)[list(names).index(name)]
        assert manifest.lat[row] == pytest.approx(lat) and manifest.lon[row] == pytest.approx(lon)
    assert set(manifest.split_name) == {"train", "val", "test"}
    assert np.all(manifest.fov == 360) and np.all(manifest.heading == 0)


def test_vigor_cross_area_and_satellite_crops(tmp_path):
    expected = build_vigor(tmp_path / "VIGOR")
    out = tmp_path / "ds"
    assert main(["import", "vigor", str(tmp_path / "VIGOR"), "--out", str(out),
                 "--protocol", "cross-area"]) == 0  # fmt: skip
    dataset = Dataset.open(out, strict=True)
    manifest = dataset.manifest
    chicago = np.char.find(manifest.path.astype(str), "/Chicago/") >= 0
    assert np.all(manifest.split_name[chicago] == "test") and chicago.sum() == 6
    assert set(manifest.split_name[~chicago]) <= {"train", "val"} and (~chicago).sum() == 6

    # the region: one small polygon per city, not a Chicago-New York box
    region = dataset.region
    assert len(region.polygons) == 2 and region.area_km2() < 10
    assert region.contains(manifest.lat, manifest.lon).all()

    # satellite tiles are the aerial source: the painted red block is where it should be
    aerial = dataset.aerial
    lat0, lon0 = expected["tiles"]["Chicago"][0]
    per_px = vigor_metres_per_px(lat0)
    metres_lat, metres_lon = metres_per_degree(lat0)
    half = VIGOR_TILE_PX / 2
    east, north = (44 - half) * per_px, (half - 24) * per_px  # red block centre (44, 24)
    red_lat, red_lon = lat0 + north / metres_lat, lon0 + east / metres_lon
    crop = aerial.crop(red_lat, red_lon, 6 * per_px, 6)
    assert np.all(crop == RED)
    # rotated by 90°, east is up: the block centre sits below-left of a point east of it
    rotated = aerial.crop(red_lat, red_lon + 4 * per_px / metres_lon, 16 * per_px, 16, 90.0)
    assert tuple(rotated[12, 8]) == RED and tuple(rotated[3, 8]) != RED
    assert tuple(aerial.crop(lat0 - 1.5 / metres_lat, lon0, 1.0, 4)[0, 0]) == GREEN
    # 4.5 m east is outside tile 0 (3.6 m half-width) and inside tile 1 (centred 5 m east)
    assert np.all(aerial.crop(lat0, lon0 + 4.5 / metres_lon, 0.5, 4) == BLUE)
    assert aerial.contains([lat0, lat0 + 0.01], [lon0, lon0]).tolist() == [True, False]
    with pytest.raises(OutOfCoverageError):
        aerial.crop(lat0 + 0.01, lon0, 5.0, 8)


def test_vigor_problems_are_reported(tmp_path, capsys):
    root = tmp_path / "VIGOR"
    build_vigor(root)
    (root / "Chicago" / "panorama" / "not-a-vigor-name.jpg").write_bytes(b"x")
    split = root / "splits" / "NewYork" / "same_area_balanced_test.txt"
    split.write_text(split.read_text() + "only three fields\n")
    pano = next((root / "NewYork" / "panorama").glob("p1N*"))
    pano.write_bytes(pano.read_bytes()[:-2])  # a truncated download: its end marker is gone
    out = tmp_path / "ds"
    assert main(["import", "vigor", str(root), "--out", str(out)]) == 0
    report = (out / "ground" / "import_report.csv").read_text()
    assert "not-a-vigor-name.jpg" in report and "3 fields, 13 expected" in report
    assert "truncated JPEG" in report and "NewYork/p1N" in report
    assert len(Dataset.open(out).manifest) == 11
    assert "3 skipped" in capsys.readouterr().out
    # without split files: a clear error, unless asked for hash splits
    for city in ("Chicago", "NewYork"):
        for path in (root / "splits" / city).iterdir():
            path.unlink()
    (root / "splits" / "Chicago").rmdir(), (root / "splits" / "NewYork").rmdir()
    (root / "splits").rmdir()
    argv = ["import", "vigor", str(root), "--out", str(tmp_path / "o2")]
    assert main(argv) == 2
    assert "no VIGOR split folder" in capsys.readouterr().err
    assert main([*argv, "--protocol", "hash", "--split-fractions", "1,0,0"]) == 0
    assert set(Dataset.open(tmp_path / "o2").manifest.split_name) == {"train"}
