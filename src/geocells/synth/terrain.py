"""Terrain: low hills and valleys that make a skyline on the ground and hillshade from the air.

The elevation is a smooth function of (seed, x, y) (``relief_m`` from lowest to highest).
The world near a camera is drawn on a level ground plane (slopes over a few hundred metres
are gentle); what the relief changes is the skyline: hills from ``NEAR_M`` to ``FAR_M``
rise above the horizon behind what stands in front, as seen from the camera's own
elevation. The orthophoto shades the same slopes under its sun.
"""

from __future__ import annotations

import numpy as np

from geocells.synth.capture import per_view
from geocells.synth.noise import fractal_noise, value_noise
from geocells.synth.paint import vegetation

SCALE_M = 1900.0
# Distances (m) at which each column looks for the skyline.
SAMPLES_M = np.array([450, 600, 800, 1050, 1400, 1850, 2450, 3200, 4200, 5500], np.float64)


def elevation(world, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Ground elevation in metres at world points (float32, mean about 0)."""
    relief = float(world.cfg.relief_m)
    if relief <= 0:
        return np.zeros(np.broadcast(x, y).shape, np.float32)
    return (fractal_noise(world.seed, 55, x, y, SCALE_M, 3) - 0.5) * (2.0 * relief)


def hillshade(world, x: np.ndarray, y: np.ndarray, sun_azimuth: float, sun_elevation: float,
              gsd: float) -> np.ndarray:  # fmt: skip
    """Brightness factor of the terrain under the sun at grid points ``x, y`` [H, W]
    (world metres of a raster with ``gsd`` m pixels, rows going south)."""
    if world.cfg.relief_m <= 0:
        return np.ones(x.shape, np.float32)
    step = 4.0 * gsd
    dzdx = (elevation(world, x + step, y) - elevation(world, x - step, y)) / (2 * step)
    dzdy = (elevation(world, x, y + step) - elevation(world, x, y - step)) / (2 * step)
    across = np.cos(sun_elevation)
    sun_x, sun_y = np.cos(sun_azimuth) * across, np.sin(sun_azimuth) * across
    norm = np.sqrt(1 + dzdx**2 + dzdy**2)
    cos = (-dzdx * sun_x - dzdy * sun_y + np.sin(sun_elevation)) / norm
    return (0.55 + 0.45 * cos / np.sin(sun_elevation)).astype(np.float32)


def hillshade_raster(world, cols, rows, sun_azimuth: float, sun_elevation: float, gsd: float,
                     node_px: int = 16) -> np.ndarray:  # fmt: skip
    """``hillshade`` at global raster pixels (``cols``, ``rows``: int arrays of any shape),
    computed on a lattice every ``node_px`` pixels and interpolated bilinearly: the relief
    is smooth at that scale, and a pixel depends only on the global lattice, so any window
    equals the same window cut from a larger one."""
    if world.cfg.relief_m <= 0:
        return np.ones(np.shape(cols), np.float32)
    u, v = (cols + 0.5) / node_px, (rows + 0.5) / node_px
    i, j = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    fu, fv = (u - i).astype(np.float32), (v - j).astype(np.float32)
    i0, j0 = int(i.min()), int(j.min())
    ni, nj = np.arange(i0, int(i.max()) + 2), np.arange(j0, int(j.max()) + 2)
    gi, gj = np.meshgrid(ni, nj, indexing="ij")
    node = hillshade(world, gi * node_px * gsd, -gj * node_px * gsd, sun_azimuth, sun_elevation,
                     gsd)  # fmt: skip
    a, b = i - i0, j - j0
    top = node[a, b] + (node[a + 1, b] - node[a, b]) * fu
    bottom = node[a, b + 1] + (node[a + 1, b + 1] - node[a, b + 1]) * fu
    return (top + (bottom - top) * fv).astype(np.float32)


def draw(renderer, x, y, ray, captures, rgb, dist) -> None:
    """Paint the hills of the skyline where nothing nearer was drawn (``dist`` infinite).
    x, y: [B]; ray: [B, W, 2]; rgb [B, H, W, 3] and dist [B, H, W] are updated."""
    world = renderer.world
    if world.cfg.relief_m <= 0:
        return
    w = ray.shape[1]
    px = x[:, None, None] + ray[..., 0][..., None] * SAMPLES_M  # [B, W, K]
    py = y[:, None, None] + ray[..., 1][..., None] * SAMPLES_M
    ground = elevation(world, px, py)
    eye = elevation(world, x, y)[:, None, None] + renderer.cam_h
    # Earth curvature hides far hills a little (0.87 d^2 / 2R with refraction).
    drop = 0.87 * SAMPLES_M**2 / (2 * 6.371e6)
    tangent = (ground - drop - eye) / SAMPLES_M  # [B, W, K]
    k = np.argmax(tangent, axis=-1)
    ridge = np.take_along_axis(tangent, k[..., None], -1)[..., 0]  # [B, W]
    ridge_d = SAMPLES_M[k].astype(np.float32)
    t = renderer.tables
    row_tan = t["row_y"] / t["col_len"]  # [H, W] tangent of each pixel's elevation angle
    hill = (row_tan[None] < ridge[:, None, :]) & ~np.isfinite(dist)
    if not hill.any():
        return
    rx = np.take_along_axis(px, k[..., None], -1)[..., 0]
    ry = np.take_along_axis(py, k[..., None], -1)[..., 0]
    wooded = fractal_noise(world.seed, 51, rx, ry, 1400.0, 3) > world.cfg.forest_threshold
    patch = value_noise(world.seed, 57, rx, ry, 300.0)
    season = per_view(captures, "season").astype(np.float32)[:, None]
    style = world.coarse(x, y)["style"][:, None] * np.ones((1, w), np.int64)
    colour = vegetation(np.where(wooded, 0.31, 0.24) + 0.04 * patch, 0.5,
                        np.where(wooded, 0.22, 0.42) * (0.85 + 0.3 * patch), style, season,
                        0.6)  # fmt: skip
    light = (0.5 + 0.5 * per_view(captures, "intensity").astype(np.float32))[:, None, None]
    colour = colour * light  # [B, W, 3]
    bi, ri, ci = np.nonzero(hill)
    rgb[bi, ri, ci] = colour[bi, ci]
    dist[bi, ri, ci] = ridge_d[bi, ci]
