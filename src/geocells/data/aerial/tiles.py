"""Web-mercator tile sources: an XYZ folder ``{z}/{x}/{y}.{png,jpg,jpeg,webp}`` or MBTiles.

An XYZ folder describes itself in one of three ways, tried in this order:

1. ``tiles.json`` (TileJSON-like; keys in docs/architecture.md)::

       {"zoom": 18, "bounds": [west, south, east, north], "scheme": "xyz"}

   ``zoom`` may be given as ``minzoom``/``maxzoom`` instead; ``bounds`` (note the TileJSON
   order, unlike ``AerialSource.bounds``) defaults to the extent of the tiles present at
   the highest zoom; ``scheme`` "tms" flips y.
2. ``tilemapresource.xml`` as gdal2tiles writes it (TMS, so y is flipped): zooms from the
   ``TileSet order`` attributes, tile size and extension from ``TileFormat``; only the
   ``mercator`` profile (EPSG:3857/900913) is web-mercator and accepted. gdal2tiles writes
   ``BoundingBox`` as ``minx = south, miny = west, maxx = north, maxy = east`` (degrees),
   and that is how it is read. gdal2tiles ``--xyz`` writes no such file.
3. Nothing: the zooms are the numeric sub-folders, bounds the tiles present, and the scheme
   is taken as ``xyz`` (a warning says so; write a ``tiles.json`` with ``"scheme": "tms"``
   if the rows are flipped — ``geocells dataset check`` shows the coverage either way).

MBTiles read ``metadata`` (bounds, minzoom, maxzoom) and the ``tiles`` table, whose
``tile_row`` is in TMS order (y flipped) as the MBTiles spec says. Tiles are square, any
size; PNG/WebP transparency is no-data; a missing tile is no-data. The highest zoom is
used unless a crop is coarse enough for a lower zoom that exists; decoded tiles are kept
in an LRU cache.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import sqlite3
from collections import OrderedDict
from pathlib import Path

import mercantile
import numpy as np
from PIL import Image

from geocells.data.aerial.base import (
    OutOfCoverageError,
    check_crop_args,
    crop_to_pixels,
    footprint_box,
    pyramid_level,
    sample_with_pyramid,
    to_rgba,
)

TILE_EXTENSIONS = ("png", "jpg", "jpeg", "webp")
TMS_FILE = "tilemapresource.xml"
TILES_JSON_KEYS = ("zoom", "minzoom", "maxzoom", "bounds", "scheme", "format", "tile_size")
logger = logging.getLogger(__name__)

_HALF_WORLD = math.pi * 6378137.0  # half the web-mercator extent in metres


class _TileSource:
    """Shared web-mercator maths, tile cache and sampling; subclasses fetch tile bytes."""

    name = "tiles"

    def __init__(self, minzoom: int, maxzoom: int, bounds, cache_tiles: int) -> None:
        self.minzoom, self.maxzoom = int(minzoom), int(maxzoom)
        self.bounds = tuple(float(b) for b in bounds)  # south, west, north, east
        self.tile_size: int | None = None
        self._cache: OrderedDict[tuple[int, int, int], np.ndarray | None] = OrderedDict()
        self._cache_tiles = cache_tiles

    def _tile_bytes(self, z: int, x: int, y: int) -> bytes | None:
        raise NotImplementedError

    def _decode(self, z: int, x: int, y: int) -> np.ndarray | None:
        """Decoded RGBA tile (alpha > 0 = valid) from the LRU cache, None when absent."""
        key = (z, x, y)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        data = self._tile_bytes(z, x, y)
        tile = None
        if data is not None:
            try:
                with Image.open(io.BytesIO(data)) as image:
                    rgba = np.asarray(image.convert("RGBA"))
            except (OSError, SyntaxError, ValueError) as err:
                raise ValueError(f"{self.name}: tile {z}/{x}/{y} is corrupt: {err}") from err
            tile = to_rgba(rgba[..., :3], rgba[..., 3] > 0)
            if self.tile_size is None:
                self.tile_size = rgba.shape[0]
        self._cache[key] = tile
        if len(self._cache) > self._cache_tiles:
            self._cache.popitem(last=False)
        return tile

    def _global_pixels(self, zoom: int):
        size = self.tile_size * 2**zoom

        def to_pixels(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            xs, ys = zip(*(mercantile.xy(lo, la) for la, lo in zip(lat, lon)), strict=True)
            x = (np.array(xs) + _HALF_WORLD) / (2 * _HALF_WORLD) * size
            y = (_HALF_WORLD - np.array(ys)) / (2 * _HALF_WORLD) * size
            return x, y

        return to_pixels

    def contains(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """``bool[N]``: whether each point is inside the bounds."""
        lat, lon = np.atleast_1d(np.asarray(lat, float)), np.atleast_1d(np.asarray(lon, float))
        south, west, north, east = self.bounds
        return (lat >= south) & (lat <= north) & (lon >= west) & (lon <= east)

    def _ensure_tile_size(self, lat: float, lon: float) -> None:
        if self.tile_size is not None:
            return
        tile = mercantile.tile(lon, lat, self.maxzoom)
        if self._decode(self.maxzoom, tile.x, tile.y) is None:
            raise OutOfCoverageError(lat, lon, self.bounds, f"{self.name} (no tile {tile})")

    def crop(
        self, lat: float, lon: float, size_m: float, px: int, rotation_deg: float = 0.0
    ) -> np.ndarray:
        """``uint8[px, px, 3]`` crop, north-up at rotation 0 (conventions: aerial.base)."""
        check_crop_args(lat, lon, size_m, px)
        if not self.contains(lat, lon)[0]:
            raise OutOfCoverageError(lat, lon, self.bounds, self.name)
        self._ensure_tile_size(lat, lon)
        affine = crop_to_pixels(
            lat, lon, size_m, px, rotation_deg, self._global_pixels(self.maxzoom)
        )
        levels_down = pyramid_level(affine)
        zoom = max(self.maxzoom - levels_down, self.minzoom)
        affine /= 2 ** (self.maxzoom - zoom)
        image, origin = self._mosaic(zoom, footprint_box(affine, px))
        affine[0, 2] -= origin[0]
        affine[1, 2] -= origin[1]
        rgb, valid = sample_with_pyramid([image], affine, px)
        centre = (px - 1) // 2
        if not valid[centre, centre]:
            raise OutOfCoverageError(lat, lon, self.bounds, f"{self.name} (no imagery there)")
        return rgb

    def _mosaic(self, zoom: int, box) -> tuple[np.ndarray, tuple[int, int]]:
        """The pixel box at ``zoom`` cut out of its tiles into one RGBA image (+ its origin);
        only the needed part of each tile is copied."""
        size, world = self.tile_size, self.tile_size * 2**zoom
        x0, y0 = (
            min(max(math.floor(box[0]), 0), world - 1),
            min(max(math.floor(box[1]), 0), world - 1),
        )
        x1, y1 = (
            max(min(math.ceil(box[2]), world), x0 + 1),
            max(min(math.ceil(box[3]), world), y0 + 1),
        )
        image = np.zeros((y1 - y0, x1 - x0, 4), dtype=np.uint8)
        for ty in range(y0 // size, (y1 - 1) // size + 1):
            for tx in range(x0 // size, (x1 - 1) // size + 1):
                tile = self._decode(zoom, tx, ty)
                if tile is None:
                    continue
                if tile.shape[:2] != (size, size):
                    raise ValueError(f"{self.name}: tile {zoom}/{tx}/{ty} is not {size} px square")
                left, top = max(x0, tx * size), max(y0, ty * size)
                right, bottom = min(x1, (tx + 1) * size), min(y1, (ty + 1) * size)
                image[top - y0 : bottom - y0, left - x0 : right - x0] = tile[
                    top - ty * size : bottom - ty * size, left - tx * size : right - tx * size
                ]
        return image, (x0, y0)


def _bounds_from_tiles(tiles: list[tuple[int, int]], zoom: int) -> tuple[float, ...]:
    """(south, west, north, east) of a set of (x, y) XYZ tiles."""
    xs, ys = [t[0] for t in tiles], [t[1] for t in tiles]
    north_west = mercantile.bounds(min(xs), min(ys), zoom)
    south_east = mercantile.bounds(max(xs), max(ys), zoom)
    return (south_east.south, north_west.west, north_west.north, south_east.east)


def _read_tiles_json(path: Path) -> dict:
    """``tiles.json`` as a dict; keys other than ours (TileJSON extras) are ignored."""
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{path} must hold a JSON object")
    ignored = sorted(set(meta) - set(TILES_JSON_KEYS))
    if ignored:
        logger.debug("%s: ignoring keys %s", path, ignored)
    return meta


def _read_tilemapresource(path: Path) -> dict:
    """gdal2tiles' ``tilemapresource.xml`` as the ``tiles.json`` keys it implies."""
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as err:
        raise ValueError(f"{path} is not valid XML: {err}") from err
    tile_sets = root.find("TileSets")
    profile = tile_sets.get("profile", "") if tile_sets is not None else ""
    srs = (root.findtext("SRS") or "").strip()
    if profile != "mercator" and srs not in ("EPSG:3857", "EPSG:900913"):
        raise ValueError(
            f"{path}: profile {profile!r} (SRS {srs!r}) is not web-mercator; geocells reads "
            "gdal2tiles output made with --profile mercator (or use the GeoTIFF directly)"
        )
    orders = [int(t.get("order")) for t in root.iter("TileSet") if t.get("order") is not None]
    if not orders:
        raise ValueError(f"{path} lists no TileSet with an order (zoom)")
    meta = {"minzoom": min(orders), "maxzoom": max(orders), "scheme": "tms"}
    tile_format = root.find("TileFormat")
    if tile_format is not None:
        if tile_format.get("extension"):
            meta["format"] = tile_format.get("extension")
        if tile_format.get("width"):
            meta["tile_size"] = int(tile_format.get("width"))
    box = root.find("BoundingBox")
    if box is not None:
        try:  # gdal2tiles' order: minx = south, miny = west, maxx = north, maxy = east
            south, west = float(box.get("minx")), float(box.get("miny"))
            north, east = float(box.get("maxx")), float(box.get("maxy"))
        except (TypeError, ValueError):
            raise ValueError(f"{path}: BoundingBox needs numeric minx/miny/maxx/maxy") from None
        meta["bounds"] = [west, south, east, north]
    return meta


