"""Web-mercator XYZ tiles and cell tiles rendered from any ``AerialSource``.

A tile ``z/x/y`` is cut from the source with ``crop()`` (north-up metric squares). A crop
is a square in the local tangent plane, a mercator tile is square in mercator metres;
both agree to well under a pixel over a few kilometres, so a tile wider than
``BLOCK_M`` is rendered as a grid of smaller crops (at most 16 x 16). A block whose centre
lies outside the imagery (``crop`` raises) is split in four until it is ``MIN_BLOCK_PX``
wide, so tiles on the edge of the coverage show the part that exists. Pixels outside the
imagery come back black from ``crop``; they are made transparent. Tiles that miss the
source's bounds are one shared transparent PNG.

All rendering runs on one thread (``TileRenderer.executor``): sources keep per-thread
buffers and unsynchronised caches, and tile work must not starve the encoder thread.
"""

from __future__ import annotations

import io
import logging
import math
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from geocells.data.aerial import AerialSource, OutOfCoverageError
from geocells.data.aerial.base import metres_per_degree

log = logging.getLogger(__name__)

TILE_PX = 256
MAX_ZOOM = 22
BLOCK_M = 2000.0  # widest single crop inside a tile
MAX_BLOCKS = 16  # per side
MIN_BLOCK_PX = 8

Bounds = tuple[float, float, float, float]  # south, west, north, east


class TileRequestError(ValueError):
    """Tile coordinates that do not exist."""


def check_tile(z: int, x: int, y: int, max_zoom: int = MAX_ZOOM) -> None:
    """Raise ``TileRequestError`` unless ``0 <= z <= max_zoom`` and ``0 <= x, y < 2^z``."""
    if not 0 <= z <= max_zoom:
        raise TileRequestError(f"tile zoom z={z} is out of range 0..{max_zoom}")
    side = 1 << z
    for name, value in (("x", x), ("y", y)):
        if not 0 <= value < side:
            raise TileRequestError(f"tile {name}={value} is out of range 0..{side - 1} at z={z}")


def _png(rgba: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA" if rgba.shape[2] == 4 else "RGB").save(
        buffer, "PNG", compress_level=3
    )
    return buffer.getvalue()


def _intersects(a: Bounds, b: Bounds) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _mercator_bounds(x: float, y: float, size: float, zoom: int) -> Bounds:
    """(south, west, north, east) of the square ``[x, x+size] x [y, y+size]`` in tile units."""
    west, north = _tile_lnglat(x, y, zoom)
    east, south = _tile_lnglat(x + size, y + size, zoom)
    return south, west, north, east


def _tile_lnglat(x: float, y: float, zoom: int) -> tuple[float, float]:
    """Longitude, latitude of fractional tile coordinates (x, y) at ``zoom``."""
    n = 2.0**zoom
    lon = x / n * 360.0 - 180.0
    lat = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * y / n))))
    return lon, lat


class TileRenderer:
    """XYZ tiles (PNG, ``TILE_PX`` square) and cell crops from an aerial source, cached."""

    def __init__(self, source: AerialSource, cache_size: int = 1024) -> None:
        self.source = source
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self.empty_png = _png(np.zeros((TILE_PX, TILE_PX, 4), np.uint8))
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="geocells-tiles")

    def _cached(self, key: tuple, render) -> bytes:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        data = render()
        self._cache[key] = data
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return data

    def tile_png(self, z: int, x: int, y: int) -> bytes:
        """PNG of tile z/x/y; transparent where there is no imagery."""
        check_tile(z, x, y)
        south, west, north, east = _mercator_bounds(x, y, 1.0, z)
        if not _intersects((south, west, north, east), self.source.bounds):
            return self.empty_png
        return self._cached(("tile", z, x, y), lambda: self._render_tile(z, x, y))

    def _render_tile(self, z: int, x: int, y: int) -> bytes:
        lat_mid = (_tile_lnglat(x, y + 0.5, z))[1]
        width_m = 360.0 / 2**z * metres_per_degree(lat_mid)[1]
        blocks = 1
        while blocks < MAX_BLOCKS and width_m / blocks > BLOCK_M:
            blocks *= 2
        rgba = np.zeros((TILE_PX, TILE_PX, 4), np.uint8)
        step = TILE_PX // blocks
        for row in range(blocks):
            for col in range(blocks):
                self._render_block(
                    rgba,
                    z,
                    x + col / blocks,
                    y + row / blocks,
                    1 / blocks,
                    row * step,
                    col * step,
                    step,
                )
        if not rgba[..., 3].any():
            return self.empty_png
        return _png(rgba)

    def _render_block(
        self, out: np.ndarray, z: int, x: float, y: float, size: float, top: int, left: int, px: int
    ) -> None:
        """Fill ``out[top:top+px, left:left+px]`` with the block at tile coords (x, y)."""
        bounds = _mercator_bounds(x, y, size, z)
        if not _intersects(bounds, self.source.bounds):
            return
        lon, lat = _tile_lnglat(x + size / 2, y + size / 2, z)
        width_m = size * 360.0 / 2**z * metres_per_degree(lat)[1]
        try:
            pixels = self.source.crop(lat, lon, width_m, px)
        except OutOfCoverageError:
            if px <= MIN_BLOCK_PX:
                return
            half = px // 2
            for dy in (0, 1):
                for dx in (0, 1):
                    self._render_block(
                        out,
                        z,
                        x + dx * size / 2,
                        y + dy * size / 2,
                        size / 2,
                        top + dy * half,
                        left + dx * half,
                        half,
                    )
            return
        block = out[top : top + px, left : left + px]
        block[..., :3] = pixels
        block[..., 3] = np.where(pixels.any(axis=2), 255, 0)  # crop's black = no imagery

    def cell_png(self, lat: float, lon: float, size_m: float, px: int) -> bytes | None:
        """PNG of the north-up ``size_m`` crop at (lat, lon), None outside the imagery."""

        def render() -> bytes | None:
            try:
                return _png(self.source.crop(lat, lon, size_m, px))
            except OutOfCoverageError:
                return None

        key = ("cell", round(lat, 9), round(lon, 9), size_m, px)
        if key in self._cache:
            return self._cache[key]
        data = render()
        if data is not None:
            self._cached(key, lambda: data)
        return data

    def close(self) -> None:
        """Stop the rendering thread."""
        self.executor.shutdown(wait=True)
