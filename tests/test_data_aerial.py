"""Aerial sources: GeoTIFF (several CRSs, mosaic, windowed), XYZ folder, MBTiles.

Every source is painted from the same analytic scene around (CENTER_LAT, CENTER_LON): a
red square at the centre, a green one 40 m north, a blue one 40 m east. Crops must show
them where the crop conventions say (north-up, rotation like a heading).
"""

import io
import json
import math
import sqlite3

import mercantile
import numpy as np
import pytest
from PIL import Image

from geocells.data.aerial import OutOfCoverageError, crop_many, open_aerial
from geocells.data.aerial.base import metres_per_degree
from geocells.data.aerial.geotiff import GeoTiffSource

CENTER_LAT, CENTER_LON = 47.3769, 8.5417
HALF_WORLD = math.pi * 6378137.0
RED, GREEN, BLUE, GREY = (230, 20, 20), (20, 220, 20), (20, 20, 230), (90, 90, 90)


def paint(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """The analytic scene: uint8 [..., 3] colours at WGS84 points."""
    metres_lat, metres_lon = metres_per_degree(CENTER_LAT)
    east, north = (lon - CENTER_LON) * metres_lon, (lat - CENTER_LAT) * metres_lat
    image = np.empty((*lat.shape, 3), dtype=np.uint8)
    image[:] = GREY
    for colour, (e0, n0) in ((RED, (0, 0)), (GREEN, (0, 40)), (BLUE, (40, 0))):
        image[(np.abs(east - e0) < 6) & (np.abs(north - n0) < 6)] = colour
    return image


def write_geotiff(
    path, crs="EPSG:32632", resolution=1.0, half_size_m=200.0, clip=None, pixels=None, nodata=None
):
    """A GeoTIFF of the scene in ``crs``; ``clip`` = (col0, col1) keeps those columns only;
    ``pixels(image) -> image`` may repaint it."""
    import rasterio
    from affine import Affine
    from pyproj import Transformer

    to_crs = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    to_wgs84 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    x_centre, y_centre = to_crs.transform(CENTER_LON, CENTER_LAT)
    scale = 1.0 / math.cos(math.radians(CENTER_LAT)) if crs == "EPSG:3857" else 1.0
    step = resolution * scale
    size = round(2 * half_size_m / resolution)
    col0, col1 = clip or (0, size)
    west, north = x_centre - size / 2 * step + col0 * step, y_centre + size / 2 * step
    cols, rows = np.meshgrid(np.arange(col1 - col0) + 0.5, np.arange(size) + 0.5)
    lon, lat = to_wgs84.transform(west + cols * step, north - rows * step)
    image = paint(np.asarray(lat), np.asarray(lon))
    if pixels is not None:
        image = pixels(image)
    profile = dict(
        driver="GTiff",
        width=col1 - col0,
        height=size,
        count=3,
        dtype="uint8",
        crs=crs,
        transform=Affine(step, 0.0, west, 0.0, -step, north),
    )
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(image, -1, 0))
    return path


def tile_image(z: int, x: int, y: int, size: int = 256) -> np.ndarray:
    """Scene pixels of one web-mercator tile."""
    cols, rows = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    world = size * 2**z
    merc_x = ((x * size + cols) / world) * 2 * HALF_WORLD - HALF_WORLD
    merc_y = HALF_WORLD - ((y * size + rows) / world) * 2 * HALF_WORLD
    lon = np.degrees(merc_x / 6378137.0)
    lat = np.degrees(2 * np.arctan(np.exp(merc_y / 6378137.0)) - math.pi / 2)
    return paint(lat, lon)


