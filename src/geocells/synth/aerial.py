"""Top-down orthophoto renderer with sun shadows, rasterised lazily in aligned chunks.

Pixel (col, row) of the global raster has its centre at world metres
``((col + 0.5) * gsd, -(row + 0.5) * gsd)``; every pixel value depends only on the world
around it, so any window equals the same window cut from any larger render.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from geocells.synth import landmarks, terrain
from geocells.synth.capture import Capture, finish
from geocells.synth.facades import building_look
from geocells.synth.layout import URBAN_BIT, subset
from geocells.synth.noise import hash_ints, value_noise
from geocells.synth.paint import ground_rgb, tree_rgb, vegetation
from geocells.synth.world import BUILDING, FOREST, TREE, World

MAX_HEIGHT_M = 130.0  # tallest thing that can cast a shadow into a window (a mast)


def gaussian_noise(seed: int, salt: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Approximately standard-normal noise, one value per integer (a, b) x 3 channels."""
    h = hash_ints(seed, salt, a, b)
    parts = [((h >> np.uint64(16 * k)) & np.uint64(0xFFFF)).astype(np.float32) for k in range(4)]
    base = (parts[0] + parts[1] + parts[2]) * (1.0 / 65536.0) - 1.5
    spread = parts[3] * (1.0 / 65536.0) - 0.5
    return np.stack([base * 2.0, (base + spread) * 1.6, (base - spread) * 1.6], axis=-1)


