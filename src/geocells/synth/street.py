"""Street-level perspective renderer: a 2.5-D column raycaster over the world.

For each image column a ray is marched from the camera over the ground plane until it
enters a solid (building or forest edge); trees in front of it are drawn as round crowns.
Rows then resolve to sky, wall (with windows), crown or ground by elementary geometry.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from geocells.synth.capture import Capture
from geocells.synth.layout import scatter, subset
from geocells.synth.world import World

MARCH_STEPS = 48
MARCH_PHASES = (0, 12, 24, 36, 48)  # march steps evaluated per round (columns stop at a hit)
TREE_FIELDS = ("tree_top", "tree_cx", "tree_cy", "tree_r", "tree_key", "style")
QUARTERS = np.array([0.25, 0.5, 0.75])
NEAR_M = 0.8


class StreetRenderer:
    """Renders views ``camera_height`` above the ground: ``size x size`` pinhole views, or
    with ``panorama=True`` equirectangular panoramas of ``size x 2 size`` (360° x 180°,
    the centre column at the given heading, azimuth growing clockwise to the right)."""

    def __init__(
        self, world: World, size: int, fov_deg: float, camera_height: float, max_view_m: float,
        panorama: bool = False,
    ):  # fmt: skip
        if not panorama and not 10.0 <= fov_deg <= 150.0:
            raise ValueError(f"fov_deg={fov_deg} must be within [10, 150]")
        self.world, self.cam_h, self.max_view = world, camera_height, max_view_m
        self.panorama = panorama
        self.height, self.width = size, 2 * size if panorama else size
        if panorama:
            # Column azimuths relative to the centre column; rows spread evenly over
            # elevation, so the "tangent" of a row is tan(elevation) and rays have unit length.
            self.col_azimuth = ((np.arange(self.width) + 0.5) / self.width - 0.5) * 2 * np.pi
            elevation = (0.5 - (np.arange(size) + 0.5) / size) * np.pi
            self.row_y = np.tan(elevation)[:, None]
            self.col_len = np.ones(self.width)
        else:
            half = np.tan(np.deg2rad(fov_deg) / 2)
            grid = (2 * (np.arange(size) + 0.5) / size - 1) * half
            self.col_x = grid.astype(np.float64)  # horizontal tangent per column
            self.row_y = -grid[:, None].astype(np.float64)  # vertical tangent per row (up > 0)
            self.col_len = np.sqrt(1 + self.col_x**2)  # horizontal ray length per unit depth
        self.pixel_angle = 2 * np.pi / self.width if panorama else np.deg2rad(fov_deg) / size
        self.dists = NEAR_M * (max_view_m / NEAR_M) ** (np.arange(MARCH_STEPS) / (MARCH_STEPS - 1))
        self.tables = self._tables()

    def _tables(self) -> dict[str, np.ndarray]:
        """Per-pixel constants of the camera used by the shading (float32)."""
        row_y = self.row_y.astype(np.float32)  # [H, 1]
        col_len = self.col_len[None, :].astype(np.float32)  # [1, W]
        below = row_y < 0
        ground_d = np.where(below, self.cam_h * col_len / np.maximum(-row_y, 1e-9), np.inf)
        elev = np.arctan(self.row_y)
        return {
            "row_y": row_y,
            "col_len": col_len,
            "below": below,
            "ground_d": ground_d.astype(np.float32),  # distance of the ground seen per pixel
            "sky_mix": np.exp(-np.clip(self.row_y, 0, None) * 3.0)[..., None],  # [H, 1, 1]
            "row_cos": np.cos(elev).astype(np.float32),
            "row_sin": np.sin(elev).astype(np.float32),
        }

    def render(
        self, x: np.ndarray, y: np.ndarray, heading_deg: np.ndarray, captures: list[Capture]
    ) -> np.ndarray:
        """Views at world (x, y) looking at compass ``heading_deg`` (a panorama's centre
        column): uint8 [B, height, width, 3]."""
        x, y = np.atleast_1d(x).astype(float), np.atleast_1d(y).astype(float)
        hd = np.deg2rad(np.atleast_1d(heading_deg).astype(float))
        if self.panorama:
            azimuth = hd[:, None] + self.col_azimuth[None, :]  # compass, [B, W]
            ray = np.stack([np.sin(azimuth), np.cos(azimuth)], -1)  # (east, north), unit
        else:
            fwd = np.stack([np.sin(hd), np.cos(hd)], -1)  # (east, north)
            right = np.stack([np.cos(hd), -np.sin(hd)], -1)
            ray = fwd[:, None, :] + self.col_x[None, :, None] * right[:, None, :]
            ray /= self.col_len[None, :, None]  # unit horizontal direction, [B, W, 2]
        wall_d, wall = self._march_walls(x, y, ray)
        tree = self._first_tree(x, y, ray, wall_d)
        return self._compose(x, y, ray, wall_d, wall, tree, captures)

    def _march_walls(self, x, y, ray):
        """Distance to the first solid per column (inf if none) and the layout at the hit.

        The march runs in phases of increasing distance; a column stops once it has hit a
        solid (samples behind the first solid are never looked at). The hit is then refined
        by two rounds of three evaluations to 1/16 of the step it fell in.
        """
        b, w = ray.shape[:2]
        n = b * w
        ox, oy = np.repeat(x, w), np.repeat(y, w)
        rx, ry = ray[..., 0].ravel(), ray[..., 1].ravel()
        march = {f: None for f in TREE_FIELDS}  # tree fields at every step, zero if unseen
        wall = None  # layout at the first solid step (step 0 for columns without a hit)
        hit_k = np.full(n, -1)
        todo = np.arange(n)
        for lo, hi in pairwise(MARCH_PHASES):
            steps = self.dists[lo:hi]
            sub = self.world.layout(
                (ox[todo, None] + rx[todo, None] * steps).ravel(),
                (oy[todo, None] + ry[todo, None] * steps).ravel(),
            )
            at = (todo[:, None] * MARCH_STEPS + np.arange(lo, hi)).ravel()
            for f in TREE_FIELDS:
                values = getattr(sub, f)
                if march[f] is None:
                    march[f] = np.zeros(n * MARCH_STEPS, values.dtype)
                march[f][at] = values
            solid = (sub.height > 0).reshape(todo.size, hi - lo)
            got = solid.any(-1)
            first = np.argmax(solid, -1)
            if wall is None:
                wall = subset(sub, np.arange(n) * (hi - lo) + first)
            else:
                sel = np.flatnonzero(got)
                scatter(wall, subset(sub, sel * (hi - lo) + first[sel]), todo[sel])
            hit_k[todo[got]] = lo + first[got]
            todo = todo[~got]
            if not todo.size:
                break
        self._march_lay = march
        k = np.maximum(hit_k, 0)
        far = self.dists[k]
        cols = np.flatnonzero(hit_k >= 0)
        near = np.where(k[cols] > 0, self.dists[np.maximum(k[cols] - 1, 0)], 0.0)
        far[cols] = self._refine(
            ox[cols], oy[cols], rx[cols], ry[cols], near, far[cols], wall, cols
        )
        far = far.reshape(b, w)
        hx, hy = x[:, None] + ray[..., 0] * far, y[:, None] + ray[..., 1] * far
        self._hit_xy = (hx, hy)
        return np.where((hit_k >= 0).reshape(b, w), far, np.inf), wall

    def _refine(self, ox, oy, rx, ry, near, far, wall, cols):
        """Narrow [near, far] (far inside a solid) to the first inside quarter, twice; writes
        the layout at the final ``far`` into ``wall`` at ``cols`` and returns ``far``."""
        m = cols.size
        if not m:
            return far
        rows = np.arange(m)
        for _ in range(2):
            t = near[:, None] + (far - near)[:, None] * QUARTERS  # [m, 3]
            sub = self.world.layout(
                (ox[:, None] + rx[:, None] * t).ravel(), (oy[:, None] + ry[:, None] * t).ravel()
            )
            inside = (sub.height > 0).reshape(m, 3)
            found = inside.any(-1)
            j = np.argmax(inside, -1)
            before = np.where(j > 0, t[rows, np.maximum(j - 1, 0)], near)
            near = np.where(found, before, t[:, 2])
            far = np.where(found, t[rows, j], far)
            sel = np.flatnonzero(found)
            scatter(wall, subset(sub, sel * 3 + j[sel]), cols[sel])
        return far

    def _first_tree(self, x, y, ray, wall_d):
        """Nearest tree crown per column in front of the wall (distance, shape, top, key)."""
        lay = self._march_lay
        b, w = ray.shape[:2]
        ahead = self.dists[None, None, :] < wall_d[..., None]
        has = (lay["tree_top"] > 0).reshape(b, w, -1) & ahead
        k = np.argmax(has, -1)
        idx = (np.arange(b * w) * MARCH_STEPS + k.ravel()).reshape(b, w)
        cx, cy, r = lay["tree_cx"][idx], lay["tree_cy"][idx], lay["tree_r"][idx]
        # Distance along the ray to the crown centre and the ray's miss distance from it.
        along = (cx - x[:, None]) * ray[..., 0] + (cy - y[:, None]) * ray[..., 1]
        miss = np.abs(-(cx - x[:, None]) * ray[..., 1] + (cy - y[:, None]) * ray[..., 0])
        present = has.any(-1) & (along > 0.5)
        return {
            "dist": np.where(present, np.maximum(along, 0.5), np.inf),
            "profile": np.sqrt(np.clip(1 - (miss / np.maximum(r, 1e-3)) ** 2, 0, 1)),
            "trunk": miss < 0.25,
            "top": lay["tree_top"][idx],
            "key": lay["tree_key"][idx],
            "style": lay["style"][idx],
        }

    def _compose(self, x, y, ray, wall_d, wall, tree, captures):
        from geocells.synth.street_shade import compose

        return compose(self, x, y, ray, wall_d, wall, tree, captures)