def scene_tiles(zoom=17, half_size_m=200.0):
    metres_lat, metres_lon = metres_per_degree(CENTER_LAT)
    d_lat, d_lon = half_size_m / metres_lat, half_size_m / metres_lon
    west, south = CENTER_LON - d_lon, CENTER_LAT - d_lat
    east, north = CENTER_LON + d_lon, CENTER_LAT + d_lat
    tiles = list(mercantile.tiles(west, south, east, north, [zoom]))
    return tiles, [west, south, east, north]


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_xyz(folder, zoom=17, tms=False, with_bounds=True):
    tiles, bounds = scene_tiles(zoom)
    for tile in tiles:
        y = 2**zoom - 1 - tile.y if tms else tile.y
        path = folder / str(zoom) / str(tile.x) / f"{y}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(tile_image(zoom, tile.x, tile.y)))
    meta = {"zoom": zoom, "scheme": "tms" if tms else "xyz", "tilejson": "3.0.0"}
    if with_bounds:
        meta["bounds"] = bounds
    (folder / "tiles.json").write_text(json.dumps(meta))
    return folder


def write_mbtiles(path, zoom=17, with_bounds=True):
    tiles, bounds = scene_tiles(zoom)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE metadata (name TEXT, value TEXT)")
        db.execute(
            "CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER,"
            " tile_data BLOB)"
        )
        meta = [("format", "png"), ("minzoom", str(zoom)), ("maxzoom", str(zoom))]
        if with_bounds:
            meta.append(("bounds", ",".join(str(b) for b in bounds)))
        db.executemany("INSERT INTO metadata VALUES (?, ?)", meta)
        for tile in tiles:
            tms_row = 2**zoom - 1 - tile.y
            data = png_bytes(tile_image(zoom, tile.x, tile.y))
            db.execute("INSERT INTO tiles VALUES (?, ?, ?, ?)", (zoom, tile.x, tms_row, data))
    return path


def colour_at(crop: np.ndarray, row: int, col: int, colour) -> bool:
    """Whether the 3x3 patch around (row, col) has ``colour`` (up to resampling/codec noise)."""
    patch = crop[row - 1 : row + 2, col - 1 : col + 2].reshape(-1, 3).astype(int)
    return bool(np.all(np.abs(patch - np.array(colour)).max(axis=1) < 40))


def assert_scene(crop: np.ndarray, rotation_deg: float) -> None:
    """120 m / 60 px crop (2 m per pixel): markers 40 m away are 20 px from the centre."""
    assert crop.shape == (60, 60, 3) and crop.dtype == np.uint8
    centre, far = 30, 20
    assert colour_at(crop, centre, centre, RED)
    theta = math.radians(rotation_deg)
    for colour, bearing in ((GREEN, 0.0), (BLUE, math.pi / 2)):
        # a point at `bearing` appears at angle (bearing - theta) clockwise from crop-up
        angle = bearing - theta
        row = round(centre - far * math.cos(angle))
        col = round(centre + far * math.sin(angle))
        assert colour_at(crop, row, col, colour), (colour, row, col)


@pytest.mark.parametrize("crs", ["EPSG:32632", "EPSG:3857", "EPSG:2056"])
def test_geotiff_markers_any_crs(tmp_path, crs):
    source = open_aerial(write_geotiff(tmp_path / "a.tif", crs=crs))
    for rotation in (0, 90, 30):
        assert_scene(source.crop(CENTER_LAT, CENTER_LON, 120, 60, rotation), rotation)


def test_rotation_90_puts_east_up(tmp_path):
    source = open_aerial(write_geotiff(tmp_path / "a.tif"))
    crop = source.crop(CENTER_LAT, CENTER_LON, 120, 60, rotation_deg=90)
    assert colour_at(crop, 10, 30, BLUE)  # east is up
    assert colour_at(crop, 30, 10, GREEN)  # north is to the left
    north_up = source.crop(CENTER_LAT, CENTER_LON, 120, 60)
    assert colour_at(north_up, 10, 30, GREEN) and colour_at(north_up, 30, 50, BLUE)


