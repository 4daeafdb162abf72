"""A set of north-up image tiles, each with a known centre and ground size (VIGOR's
satellite images): one ``AerialSource`` with the same ``crop()`` as the other backends.

``tileset.json`` in the aerial folder::

    {"kind": "centred-tiles", "version": 1,
     "tiles": [{"path": "../../VIGOR/Chicago/satellite/satellite_41.88_-87.69.png",
                "lat": 41.88, "lon": -87.69, "size_m": 71.2}, ...]}

``path`` is relative to the folder of ``tileset.json`` (absolute paths are kept);
``size_m`` is the ground width of the tile, whose pixels are square, so a ``W``-pixel-wide
tile has ``size_m / W`` metres per pixel. Each tile maps to the local tangent plane at its
centre (exact to well below a pixel for tiles under a kilometre). Pixel-is-area: the
centre coordinate sits at pixel coordinate (W/2, H/2). Tiles may overlap (VIGOR's do, by
about half): a crop takes each output pixel from the nearest tile (by centre) that covers
it, so a crop near a tile edge is completed from its neighbours. A crop whose centre no
tile covers raises ``OutOfCoverageError``; PNG transparency is no-data.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image

from geocells.data.aerial.base import (
    OutOfCoverageError,
    check_crop_args,
    crop_to_pixels,
    metres_per_degree,
    sample_with_pyramid,
    to_rgba,
)

TILESET_FILE = "tileset.json"
TILESET_KIND = "centred-tiles"


class CentredTileSource:
    """North-up tiles with known centres and ground sizes (see the module docstring)."""

    def __init__(self, folder: str | Path, cache_tiles: int = 256) -> None:
        self.folder = Path(folder)
        self.name = f"tile set {self.folder / TILESET_FILE}"
        self.paths, lat, lon, size = _read_tileset(self.folder / TILESET_FILE)
        order = np.argsort(lat, kind="stable")
        self.paths = [self.paths[i] for i in order]
        self.lat, self.lon, self.size_m = lat[order], lon[order], size[order]
        per_degree = np.array([metres_per_degree(v) for v in self.lat])
        self.half_lat = self.size_m / 2 / per_degree[:, 0]
        self.half_lon = self.size_m / 2 / per_degree[:, 1]
        self._reach = float(self.half_lat.max())
        self.bounds = (
            float((self.lat - self.half_lat).min()),
            float((self.lon - self.half_lon).min()),
            float((self.lat + self.half_lat).max()),
            float((self.lon + self.half_lon).max()),
        )
        self._cache: OrderedDict[int, list[np.ndarray]] = OrderedDict()
        self._cache_tiles = cache_tiles
        self._lock = threading.Lock()  # crops may come from several threads

    def __repr__(self) -> str:
        return f"CentredTileSource({self.folder}, {len(self.paths)} tiles)"

    def _window(self, lat: float, reach: float) -> slice:
        """Tiles whose centre latitude is within ``reach`` degrees of ``lat`` (sorted)."""
        low = np.searchsorted(self.lat, lat - reach, side="left")
        high = np.searchsorted(self.lat, lat + reach, side="right")
        return slice(int(low), int(high))

    def _covering(self, lat: float, lon: float, margin_lat=0.0, margin_lon=0.0) -> np.ndarray:
        """Indices of tiles whose square (grown by margins) holds the point, nearest first."""
        window = self._window(lat, self._reach + margin_lat)
        d_lat = np.abs(self.lat[window] - lat)
        d_lon = np.abs(self.lon[window] - lon)
        inside = (d_lat <= self.half_lat[window] + margin_lat) & (
            d_lon <= self.half_lon[window] + margin_lon
        )
        found = np.flatnonzero(inside)
        metres_lat, metres_lon = metres_per_degree(lat)
        distance = np.hypot(d_lat[found] * metres_lat, d_lon[found] * metres_lon)
        return found[np.argsort(distance, kind="stable")] + window.start

    def contains(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """``bool[N]``: whether some tile's square holds each point."""
        lat, lon = np.atleast_1d(np.asarray(lat, float)), np.atleast_1d(np.asarray(lon, float))
        return np.array([len(self._covering(a, b)) > 0 for a, b in zip(lat, lon)], dtype=bool)

    def _levels(self, index: int) -> list[np.ndarray]:
        """The decoded RGBA tile (alpha = validity) and its cached halvings."""
        with self._lock:
            if index in self._cache:
                self._cache.move_to_end(index)
                return self._cache[index]
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                rgba = np.asarray(image.convert("RGBA"))
        except (OSError, SyntaxError, ValueError) as err:
            raise ValueError(f"{self.name}: tile {path} cannot be read: {err}") from err
        levels = [to_rgba(rgba[..., :3], rgba[..., 3] > 0)]
        with self._lock:
            self._cache[index] = levels
            if len(self._cache) > self._cache_tiles:
                self._cache.popitem(last=False)
        return levels

    def _tile_pixels(self, index: int, width: int, height: int):
        """(lat, lon) -> continuous pixel (x, y) of one tile (local tangent plane)."""
        lat0, lon0 = float(self.lat[index]), float(self.lon[index])
        metres_lat, metres_lon = metres_per_degree(lat0)
        per_pixel = float(self.size_m[index]) / width

        def to_pixels(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            x = (np.asarray(lon) - lon0) * metres_lon / per_pixel + width / 2
            y = (lat0 - np.asarray(lat)) * metres_lat / per_pixel + height / 2
            return x, y

        return to_pixels

    def crop(
        self, lat: float, lon: float, size_m: float, px: int, rotation_deg: float = 0.0
    ) -> np.ndarray:
        """``uint8[px, px, 3]`` crop, north-up at rotation 0 (conventions: aerial.base)."""
        check_crop_args(lat, lon, size_m, px)
        metres_lat, metres_lon = metres_per_degree(lat)
        radius = size_m / math.sqrt(2)  # the footprint's half-diagonal, any rotation
        candidates = self._covering(lat, lon, radius / metres_lat, radius / metres_lon)
        out = np.zeros((px, px, 3), dtype=np.uint8)
        filled = np.zeros((px, px), dtype=bool)
        for index in candidates:
            levels = self._levels(int(index))
            height, width = levels[0].shape[:2]
            to_pixels = self._tile_pixels(int(index), width, height)
            affine = crop_to_pixels(lat, lon, size_m, px, rotation_deg, to_pixels)
            rgb, valid = sample_with_pyramid(levels, affine, px)
            take = valid & ~filled
            out[take] = rgb[take]
            filled |= take
            if filled.all():
                break
        centre = (px - 1) // 2
        if not filled[centre, centre]:
            raise OutOfCoverageError(lat, lon, self.bounds, self.name)
        return out


def _read_tileset(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(absolute paths, lat, lon, size_m) of the tiles listed in ``tileset.json``."""
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(meta, dict) or meta.get("kind") != TILESET_KIND:
        raise ValueError(f'{path}: want a JSON object with "kind": "{TILESET_KIND}"')
    tiles = meta.get("tiles")
    if not isinstance(tiles, list) or not tiles:
        raise ValueError(f"{path}: 'tiles' must be a non-empty list")
    paths, values = [], []
    for number, tile in enumerate(tiles):
        try:
            record = (float(tile["lat"]), float(tile["lon"]), float(tile["size_m"]))
            name = str(tile["path"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"{path}: tile {number} needs path, lat, lon and size_m (got {tile!r})"
            ) from None
        lat, lon, size = record
        if not (-90 <= lat <= 90 and -180 <= lon <= 180 and size > 0):
            raise ValueError(f"{path}: tile {number} ({name}) has a bad centre or size {record}")
        paths.append(name if os.path.isabs(name) else os.path.normpath(path.parent / name))
        values.append(record)
    lat, lon, size = (np.array(column, dtype=np.float64) for column in zip(*values))
    return paths, lat, lon, size
