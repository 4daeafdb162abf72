"""``geocells serve`` API through a real HTTP client against a started server."""

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from geocells.data import GroundManifest
from geocells.geo import cell_to_latlng, token_to_cell
from geocells.locate import Localizer


@pytest.fixture(scope="module")
def photos(micro_dataset):
    manifest = GroundManifest.read(micro_dataset / "ground" / "manifest.parquet")
    return [open(path, "rb").read() for path in manifest.path[:3]]


def _files(*items):
    """multipart ``files`` parts from (name, bytes[, content type]) tuples."""
    return [
        ("files", (item[0], item[1], item[2] if len(item) > 2 else "image/jpeg")) for item in items
    ]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_locate_equals_the_localizer_in_process(micro_server, micro_db, photos):
    parts = _files(*[(f"{i}.jpg", data) for i, data in enumerate(photos)])
    response = httpx.post(f"{micro_server}/locate", params={"top_k": 3}, files=parts)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["located"] == 3 and body["failed"] == 0
    expected = Localizer.load(micro_db).locate([Image.open(io.BytesIO(d)) for d in photos], 3)
    for i, (result, ranked) in enumerate(zip(body["results"], expected)):
        assert result["index"] == i and result["image"] == f"{i}.jpg"
        assert result["error"] is None and result.keys() == ranked.to_dict().keys()
        got = result["predictions"]
        assert [p["token"] for p in got] == [p.token for p in ranked]
        np.testing.assert_allclose([p["score"] for p in got], [p.score for p in ranked], rtol=1e-5)
        assert [p["rank"] for p in got] == [1, 2, 3]
        for p in got:
            lat, lon = cell_to_latlng(token_to_cell([p["token"]]))
            assert (p["lat"], p["lon"]) == pytest.approx((lat[0], lon[0]))
            ring = np.array(p["polygon"]["coordinates"][0])
            assert ring.shape == (5, 2) and (ring[0] == ring[-1]).all()
            assert ring[:, 0].min() < p["lon"] < ring[:, 0].max()
            assert ring[:, 1].min() < p["lat"] < ring[:, 1].max()
            assert 0 <= p["confidence"] <= 1


def test_geojson_has_points_polygons_and_errors(micro_server, photos):
    parts = _files(("good.jpg", photos[0]), ("bad.jpg", b"no jpeg here"))
    response = httpx.post(f"{micro_server}/locate?top_k=2&format=geojson", files=parts)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "FeatureCollection"
    kinds = [
        (f["geometry"] and f["geometry"]["type"], f["properties"]["kind"]) for f in body["features"]
    ]
    assert kinds == [("Point", "prediction"), ("Polygon", "cell")] * 2 + [(None, "failure")]
    failure = body["features"][-1]["properties"]
    assert (failure["index"], failure["image"]) == (1, "bad.jpg")
    assert failure["error"] == "bad.jpg: not an image or an unsupported format"
    assert (body["located"], body["failed"]) == (1, 1)


def _bomb() -> bytes:
    """A few-kB PNG that claims 4000 x 4000 = 16 M pixels (the server allows 1 M)."""
    return _png(Image.new("1", (4000, 4000)))


@pytest.mark.parametrize(
    "part, fragment",
    [
        (("notes.txt", b"hello", "text/plain"), "content type 'text/plain' is not an image"),
        (("empty.jpg", b""), "empty file"),
        (("data.bin", b"\x00" * 100, "application/octet-stream"), "not an image"),
        (("big.png", _bomb(), "image/png"), "possible decompression bomb"),
    ],
    ids=["text", "empty", "binary", "bomb"],
)
def test_bad_images_answer_422_naming_the_problem(micro_server, part, fragment):
    response = httpx.post(f"{micro_server}/locate", files=_files(part))
    assert response.status_code == 422
    body = response.json()
    assert part[0] in body["error"] and fragment in body["error"]
    assert body["results"][0]["error"].startswith(part[0])


