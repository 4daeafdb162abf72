"""Formats users have (issue 22, item 7): MSLS test cities without coordinates and its
query/database roles; 16-bit orthophotos."""

import json

import numpy as np
import pytest

from fixtures_import import write_image
from fixtures_logs import captured_warnings
from geocells.cli import main
from geocells.data.dataset import Dataset

MSLS_HEADER = ",key,lon,lat,ca,captured_at,pano\n"


def _msls_role(folder, keys, lat):
    rows = []
    for k, key in enumerate(keys):
        write_image(folder / "images" / f"{key}.jpg")
        rows.append(f"{k},{key},-0.1,{lat + k * 1e-4},0,1500000000000,False")
    (folder / "raw.csv").write_text(MSLS_HEADER + "\n".join(rows) + "\n")


def test_msls_reports_cities_without_raw_csv_and_keeps_query_and_database_apart(tmp_path):
    root = tmp_path / "msls"
    _msls_role(root / "train_val" / "london" / "query", ["q1", "q2"], 51.5)
    _msls_role(root / "train_val" / "london" / "database", ["d1"], 51.6)
    (root / "test" / "miami" / "query" / "images").mkdir(parents=True)  # no coordinates
    (root / "test" / "miami" / "database").mkdir(parents=True)
    out = tmp_path / "ds"
    assert main(["import", "msls", str(root), "--out", str(out)]) == 0
    manifest = Dataset.open(out, strict=True).manifest
    roles = dict(zip(manifest.image_id.tolist(), manifest.role.tolist()))
    assert roles == {"london/q1": "query", "london/q2": "query", "london/d1": "database"}
    report = (out / "ground" / "import_report.csv").read_text()
    for role in ("query", "database"):
        assert f"test/miami/{role},no {role}/raw.csv (MSLS's test cities come without" in report
    assert manifest.split("train").role.tolist().count("query") == 2  # kept through take()


def _geotiff16(path, values, dtype="uint16"):
    """A 0.01° square EPSG:4326 raster at (50.0-50.01 N, 8.0-8.01 E): ``values`` [3, H, W]."""
    import rasterio
    from affine import Affine

    count, height, width = values.shape
    transform = Affine(0.01 / width, 0.0, 8.0, 0.0, -0.01 / height, 50.01)
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=dtype,
                   crs="EPSG:4326", transform=transform)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values.astype(dtype))
    return path


def _halves(left, right, size=64):
    values = np.empty((3, size, size))
    values[..., : size // 2] = np.asarray(left, float)[:, None, None]
    values[..., size // 2 :] = np.asarray(right, float)[:, None, None]
    return values


def test_16_bit_orthophotos_are_stretched_by_band_percentiles(tmp_path, caplog):
    import logging

    from geocells.data.aerial import open_aerial

    folder = tmp_path / "aerial"
    _geotiff16(folder / "a.tif", _halves((1000, 2000, 3000), (3000, 6000, 9000)))
    with captured_warnings(caplog, "geocells.data.aerial.geotiff", logging.INFO):
        source = open_aerial(folder)
    assert "16-bit aerial raster(s) mapped to 8 bit per band: 1000..3000, 2000..6000" in (
        caplog.text
    )
    crop = source.crop(50.005, 8.005, 500.0, 32)
    assert crop.dtype == np.uint8
    assert tuple(crop[16, 2]) == (0, 0, 0) and tuple(crop[16, 29]) == (255, 255, 255)


def test_16_bit_orthophotos_follow_a_stated_scale(tmp_path):
    from geocells.data.aerial import open_aerial

    folder = tmp_path / "aerial"
    _geotiff16(folder / "a.tif", _halves((4095, 2048, 0), (0, 0, 0)))
    (folder / "scale.json").write_text(json.dumps({"low": 0, "high": 4095}))
    crop = open_aerial(folder).crop(50.005, 8.005, 500.0, 32)
    assert tuple(crop[16, 2]) == (255, 128, 0) and tuple(crop[16, 29]) == (0, 0, 0)
    (folder / "scale.json").write_text(json.dumps({"low": [0, 0], "high": [0, 1]}))
    with pytest.raises(ValueError, match=r"scale\.json: every high must be above its low"):
        open_aerial(folder)
    _geotiff16(folder / "a.tif", _halves((1, 1, 1), (2, 2, 2)), dtype="float32")
    with pytest.raises(ValueError, match=r"bands of type \['float32'\]; 8-bit or 16-bit"):
        open_aerial(folder)