def _infer_meta(folder: Path) -> dict:
    """Zooms from the numeric sub-folders of a bare ``{z}/{x}/{y}`` folder; scheme xyz."""
    zooms = sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
    if not zooms:
        raise ValueError(f"XYZ folder {folder} has no tiles.json and no {{z}} sub-folders")
    logger.warning(
        "XYZ folder %s has no tiles.json or tilemapresource.xml: zooms %d-%d, scheme "
        'assumed \'xyz\' (write tiles.json with "scheme": "tms" if y is flipped)',
        folder,
        zooms[0],
        zooms[-1],
    )
    return {"minzoom": zooms[0], "maxzoom": zooms[-1], "scheme": "xyz"}


def xyz_metadata(folder: Path) -> tuple[dict, Path]:
    """The folder's tile metadata and the file it came from (the folder when inferred)."""
    for name, reader in (("tiles.json", _read_tiles_json), (TMS_FILE, _read_tilemapresource)):
        if (folder / name).is_file():
            return reader(folder / name), folder / name
    return _infer_meta(folder), folder


class XYZTileSource(_TileSource):
    """An ``{z}/{x}/{y}.{ext}`` folder (metadata: see the module docstring)."""

    def __init__(self, folder: str | Path, cache_tiles: int = 1024) -> None:
        self.folder = Path(folder)
        self.name = f"XYZ folder {self.folder}"
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.name} does not exist")
        meta, meta_path = xyz_metadata(self.folder)
        maxzoom = meta.get("maxzoom", meta.get("zoom"))
        if maxzoom is None:
            raise ValueError(f"{meta_path} needs 'zoom' (or 'minzoom'/'maxzoom')")
        minzoom = meta.get("minzoom", maxzoom)
        self.tms = meta.get("scheme", "xyz") == "tms"
        if meta.get("scheme", "xyz") not in ("xyz", "tms"):
            raise ValueError(f"{meta_path}: scheme must be 'xyz' or 'tms'")
        self._extensions = [meta["format"]] if "format" in meta else list(TILE_EXTENSIONS)
        if "bounds" in meta:
            try:
                west, south, east, north = (float(v) for v in meta["bounds"])
            except (TypeError, ValueError):
                raise ValueError(
                    f"{meta_path}: bounds must be [west, south, east, north]"
                ) from None
            bounds = (south, west, north, east)
        else:
            bounds = _bounds_from_tiles(self._list_tiles(int(maxzoom)), int(maxzoom))
        super().__init__(minzoom, maxzoom, bounds, cache_tiles)
        self.tile_size = meta.get("tile_size")

    def _list_tiles(self, zoom: int) -> list[tuple[int, int]]:
        tiles = []
        zoom_dir = self.folder / str(zoom)
        for x_dir in zoom_dir.iterdir() if zoom_dir.is_dir() else []:
            for tile in x_dir.iterdir():
                if x_dir.name.isdigit() and tile.stem.isdigit():
                    y = int(tile.stem)
                    tiles.append((int(x_dir.name), (2**zoom - 1 - y) if self.tms else y))
        if not tiles:
            raise ValueError(f"{self.name} has no tiles at zoom {zoom}")
        return tiles

    def _tile_bytes(self, z: int, x: int, y: int) -> bytes | None:
        stored_y = (2**z - 1 - y) if self.tms else y
        for extension in self._extensions:
            path = os.path.join(self.folder, str(z), str(x), f"{stored_y}.{extension}")
            try:
                with open(path, "rb") as handle:
                    return handle.read()
            except FileNotFoundError:
                continue
        return None