def test_truncated_image_fails_alone(micro_server, photos):
    parts = _files(("ok.jpg", photos[0]), ("cut.jpg", photos[1][: len(photos[1]) // 2]))
    response = httpx.post(f"{micro_server}/locate", files=parts)
    assert response.status_code == 200
    ok, cut = response.json()["results"]
    assert len(ok["predictions"]) == 5
    assert "cut.jpg" in cut["error"] and "truncated" in cut["error"]


def test_request_level_abuse_is_refused_and_the_service_goes_on(micro_server, photos):
    url = f"{micro_server}/locate"
    too_many = httpx.post(url, files=_files(*[(f"{i}.jpg", photos[0]) for i in range(5)]))
    assert too_many.status_code == 413 and "at most 4 per request" in too_many.json()["error"]
    big = httpx.post(url, files=_files(("huge.jpg", b"\xff" * (1024 * 1024 + 1))))
    assert big.status_code == 413 and "over the limit of 1 MB" in big.json()["error"]

    def chunks():  # streamed without Content-Length: the limit counts bytes as they come
        yield (
            b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n"
        )
        for _ in range(40):
            yield b"\xff" * 65536

    streamed = httpx.post(
        url, content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert streamed.status_code == 413
    wrong_type = httpx.post(url, json={"image": "photo.jpg"})
    assert wrong_type.status_code == 415 and "multipart/form-data" in wrong_type.json()["error"]
    no_files = httpx.post(url, data={"other": "1"}, files=_files())
    assert no_files.status_code in (415, 422) and "error" in no_files.json()
    missing = httpx.post(url, files=[("photo", ("a.jpg", photos[0], "image/jpeg"))])
    assert missing.status_code == 422 and "files" in missing.json()["error"]
    for params, where in (
        ({"top_k": 0}, "top_k"),
        ({"top_k": 9}, "top_k"),
        ({"format": "x"}, "format"),
    ):
        bad = httpx.post(url, params=params, files=_files(("a.jpg", photos[0])))
        assert bad.status_code == 422 and where in bad.json()["error"]
    assert httpx.get(f"{micro_server}/health").json()["status"] == "ready"
    again = httpx.post(url, files=_files(("a.jpg", photos[0])))
    assert again.status_code == 200 and again.json()["located"] == 1


def test_a_client_file_name_is_never_a_path(micro_server, photos, tmp_path):
    target = tmp_path / "written.jpg"
    response = httpx.post(f"{micro_server}/locate", files=_files((str(target), photos[0])))
    assert response.status_code == 200 and not target.exists()
    assert httpx.get(f"{micro_server}/static/..%2F..%2Fconfig.py").status_code == 404
    assert httpx.get(f"{micro_server}/static/app.js").status_code == 200


def test_cells_give_centre_polygon_and_aerial_tile(micro_server, micro_db):
    from geocells.db.store import Database

    database = Database.open(micro_db)
    cell = int(database.cells[5])
    token = str(__import__("geocells.geo", fromlist=["x"]).cell_to_token([cell])[0])
    body = httpx.get(f"{micro_server}/cells/{token.upper()}").json()
    lat, lon = cell_to_latlng([cell])
    assert body["token"] == token and body["row"] == 5 and body["level"] == 16
    assert (body["lat"], body["lon"]) == pytest.approx((lat[0], lon[0]))
    assert body["polygon"]["type"] == "Polygon"
    tile = httpx.get(f"{micro_server}{body['tile']}", params={"px": 64})
    assert tile.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(tile.content)).size == (64, 64)
    assert httpx.get(f"{micro_server}/cells/xyz").status_code == 400
    outside = httpx.get(f"{micro_server}/cells/89c25")  # New York, not in this database
    assert outside.status_code == 404 and "not in the database" in outside.json()["error"]
    assert httpx.get(f"{micro_server}/cells/{token}/tile.png?px=5000").status_code == 422


def test_tiles_render_the_aerial_source(micro_server, micro_dataset):
    import mercantile

    from geocells.data.aerial import open_aerial
    from geocells.data.aerial.base import metres_per_degree

    tile = mercantile.tile(2.004, 48.003, 18)
    response = httpx.get(f"{micro_server}/tiles/{tile.z}/{tile.x}/{tile.y}.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(response.content)))
    assert pixels.shape == (256, 256, 4) and (pixels[..., 3] == 255).all()
    # A tile this small is one crop centred on the tile, as wide as the tile.
    west, south, east, north = mercantile.bounds(tile)
    centre_lat = mercantile.lnglat(
        *[(a + b) / 2 for a, b in zip(mercantile.xy(west, south), mercantile.xy(east, north))]
    )[1]
    width_m = (east - west) * metres_per_degree(centre_lat)[1]
    crop = open_aerial(micro_dataset / "aerial").crop(centre_lat, (west + east) / 2, width_m, 256)
    np.testing.assert_array_equal(pixels[..., :3], crop)
    edge = mercantile.tile(2.0, 48.0, 14)  # straddles the imagery's south-west corner
    edge_pixels = np.asarray(
        Image.open(io.BytesIO(httpx.get(f"{micro_server}/tiles/14/{edge.x}/{edge.y}.png").content))
    )
    assert 0 < (edge_pixels[..., 3] == 255).mean() < 1
    far = np.asarray(Image.open(io.BytesIO(httpx.get(f"{micro_server}/tiles/5/3/3.png").content)))
    assert far.shape == (256, 256, 4) and not far[..., 3].any()
    for path, fragment in (("23/0/0", "zoom z=23"), ("3/8/0", "x=8"), ("3/0/-1", "y=-1")):
        bad = httpx.get(f"{micro_server}/tiles/{path}.png")
        assert bad.status_code == 400 and fragment in bad.json()["error"]
    assert httpx.get(f"{micro_server}/tiles/a/b/c.png").status_code == 422


def test_health_info_and_metrics(micro_server, photos):
    assert httpx.get(f"{micro_server}/health").json() == {"status": "ready", "cells": 42}
    info = httpx.get(f"{micro_server}/info").json()
    assert info["tiles"] and info["calibrated"] and info["limits"]["max_files"] == 4
    httpx.post(
        f"{micro_server}/locate", files=_files(("a.jpg", photos[0]), ("b.txt", b"x", "text/plain"))
    )
    text = httpx.get(f"{micro_server}/metrics").text
    assert 'geocells_requests_total{route="/locate",status="200"}' in text
    assert 'geocells_image_errors_total{reason="content_type"}' in text
    assert (
        "geocells_batch_size_count" in text
        and 'geocells_request_seconds_bucket{route="/locate",le="+Inf"}' in text
    )
    located = [
        line for line in text.splitlines() if line.startswith("geocells_images_located_total")
    ]
    assert int(located[0].split()[1]) >= 1
    assert httpx.get(f"{micro_server}/openapi.json").json()["paths"]["/locate"]["post"]