def test_geotiff_windowed_reads_match_cached(tmp_path):
    path = write_geotiff(tmp_path / "a.tif")
    cached = GeoTiffSource([path])
    windowed = GeoTiffSource([path], max_cached_bytes=0)
    assert cached.files[0].cached and not windowed.files[0].cached
    cached.preload(levels=3)
    assert len(cached.files[0].load()) == 3
    for size_m, px in ((120, 60), (300, 64)):
        a = cached.crop(CENTER_LAT, CENTER_LON, size_m, px, 15).astype(int)
        b = windowed.crop(CENTER_LAT, CENTER_LON, size_m, px, 15).astype(int)
        assert np.abs(a - b).mean() < 4
    assert_scene(windowed.crop(CENTER_LAT, CENTER_LON, 120, 60, 45), 45)


def test_geotiff_mosaic_of_two_files(tmp_path):
    whole = write_geotiff(tmp_path / "whole.tif")
    folder = tmp_path / "mosaic"
    folder.mkdir()
    write_geotiff(folder / "west.tif", clip=(0, 210))  # seam 10 m east of the centre
    write_geotiff(folder / "east.tif", clip=(210, 400))
    mosaic = open_aerial(folder)
    assert isinstance(mosaic, GeoTiffSource) and len(mosaic.files) == 2
    single = open_aerial(whole)
    for rotation in (0, 90):
        crop = mosaic.crop(CENTER_LAT, CENTER_LON, 120, 60, rotation)
        assert_scene(crop, rotation)
        reference = single.crop(CENTER_LAT, CENTER_LON, 120, 60, rotation)
        assert np.abs(crop.astype(int) - reference).max() <= 2
    windowed = GeoTiffSource(sorted(folder.glob("*.tif")), max_cached_bytes=0)
    windowed._handles.limit = 1  # crops across the seam reopen files: the pool must cope
    for rotation in (0, 45):
        assert_scene(windowed.crop(CENTER_LAT, CENTER_LON, 120, 60, rotation), rotation)
    east_only = CENTER_LON + 60 / metres_per_degree(CENTER_LAT)[1]
    assert mosaic.contains(np.array([CENTER_LAT]), np.array([east_only]))[0]


def test_grey_and_palette_rasters(tmp_path):
    import rasterio

    rgb = write_geotiff(tmp_path / "rgb.tif")
    with rasterio.open(rgb) as src:
        profile, bands = src.profile, src.read()
    red = np.all(np.moveaxis(bands, 0, -1) == RED, axis=-1)
    profile.update(count=1)
    with rasterio.open(tmp_path / "palette.tif", "w", **profile) as dst:
        dst.write(red.astype(np.uint8)[None])
        dst.write_colormap(1, {0: (0, 0, 90, 255), 1: (250, 200, 0, 255)})
    with rasterio.open(tmp_path / "grey.tif", "w", **profile) as dst:
        dst.write((red * 200).astype(np.uint8)[None])
    palette = open_aerial(tmp_path / "palette.tif")
    for source in (palette, GeoTiffSource([tmp_path / "palette.tif"], max_cached_bytes=0)):
        crop = source.crop(CENTER_LAT, CENTER_LON, 120, 60)
        assert crop[30, 30].tolist() == [250, 200, 0] and crop[5, 5].tolist() == [0, 0, 90]
    grey = open_aerial(tmp_path / "grey.tif").crop(CENTER_LAT, CENTER_LON, 120, 60)
    assert grey[30, 30].tolist() == [200, 200, 200] and grey[5, 5].tolist() == [0, 0, 0]


def test_coarse_crops_average_instead_of_aliasing(tmp_path):
    def checkerboard(image):
        rows, cols = np.indices(image.shape[:2])
        return np.repeat((((rows + cols) % 2) * 255).astype(np.uint8)[..., None], 3, axis=2)

    path = write_geotiff(tmp_path / "checker.tif", pixels=checkerboard)
    for source in (GeoTiffSource([path]), GeoTiffSource([path], max_cached_bytes=0)):
        crop = source.crop(CENTER_LAT, CENTER_LON, 256, 32, rotation_deg=10).astype(int)
        assert np.abs(crop - 127).max() < 25  # 8 m pixels over a 1 m checkerboard: grey


