"""Import machinery (splits, atomic writes, report, --strict, region guard, GeoParquet) and
the OSV-5M and CSV importers, on tiny fixtures in their published layouts."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from fixtures_import import build_osv5m, write_image
from fixtures_logs import captured_warnings
from geocells.cli import main
from geocells.data.dataset import Dataset
from geocells.data.geoparquet import point_lonlat
from geocells.data.images import load_image
from geocells.data.importers import assign_splits, carve_val
from geocells.geo import Region


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


def test_osv5m_from_zip_shards_test_only_and_extracted(tmp_path, monkeypatch, capsys):
    build_osv5m(tmp_path / "osv5m")
    monkeypatch.chdir(tmp_path)
    argv = ["import", "osv5m", "osv5m", "--out", "ds", "--val-fraction", "0.3"]
    assert main(argv) == 0
    manifest = Dataset.open(tmp_path / "ds", strict=True).manifest
    counts = manifest.counts()
    assert counts["test"] == 1 and counts["train"] + counts["val"] == 20 and counts["val"] > 0
    test = manifest.split("test")
    assert test.image_id.tolist() == ["77"] and (test.lat[0], test.lon[0]) == (-10.0, 120.0)
    assert "01.zip!/" in test.path[0] or "00.zip!/" in test.path[0]
    row = manifest.image_id.tolist().index("1005")
    assert tuple(np.asarray(load_image(manifest.path[row]))[0, 0]) == pytest.approx(
        (1005 % 256, 0, 0), abs=3
    )  # read from inside the zip shard
    assert manifest.captured_at[row].startswith("2020-09-13T12:26:40")
    report = (tmp_path / "ds" / "ground" / "import_report.csv").read_text()
    assert "test/88" in report and "image not found" in report
    # a test-only download, and shards extracted into folders
    build_osv5m(tmp_path / "test-only", train=False)
    assert main(["import", "osv5m", "test-only", "--out", "t"]) == 0
    assert Dataset.open(tmp_path / "t").manifest.counts() == {"train": 0, "val": 0, "test": 1}
    build_osv5m(tmp_path / "extracted", extracted=True)
    assert main(["import", "osv5m", "extracted", "--out", "e"]) == 0
    assert Dataset.open(tmp_path / "e").manifest.counts()["test"] == 1
    assert len(Dataset.open(tmp_path / "e").manifest) == 21
    capsys.readouterr()
    assert main(["import", "osv5m", str(tmp_path / "nothing-here"), "--out", "x"]) == 2
    assert "OSV-5M root not found" in capsys.readouterr().err


def test_strict_atomic_and_the_import_report(tmp_path, capsys):
    root = tmp_path / "osv5m"
    build_osv5m(root, test=False)
    (root / "train.csv").write_text(
        (root / "train.csv").read_text() + "9999,45,5,,XX,s1,\n" + "1234,95,5,,XX,s1,\n"
    )
    corrupt = root / "images" / "train" / "03"
    corrupt.mkdir()
    (corrupt / "9999.jpg").write_bytes(b"\xff\xd8 not a jpeg at all")
    write_image(corrupt / "1234.jpg")
    out = tmp_path / "ds"
    assert main(["import", "osv5m", str(root), "--out", str(out), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "--strict and 2 row(s) would be skipped" in err and "9999" in err
    assert not (out / "ground" / "manifest.parquet").exists()  # nothing half-written
    report = (out / "ground" / "import_report.csv").read_text()
    assert "lat 95.0 outside [-90, 90]" in report and "not an image" in report
    # the rerun is not "already imported": it imports, reporting the two bad rows
    assert main(["import", "osv5m", str(root), "--out", str(out)]) == 0
    assert "2 skipped" in capsys.readouterr().out
    assert len(Dataset.open(out).manifest) == 20
    assert main(["import", "osv5m", str(root), "--out", str(out)]) == 0
    assert "already imported" in capsys.readouterr().out
    # a corrupt image that slipped in (--check-images off) is found by `dataset check`
    out2 = tmp_path / "unchecked"
    argv = ["import", "osv5m", str(root), "--out", str(out2), "--check-images", "off"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["dataset", "check", str(out2), "--levels", "15"]) == 1
    text = capsys.readouterr().out
    assert "unreadable images              1 of 21 checked" in text and "9999" in text
    assert main(["dataset", "check", str(out2), "--levels", "15", "--strict"]) == 2


def test_region_fits_the_data_refuses_what_does_not_fit_and_crosses_the_antimeridian(
    tmp_path, capsys
):
    images = tmp_path / "img"
    rows = ["file,lat,lon"]
    for k, (lat, lon) in enumerate([(-17.8, 179.9995), (-17.8, -179.9995), (-17.81, 179.99)]):
        write_image(images / f"{k}.jpg")
        rows.append(f"{k}.jpg,{lat},{lon}")
    (images / "fiji.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "fiji"
    assert main(["import", "csv", str(images / "fiji.csv"), "--out", str(out)]) == 0
    region = Dataset.open(out).region
    west = [p for p in region.polygons if p[0][:, 0].max() <= -179]
    assert west and len(region.polygons) >= 2  # parts on both sides of the antimeridian
    assert region.contains([-17.8, -17.8, -17.81], [179.9995, -179.9995, 179.99]).all()
    assert region.area_km2() < 20
    # scattered worldwide points get small areas around them (~820 k level-16 cells at a
    # 20 km padding); a region over the memory budget is refused before anything is written
    rows = ["file,lat,lon"]
    for k, (lat, lon) in enumerate([(60, -150), (-40, 170), (35, 10), (0, -60), (50, 100)]):
        write_image(images / f"w{k}.jpg")
        rows.append(f"w{k}.jpg,{lat},{lon}")
    (images / "world.csv").write_text("\n".join(rows) + "\n")
    world = tmp_path / "world"
    argv = ["import", "csv", str(images / "world.csv"), "--out", str(world)]
    assert main([*argv, "--region-pad-m", "20000", "--max-region-cells", "500000"]) == 2
    err = capsys.readouterr().err
    assert "more than --max-region-cells 500,000" in err and "--region" in err
    assert not world.exists() or not (world / "ground" / "manifest.parquet").exists()
    assert main([*argv, "--region", "bbox:30,0,40,20", "--max-region-cells", "500000"]) == 2
    assert main([*argv, "--region", "bbox:34,9,36,11"]) == 0  # restricted: it fits
    assert Dataset.open(world).region.bounds == (34, 9, 36, 11)
    assert main([*argv, "--region-pad-m", "20000", "--overwrite"]) == 0
    assert Dataset.open(world).region.bounds == (34, 9, 36, 11)  # a --region is kept
    (world / "region.geojson").unlink()
    assert main([*argv, "--region-pad-m", "20000", "--overwrite"]) == 0
    assert len(Dataset.open(world).region.polygons) == 5


def test_csv_presets_mapping_optional_columns_and_geoparquet(tmp_path, capsys):
    images = tmp_path / "mp16"
    for name in ("52/44/1.jpg", "52/44/2.jpg", "a1/3.jpg"):
        write_image(images / name)
    csv = tmp_path / "mp16_places365.csv"
    csv.write_text(
        "IMG_ID,AUTHOR,LAT,LON,S3_Label,yaw,taken\n"
        "52/44/1.jpg,a@N00,10.5,20.5,1,90,2012-01-01\n"
        "52/44/2.jpg,b@N00,11.5,200,1,,\n"
        "a1/3.jpg,c@N00,12.5,22.5,0,370,\n"
        "b/4.jpg,d@N00,1,2,0,,\n"
    )
    out = tmp_path / "dataset"
    argv = ["import", "csv", str(csv), "--images", str(images), "--out", str(out),
            "--preset", "mp16", "--columns", "heading=yaw,captured_at=taken",
            "--split-fractions", "1,0,0"]  # fmt: skip
    assert main(argv) == 0
    assert "2 skipped" in capsys.readouterr().out  # lon 200 and the missing b/4.jpg
    # the images stay in mp16/: the import declares that folder, the dataset admits it
    roots = (out / "ground" / "image_roots.txt").read_text().splitlines()
    assert roots[1:] == ["../../mp16"]
    manifest = Dataset.open(out).manifest
    assert manifest.image_id.tolist() == ["52/44/1.jpg", "a1/3.jpg"] and not manifest.bad_rows
    assert manifest.heading.tolist() == [90.0, 10.0]  # 370° wraps to 10°
    assert manifest.captured_at.tolist() == ["2012-01-01", ""]
    assert manifest.path[1] == str(images / "a1" / "3.jpg")
    # GeoParquet: GIS tools see points at the images' coordinates
    table = pq.read_table(out / "ground" / "manifest.parquet")
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and geo["version"] == "1.1.0"
    assert geo["columns"]["geometry"]["geometry_types"] == ["Point"]
    assert geo["columns"]["geometry"]["bbox"] == [20.5, 10.5, 22.5, 12.5]
    assert point_lonlat(table["geometry"][1].as_py()) == (22.5, 12.5)
    # a region of the user's own is kept; mapping mistakes are one clear error
    Region.from_bbox(10, 20, 13, 23).to_geojson(out / "region.geojson")
    assert main([*argv, "--overwrite"]) == 0
    assert Dataset.open(out).region.bounds == (10, 20, 13, 23)
    capsys.readouterr()
    assert main([*argv[:-2], "--columns", "colour=AUTHOR", "--overwrite"]) == 2
    assert "unknown field 'colour'" in capsys.readouterr().err
    assert main([*argv[:7], "--columns", "lat=LATITUDE", "--overwrite"]) == 2
    assert "no column(s) ['LATITUDE']" in capsys.readouterr().err
    plain = tmp_path / "plain.csv"
    plain.write_text("IMG_ID,AUTHOR,LAT,LON\n52/44/1.jpg,a,1,2\n")
    plain_argv = ["import", "csv", str(plain), "--images", str(images)]
    assert main([*plain_argv, "--out", str(tmp_path / "p")]) == 0  # IMG_ID found by name
    assert Dataset.open(tmp_path / "p").manifest.image_id.tolist() == ["52/44/1.jpg"]
    assert main([*plain_argv, "--out", str(tmp_path / "q"), "--preset", "geoclip"]) == 2
    assert "no column(s) ['IMG_FILE']" in capsys.readouterr().err


def test_the_documented_europe_west_import_works_with_defaults(tmp_path, caplog, monkeypatch):
    """README: `import osv5m osv5m --out osv5m --region europe-west` (132 M level-16 cells)
    imports with the defaults, without listing the region's cells (issue 22, item 6)."""
    import tracemalloc

    import geocells.geo.cover as cover

    def no_covering(*args, **kwargs):
        raise AssertionError("an import must not list the region's cells")

    monkeypatch.setattr(cover, "cover_region", no_covering)
    monkeypatch.setattr(cover, "region_cells", no_covering)
    build_osv5m(tmp_path / "osv5m", test=False)
    out = tmp_path / "ds"
    tracemalloc.start()
    try:
        with captured_warnings(caplog, "geocells.data.importers.finish"):
            assert main(["import", "osv5m", str(tmp_path / "osv5m"), "--out", str(out),
                         "--region", "europe-west"]) == 0  # fmt: skip
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20  # 132 M uint64 cell ids alone would be 1 GiB
    assert Dataset.open(out).region.bounds == Region.preset("europe-west").bounds
    assert "the region holds about 1" in caplog.text and "index --shard" in caplog.text
    assert main(["import", "osv5m", str(tmp_path / "osv5m"), "--out", str(out), "--overwrite",
                 "--region", "europe-west", "--max-region-cells", "30000000"]) == 2  # fmt: skip