class MBTilesSource(_TileSource):
    """An MBTiles (SQLite) file; ``tile_row`` is TMS (y flipped)."""

    def __init__(self, path: str | Path, cache_tiles: int = 1024) -> None:
        self.path = Path(path)
        self.name = f"MBTiles {self.path}"
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.name} not found")
        self._pid: int | None = None
        self._connection: sqlite3.Connection | None = None
        try:
            meta = dict(self._db().execute("SELECT name, value FROM metadata").fetchall())
            zooms = self._db().execute("SELECT MIN(zoom_level), MAX(zoom_level) FROM tiles")
            low, high = zooms.fetchone()
        except sqlite3.DatabaseError as err:
            raise ValueError(f"{self.name} is not a valid MBTiles file: {err}") from err
        if high is None:
            raise ValueError(f"{self.name} has no tiles")
        maxzoom = int(meta.get("maxzoom", high))
        minzoom = int(meta.get("minzoom", low))
        if "bounds" in meta:
            west, south, east, north = (float(v) for v in meta["bounds"].split(","))
            bounds = (south, west, north, east)
        else:
            rows = self._db().execute(
                "SELECT tile_column, tile_row FROM tiles WHERE zoom_level = ?", (maxzoom,)
            )
            tiles = [(x, 2**maxzoom - 1 - row) for x, row in rows]
            bounds = _bounds_from_tiles(tiles, maxzoom)
        super().__init__(minzoom, maxzoom, bounds, cache_tiles)

    def _db(self) -> sqlite3.Connection:
        """A read-only connection owned by this process (SQLite handles do not survive fork)."""
        if self._pid != os.getpid() or self._connection is None:
            uri = f"file:{self.path.resolve()}?mode=ro"
            self._connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self._pid = os.getpid()
        return self._connection

    def _tile_bytes(self, z: int, x: int, y: int) -> bytes | None:
        row = (
            self._db()
            .execute(
                "SELECT tile_data FROM tiles"
                " WHERE zoom_level = ? AND tile_column = ? AND tile_row = ?",
                (z, x, 2**z - 1 - y),
            )
            .fetchone()
        )
        return None if row is None else bytes(row[0])