def test_nodata_is_outside_coverage(tmp_path):
    def blank_west_half(image):
        image[:, : image.shape[1] // 2] = 0
        return image

    source = open_aerial(write_geotiff(tmp_path / "a.tif", pixels=blank_west_half, nodata=0))
    metres_lon = metres_per_degree(CENTER_LAT)[1]
    with pytest.raises(OutOfCoverageError):
        source.crop(CENTER_LAT, CENTER_LON - 50 / metres_lon, 40, 20)
    crop = source.crop(CENTER_LAT, CENTER_LON + 30 / metres_lon, 120, 60)
    assert crop[:, :10].max() == 0 and crop[:, -10:].min() > 0


def test_out_of_coverage(tmp_path):
    source = open_aerial(write_geotiff(tmp_path / "a.tif"))
    far_lat = CENTER_LAT + 0.05
    with pytest.raises(OutOfCoverageError, match=f"lat {far_lat:.6f}") as info:
        source.crop(far_lat, CENTER_LON, 100, 32)
    assert "bounds" in str(info.value) and isinstance(info.value, ValueError)
    inside = source.contains(np.array([CENTER_LAT, far_lat]), np.array([CENTER_LON] * 2))
    assert inside.tolist() == [True, False]
    # Near the edge: the part outside coverage is black, the centre is imagery.
    edge_lat = CENTER_LAT + 190 / metres_per_degree(CENTER_LAT)[0]
    crop = source.crop(edge_lat, CENTER_LON, 120, 60)
    assert crop[:10].max() == 0 and crop[-10:].min() > 0


def test_crop_many_flags_points_outside(tmp_path):
    source = open_aerial(write_geotiff(tmp_path / "a.tif"))
    lats = np.array([CENTER_LAT, CENTER_LAT + 1.0, CENTER_LAT])
    crops, covered = crop_many(source, lats, np.full(3, CENTER_LON), 120, 60, [0, 0, 90])
    assert crops.shape == (3, 60, 60, 3) and covered.tolist() == [True, False, True]
    assert_scene(crops[0], 0)
    assert crops[1].max() == 0
    assert_scene(crops[2], 90)


def _crop_in_child(source, queue):
    queue.put(source.crop(CENTER_LAT, CENTER_LON, 120, 60, 45))


@pytest.mark.parametrize("max_cached_bytes", [None, 0])
def test_sources_work_after_fork(tmp_path, max_cached_bytes):
    import multiprocessing

    path = write_geotiff(tmp_path / "a.tif")
    options = {} if max_cached_bytes is None else {"max_cached_bytes": max_cached_bytes}
    source = GeoTiffSource([path], **options)
    parent = source.crop(CENTER_LAT, CENTER_LON, 120, 60, 45)  # handles opened before fork
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_crop_in_child, args=(source, queue))
    child.start()
    from_child = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    np.testing.assert_array_equal(from_child, parent)


def test_bad_crop_arguments(tmp_path):
    source = open_aerial(write_geotiff(tmp_path / "a.tif"))
    with pytest.raises(ValueError, match="size_m"):
        source.crop(CENTER_LAT, CENTER_LON, -5, 32)
    with pytest.raises(ValueError, match="px"):
        source.crop(CENTER_LAT, CENTER_LON, 50, 0)


def test_xyz_folder(tmp_path):
    source = open_aerial(write_xyz(tmp_path / "xyz"))
    for rotation in (0, 90, 200):
        assert_scene(source.crop(CENTER_LAT, CENTER_LON, 120, 60, rotation), rotation)
    south, west, north, east = source.bounds
    assert south < CENTER_LAT < north and west < CENTER_LON < east
    with pytest.raises(OutOfCoverageError):
        source.crop(CENTER_LAT + 1, CENTER_LON, 100, 16)
    # A coarse crop (8 m per pixel) still finds the markers through a lower zoom level.
    coarse = source.crop(CENTER_LAT, CENTER_LON, 256, 32)
    assert coarse[16, 16, 0] > coarse[16, 16, 2]