class AerialRenderer:
    """Renders windows of the orthophoto of ``world`` under ``capture`` at ``gsd`` m/px."""

    def __init__(self, world: World, capture: Capture, gsd: float, chunk_px: int = 512):
        if gsd <= 0:
            raise ValueError(f"gsd={gsd} must be positive")
        self.world, self.capture, self.gsd, self.chunk_px = world, capture, float(gsd), chunk_px
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self.cache_chunks = 64

    def pixel_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World metres -> fractional global (col, row) pixel coordinates (centres at .5)."""
        return np.asarray(x) / self.gsd, -np.asarray(y) / self.gsd

    def render(self, col0: int, row0: int, width: int, height: int) -> np.ndarray:
        """The window of ``height x width`` pixels starting at global (col0, row0): uint8 HxWx3."""
        cap, gsd = self.capture, self.gsd
        pad = int(np.ceil(MAX_HEIGHT_M / np.tan(cap.sun_elevation) / gsd)) + 1
        cols = np.arange(col0 - pad, col0 + width + pad)
        rows = np.arange(row0 - pad, row0 + height + pad)
        cc, rr = np.meshgrid(cols, rows)
        x, y = (cc.ravel() + 0.5) * gsd, -(rr.ravel() + 0.5) * gsd
        lay = self.world.layout(x, y)
        mark_h, mark_rgb = landmarks.footprint(self.world, x, y)
        top = np.maximum(np.maximum(lay.height, lay.tree_top), mark_h).reshape(cc.shape)
        inner = (slice(pad, pad + height), slice(pad, pad + width))
        lit = self._sunlit(top, pad)[inner].ravel()
        keep = np.zeros(cc.shape, bool)
        keep[inner] = True
        keep = keep.ravel()
        sub = subset(lay, keep)
        rgb = self._surface(sub, x[keep], y[keep])
        mark = mark_h[keep] > 0
        rgb[mark] = mark_rgb[keep][mark]
        relief = terrain.hillshade(self.world, x[keep], y[keep], cap.sun_azimuth,
                                   cap.sun_elevation, gsd)  # fmt: skip
        light = (0.42 + 0.62 * cap.intensity * lit[:, None]) * relief[:, None]
        noise = gaussian_noise(cap.seed, 301, cc[inner].ravel(), rr[inner].ravel())
        return finish(rgb * light, cap, noise).reshape(height, width, 3)

    def _sunlit(self, top: np.ndarray, pad: int) -> np.ndarray:
        """1 where the sun reaches the surface, 0 in the shadow of buildings and trees."""
        cap, gsd = self.capture, self.gsd
        dx, dy = np.cos(cap.sun_azimuth), -np.sin(cap.sun_azimuth)  # towards the sun, rows down
        slope = np.tan(cap.sun_elevation) * gsd
        lit = np.ones(top.shape, np.float32)
        h, w = top.shape
        for step in range(1, pad):
            oc, orow = round(step * dx), round(step * dy)
            if max(abs(oc), abs(orow)) >= pad:
                break
            src = top[pad + orow : h - pad + orow, pad + oc : w - pad + oc]
            dst = top[pad : h - pad, pad : w - pad]
            lit[pad : h - pad, pad : w - pad] *= (src - dst) <= step * slope
        return lit

    def _surface(self, lay, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Unlit top colour with shading of sloped roofs and round crowns."""
        seed, cap = self.world.seed, self.capture
        rgb = ground_rgb(seed, lay, x, y, cap.season)
        sun = cap.sun_dir
        sel = lay.kind == BUILDING
        if sel.any():
            key = lay.building_key[sel]
            look = building_look(seed, key, lay.style[sel], (key & URBAN_BIT) != 0)
            slope = lay.roof_slope[sel]
            roof = np.where(np.isnan(slope)[:, None], look["flat_roof"], look["pitched_roof"])
            tilt = np.where(
                np.isnan(slope), 1.0, 0.8 + 0.35 * np.cos(np.nan_to_num(slope) - cap.sun_azimuth)
            )
            rgb[sel] = roof * tilt[:, None]
        sel = lay.kind == TREE
        if sel.any():
            ox = (x[sel] - lay.tree_cx[sel]) / lay.tree_r[sel]
            oy = (y[sel] - lay.tree_cy[sel]) / lay.tree_r[sel]
            shade = 1.0 - 0.3 * (ox**2 + oy**2) + 0.25 * (ox * sun[0] + oy * sun[1])
            rgb[sel] = (
                tree_rgb(seed, lay.tree_key[sel], lay.style[sel], cap.season) * shade[:, None]
            )
        sel = lay.kind == FOREST
        if sel.any():
            blob = value_noise(seed, 311, x[sel], y[sel], 3.5)
            rgb[sel] = vegetation(
                0.29 + 0.03 * blob, 0.55, 0.22 + 0.22 * blob, lay.style[sel], cap.season, 0.5
            )
        return rgb

    def window(self, col0: int, row0: int, width: int, height: int) -> np.ndarray:
        """Like ``render`` but assembled from cached aligned chunks (fast for many crops)."""
        size = self.chunk_px
        out = np.empty((height, width, 3), np.uint8)
        for cr in range(row0 // size, (row0 + height - 1) // size + 1):
            for ccol in range(col0 // size, (col0 + width - 1) // size + 1):
                chunk = self._chunk(ccol, cr)
                r0, c0 = max(row0, cr * size), max(col0, ccol * size)
                r1, c1 = min(row0 + height, (cr + 1) * size), min(col0 + width, (ccol + 1) * size)
                out[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = chunk[
                    r0 - cr * size : r1 - cr * size, c0 - ccol * size : c1 - ccol * size
                ]
        return out

    def _chunk(self, ccol: int, crow: int) -> np.ndarray:
        key = (ccol, crow)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        chunk = self.render(
            ccol * self.chunk_px, crow * self.chunk_px, self.chunk_px, self.chunk_px
        )
        self._cache[key] = chunk
        if len(self._cache) > self.cache_chunks:
            self._cache.popitem(last=False)
        return chunk

    def crop(
        self, x: float, y: float, size_m: float, px: int, rotation_deg: float = 0.0
    ) -> np.ndarray:
        """A ``px x px`` crop of ``size_m`` metres centred on world (x, y), north-up at rotation 0
        (rotation turns the crop's up-direction clockwise from north)."""
        step = size_m / px
        offs = (np.arange(px) + 0.5) * step - size_m / 2
        east, north = np.meshgrid(offs, -offs)
        theta = np.deg2rad(rotation_deg)
        wx = x + east * np.cos(theta) + north * np.sin(theta)
        wy = y - east * np.sin(theta) + north * np.cos(theta)
        col, row = self.pixel_of(wx, wy)
        ci, ri = np.floor(col).astype(np.int64), np.floor(row).astype(np.int64)
        c0, r0 = int(ci.min()), int(ri.min())
        win = self.window(c0, r0, int(ci.max()) - c0 + 1, int(ri.max()) - r0 + 1)
        return win[ri - r0, ci - c0]
