"""MSLS and EXIF photo-folder imports on fixtures in their published layouts."""

import numpy as np
import pytest
from PIL import Image

from fixtures_import import write_image
from geocells.cli import main
from geocells.data.dataset import Dataset
from geocells.data.importers import ImportOptions, get_importer

MSLS_HEADER = ",key,lon,lat,ca,captured_at,pano\n"


def _msls_city(root, part, city, lat, lon, keys):
    for role_index, role in enumerate(("query", "database")):
        folder = root / part / city / role
        rows = []
        for k, key in enumerate(keys):
            name = f"{key}{role[0]}"
            pano = k == 2
            size = (64, 32) if pano else (40, 30)
            write_image(folder / "images" / f"{name}.jpg", size)
            row = [k, name, lon + k * 1e-4, lat + role_index * 1e-4, 10.0 * k + 355]
            rows.append(",".join(map(str, [*row, 1500000000000 + k, pano])))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "raw.csv").write_text(MSLS_HEADER + "\n".join(rows) + "\n")


def test_msls_headings_panoramas_and_city_splits(tmp_path):
    root = tmp_path / "msls"
    _msls_city(root, "train_val", "london", 51.5, -0.12, ["a", "b", "c"])
    _msls_city(root, "train_val", "cph", 55.67, 12.56, ["d", "e", "f"])
    _msls_city(root, "train_val", "boston", 42.36, -71.06, ["g", "h", "i"])
    (root / "test" / "miami" / "query").mkdir(parents=True)  # MSLS test: no coordinates
    out = tmp_path / "ds"
    assert main(["import", "msls", str(root), "--out", str(out), "--test-cities", "boston"]) == 0
    manifest = Dataset.open(out, strict=True).manifest
    assert len(manifest) == 18
    splits = dict(zip(manifest.image_id, manifest.split_name))
    assert splits["london/aq"] == "train" and splits["cph/ed"] == "val"
    assert splits["boston/gq"] == "test"
    row = manifest.image_id.tolist().index("london/bd")
    assert manifest.lat[row] == pytest.approx(51.5001) and manifest.lon[row] == pytest.approx(
        -0.1199
    )
    assert manifest.heading[row] == pytest.approx(5.0)  # ca 365 -> 5° clockwise from north
    assert np.isnan(manifest.fov[row])
    pano = manifest.image_id.tolist().index("london/cq")
    assert manifest.fov[pano] == 360
    assert manifest.captured_at[row] == "2017-07-14T02:40:00.001000+00:00"
    with pytest.raises(FileNotFoundError, match=r"no MSLS raw\.csv"):
        get_importer("msls")(tmp_path)


def _exif(lat=None, lon=None, direction=None, taken=None):
    exif = Image.Exif()
    gps = {}
    if lat is not None:
        degrees = abs(lat)
        gps.update({1: "N" if lat >= 0 else "S", 2: (int(degrees), (degrees % 1) * 60, 0.0)})
    if lon is not None:
        degrees = abs(lon)
        gps.update({3: "E" if lon >= 0 else "W", 4: (int(degrees), (degrees % 1) * 60, 0.0)})
    if direction is not None:
        gps.update({16: "T", 17: direction})
    if gps:
        exif[0x8825] = gps
    if taken:
        exif[0x8769] = {36867: taken, 36881: "+02:00"}
    return exif


def test_photo_folder_reads_exif_and_reports_photos_without_gps(tmp_path):
    photos = tmp_path / "holiday"
    write_image(photos / "day1" / "a.jpg", (40, 30), exif=_exif(-33.5, -70.25, 123.5,
                "2021:06:01 12:34:56"))  # fmt: skip
    write_image(photos / "day1" / "b.jpg", (40, 30), exif=_exif(48.75, 2.5))
    write_image(photos / "day2" / "no-gps.jpg", (40, 30), exif=_exif(taken="2021:06:02 08:00:00"))
    (photos / "notes.txt").write_text("not a photo")
    out = tmp_path / "ds"
    argv = ["import", "photos", str(photos), "--out", str(out), "--split-fractions", "1,0,0"]
    assert main(argv) == 0
    manifest = Dataset.open(out, strict=True).manifest
    assert manifest.image_id.tolist() == ["day1/a.jpg", "day1/b.jpg"]
    assert manifest.lat.tolist() == pytest.approx([-33.5, 48.75])
    assert manifest.lon.tolist() == pytest.approx([-70.25, 2.5])
    assert manifest.heading[0] == pytest.approx(123.5) and np.isnan(manifest.heading[1])
    assert manifest.captured_at.tolist() == ["2021-06-01T12:34:56+02:00", ""]
    report = (out / "ground" / "import_report.csv").read_text()
    assert "no-gps.jpg" in report and "no GPS position in EXIF" in report
    assert main([*argv, "--overwrite", "--strict"]) == 2  # a photo without GPS is not lost


def test_import_options_are_checked():
    with pytest.raises(ValueError, match="unknown image check 'full'"):
        ImportOptions(check_images="full")
    with pytest.raises(ValueError, match="unknown import source 'kitti'"):
        get_importer("kitti")