def test_xyz_tms_scheme_and_bounds_from_tiles(tmp_path):
    source = open_aerial(write_xyz(tmp_path / "tms", tms=True, with_bounds=False))
    assert_scene(source.crop(CENTER_LAT, CENTER_LON, 120, 60, 90), 90)
    south, west, north, east = source.bounds  # the extent of the tiles on disk
    assert south < CENTER_LAT - 0.001 and north > CENTER_LAT + 0.001
    assert west < CENTER_LON - 0.001 and east > CENTER_LON + 0.001


def write_gdal2tiles(folder, zoom=17):
    """A folder as gdal2tiles (default TMS, mercator profile) writes it."""
    write_xyz(folder, zoom, tms=True, with_bounds=False)
    (folder / "tiles.json").unlink()
    _, (west, south, east, north) = scene_tiles(zoom)
    # gdal2tiles' own attribute order: minx = south, miny = west, maxx = north, maxy = east
    (folder / "tilemapresource.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<TileMap version="1.0.0" tilemapservice="http://tms.osgeo.org/1.0.0">\n'
        "  <Title>scene.tif</Title><Abstract></Abstract><SRS>EPSG:3857</SRS>\n"
        f'  <BoundingBox minx="{south:.14f}" miny="{west:.14f}" maxx="{north:.14f}" '
        f'maxy="{east:.14f}"/>\n'
        f'  <Origin x="{south:.14f}" y="{west:.14f}"/>\n'
        '  <TileFormat width="256" height="256" mime-type="image/png" extension="png"/>\n'
        '  <TileSets profile="mercator">\n'
        f'    <TileSet href="{zoom}" units-per-pixel="{156543.0339 / 2**zoom:.14f}" '
        f'order="{zoom}"/>\n'
        "  </TileSets>\n</TileMap>\n"
    )
    (folder / "openlayers.html").write_text("<html></html>")
    return folder, (south, west, north, east)


def test_gdal2tiles_folder_and_a_bare_xyz_folder(tmp_path):
    folder, bounds = write_gdal2tiles(tmp_path / "g2t")
    source = open_aerial(folder)
    assert source.bounds == pytest.approx(bounds)
    for rotation in (0, 90):
        assert_scene(source.crop(CENTER_LAT, CENTER_LON, 120, 60, rotation), rotation)
    xml = folder / "tilemapresource.xml"
    xml.write_text(xml.read_text().replace('profile="mercator"', 'profile="geodetic"')
                   .replace("EPSG:3857", "EPSG:4326"))  # fmt: skip
    with pytest.raises(ValueError, match="not web-mercator"):
        open_aerial(folder)
    bare = write_xyz(tmp_path / "bare")  # gdal2tiles --xyz: no metadata file at all
    (bare / "tiles.json").unlink()
    source = open_aerial(bare)
    assert_scene(source.crop(CENTER_LAT, CENTER_LON, 120, 60, 0), 0)


def test_mbtiles(tmp_path):
    for with_bounds in (True, False):
        path = write_mbtiles(tmp_path / f"a{with_bounds}.mbtiles", with_bounds=with_bounds)
        source = open_aerial(path)
        for rotation in (0, 90):
            assert_scene(source.crop(CENTER_LAT, CENTER_LON, 120, 60, rotation), rotation)
    with pytest.raises(OutOfCoverageError):
        source.crop(CENTER_LAT - 1, CENTER_LON, 100, 16)


def test_open_aerial_dispatch_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_aerial(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"tiles\.json"):
        open_aerial(tmp_path / "empty")
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported"):
        open_aerial(tmp_path / "a.png")
