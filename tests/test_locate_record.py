"""One result record for the Python API, ``geocells locate`` and ``POST /locate``; a bad
image never costs the good ones their answers."""

import csv
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from geocells.cli import main
from geocells.data.images import ImageLoadError
from geocells.geo import haversine_m
from geocells.locate import ImageResult, Localizer
from geocells.locate.formats import CSV_COLUMNS
from geocells.locate.record import exif_position

LAT, LON = 48.0031, 2.0042  # inside the micro dataset's region


def _exif(lat, lon, lat_ref="N", lon_ref="E", minutes=None):
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    degrees = int(lat)
    lat_minutes = (lat - degrees) * 60 if minutes is None else minutes
    gps[1], gps[2] = lat_ref, (float(degrees), float(lat_minutes), 0.0)
    gps[3], gps[4] = lon_ref, (float(int(lon)), (lon - int(lon)) * 60, 0.0)
    return exif


@pytest.fixture
def geotagged(micro_dataset, tmp_path):
    """A val photo of the micro dataset re-saved with an EXIF GPS position."""
    source = sorted((micro_dataset / "ground" / "images").glob("*.jpg"))[0]
    path = tmp_path / "tagged.jpg"
    Image.open(source).save(path, "JPEG", quality=95, exif=_exif(LAT, LON).tobytes())
    return path


def test_exif_positions_are_read_and_checked(tmp_path):
    image = Image.new("RGB", (8, 8))
    assert exif_position(image) is None
    path = tmp_path / "south_west.jpg"
    image.save(path, exif=_exif(33.5, 70.25, "S", "W").tobytes())
    assert exif_position(path) == pytest.approx((-33.5, -70.25))
    image.save(path, exif=_exif(33.5, 70.25, "X", "W").tobytes())
    assert exif_position(path) is None  # a reference that is not N/S
    image.save(path, exif=_exif(33.5, 70.25, minutes=75).tobytes())
    assert exif_position(path) is None  # 75 minutes


def test_a_bad_image_does_not_lose_the_good_ones(micro_db, geotagged, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a jpeg")
    localizer = Localizer.load(micro_db)
    results = localizer.locate([bad, geotagged, np.zeros((4, 4), np.float32)], top_k=3)
    assert [r.index for r in results] == [0, 1, 2]
    assert [r.ok for r in results] == [False, True, False]
    assert results[0].image == str(bad) and results[0].predictions == []
    assert results[2].image == "<image 2>" and "expected uint8" in results[2].error
    alone = localizer.locate([geotagged], top_k=3)[0]
    assert [p.token for p in results[1]] == [p.token for p in alone]
    with pytest.raises(ImageLoadError, match=r"bad\.jpg"):
        localizer.locate([bad, geotagged], errors="raise")


def test_the_record_carries_rank_polygon_exif_and_error(micro_db, geotagged):
    result = Localizer.load(micro_db).locate([geotagged], top_k=3)[0]
    assert isinstance(result, ImageResult) and result.ok
    assert (result.exif_lat, result.exif_lon) == pytest.approx((LAT, LON))
    assert [p.rank for p in result] == [1, 2, 3]
    for p in result:
        assert p.error_m == pytest.approx(float(haversine_m(p.lat, p.lon, LAT, LON)))
        ring = np.array(p.polygon["coordinates"][0])
        assert ring.shape == (5, 2) and ring[:, 0].min() < p.lon < ring[:, 0].max()


def test_cli_http_and_python_write_the_same_record(micro_db, micro_server, geotagged, tmp_path):
    python = Localizer.load(micro_db).locate([geotagged], top_k=2)[0].to_dict()
    outputs = {}
    for fmt in ("json", "csv", "geojson"):
        outputs[fmt] = tmp_path / f"out.{fmt}"
        argv = ["locate", str(micro_db), str(geotagged), "--top-k", "2", "--format", fmt]
        assert main([*argv, "--out", str(outputs[fmt]), "--no-progress"]) == 0
    cli = json.loads(outputs["json"].read_text())
    files = {"files": ("tagged.jpg", geotagged.read_bytes(), "image/jpeg")}
    http = httpx.post(f"{micro_server}/locate", params={"top_k": 2}, files=files).json()
    for body in (cli, http):
        assert body.keys() == {"top_k", "located", "failed", "results"}
        (record,) = body["results"]
        assert record.keys() == python.keys()
        assert record["exif_lat"] == pytest.approx(LAT)
        for got, want in zip(record["predictions"], python["predictions"]):
            assert got.keys() == want.keys()
            assert got["token"] == want["token"] and got["rank"] == want["rank"]
            assert got["error_m"] == pytest.approx(want["error_m"], abs=0.1)
    rows = list(csv.DictReader(io.StringIO(outputs["csv"].read_text())))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 2
    assert [row["token"] for row in rows] == [p["token"] for p in python["predictions"]]
    assert float(rows[0]["error_m"]) == pytest.approx(python["predictions"][0]["error_m"], abs=0.1)
    assert rows[0]["polygon"].startswith("POLYGON((")
    features = json.loads(outputs["geojson"].read_text())["features"]
    assert len(features) == 4  # a Point and a cell Polygon per prediction
    errors = [f["properties"]["error_m"] for f in features if f["properties"]["kind"] == "cell"]
    assert errors == pytest.approx([p["error_m"] for p in python["predictions"]], abs=0.1)
    assert all(f["properties"]["exif_lat"] == pytest.approx(LAT) for f in features)
