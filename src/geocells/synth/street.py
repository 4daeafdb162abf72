"""Street-level perspective renderer: a 2.5-D column raycaster over the world.

For each image column a ray is marched from the camera over the ground plane until it
enters a solid (building or forest edge); trees in front of it are drawn as round crowns.
Rows then resolve to sky, wall (with windows), crown or ground by elementary geometry.
"""

from __future__ import annotations

import numpy as np

from geocells.synth.capture import Capture
from geocells.synth.world import World

MARCH_STEPS = 48
NEAR_M = 0.8


class StreetRenderer:
    """Renders ``size x size`` views with a pinhole camera ``camera_height`` above the ground."""

    def __init__(
        self, world: World, size: int, fov_deg: float, camera_height: float, max_view_m: float
    ):
        if not 10.0 <= fov_deg <= 150.0:
            raise ValueError(f"fov_deg={fov_deg} must be within [10, 150]")
        self.world, self.size, self.cam_h, self.max_view = world, size, camera_height, max_view_m
        half = np.tan(np.deg2rad(fov_deg) / 2)
        grid = (2 * (np.arange(size) + 0.5) / size - 1) * half
        self.col_x = grid.astype(np.float64)  # horizontal tangent per column
        self.row_y = -grid[:, None].astype(np.float64)  # vertical tangent per row (up > 0)
        self.col_len = np.sqrt(1 + self.col_x**2)  # horizontal length of the ray per unit depth
        self.dists = NEAR_M * (max_view_m / NEAR_M) ** (np.arange(MARCH_STEPS) / (MARCH_STEPS - 1))

    def render(
        self, x: np.ndarray, y: np.ndarray, heading_deg: np.ndarray, captures: list[Capture]
    ) -> np.ndarray:
        """Views at world (x, y) looking at compass ``heading_deg``: uint8 [B, size, size, 3]."""
        x, y = np.atleast_1d(x).astype(float), np.atleast_1d(y).astype(float)
        hd = np.deg2rad(np.atleast_1d(heading_deg).astype(float))
        fwd = np.stack([np.sin(hd), np.cos(hd)], -1)  # (east, north)
        right = np.stack([np.cos(hd), -np.sin(hd)], -1)
        ray = fwd[:, None, :] + self.col_x[None, :, None] * right[:, None, :]
        ray /= self.col_len[None, :, None]  # unit horizontal direction, [B, W, 2]
        wall_d, wall = self._march_walls(x, y, ray)
        tree = self._first_tree(x, y, ray, wall_d)
        return self._compose(x, y, ray, wall_d, wall, tree, captures)

    def _points(self, x, y, ray, dist):
        return x[:, None, None] + ray[..., None, 0] * dist, y[:, None, None] + ray[
            ..., None, 1
        ] * dist

    def _march_walls(self, x, y, ray):
        """Distance to the first solid per column (inf if none) and the layout at the hit."""
        b, w = ray.shape[:2]
        px, py = self._points(x, y, ray, self.dists[None, None, :])
        lay = self.world.layout(px.ravel(), py.ravel())
        solid = (lay.height > 0).reshape(b, w, -1)
        self._march_lay = lay
        hit = solid.any(-1)
        k = np.argmax(solid, -1)
        far = self.dists[k]
        near = np.where(k > 0, self.dists[np.maximum(k - 1, 0)], 0.0)
        for _ in range(4):  # bisection to place the wall precisely
            mid = 0.5 * (near + far)
            mx, my = x[:, None] + ray[..., 0] * mid, y[:, None] + ray[..., 1] * mid
            inside = (self.world.layout(mx.ravel(), my.ravel()).height > 0).reshape(b, w)
            far, near = np.where(inside, mid, far), np.where(inside, near, mid)
        wall_d = np.where(hit, far, np.inf)
        hx, hy = x[:, None] + ray[..., 0] * far, y[:, None] + ray[..., 1] * far
        self._hit_xy = (hx, hy)
        return wall_d, self.world.layout(hx.ravel(), hy.ravel())

    def _first_tree(self, x, y, ray, wall_d):
        """Nearest tree crown per column in front of the wall (distance, shape, top, key)."""
        lay = self._march_lay
        b, w = ray.shape[:2]
        has = (lay.tree_top > 0).reshape(b, w, -1) & (self.dists[None, None, :] < wall_d[..., None])
        k = np.argmax(has, -1)
        idx = (np.arange(b * w) * MARCH_STEPS + k.ravel()).reshape(b, w)
        cx, cy, r = lay.tree_cx[idx], lay.tree_cy[idx], lay.tree_r[idx]
        # Distance along the ray to the crown centre and the ray's miss distance from it.
        along = (cx - x[:, None]) * ray[..., 0] + (cy - y[:, None]) * ray[..., 1]
        miss = np.abs(-(cx - x[:, None]) * ray[..., 1] + (cy - y[:, None]) * ray[..., 0])
        present = has.any(-1) & (along > 0.5)
        return {
            "dist": np.where(present, np.maximum(along, 0.5), np.inf),
            "profile": np.sqrt(np.clip(1 - (miss / np.maximum(r, 1e-3)) ** 2, 0, 1)),
            "trunk": miss < 0.25,
            "top": lay.tree_top[idx],
            "key": lay.tree_key[idx],
            "style": lay.style[idx],
        }

    def _compose(self, x, y, ray, wall_d, wall, tree, captures):
        from geocells.synth.street_shade import compose

        return compose(self, x, y, ray, wall_d, wall, tree, captures)
