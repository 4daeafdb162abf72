"""Landmarks seen from afar: spires, chimneys, water towers, turbines, pylons, masts, silos.

Rare, tall, distinctive vertical structures on a hashed lattice (one site per ``CELL_M``
square at most). Each is a solid of revolution around a vertical axis: a radius profile
``r(z)`` for ``0 <= z <= height`` (wind turbines add three blades). Street views draw them
analytically per column against the depth buffer, so they rise above the houses in front;
the orthophoto sees their footprint and their long shadow. A landmark never stands on a
road or in water.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geocells.synth.capture import per_view
from geocells.synth.noise import fractal_noise, hash_ints, hash_units

CELL_M = 300.0
RANGE_M = 2600.0  # farthest landmark a street view draws
ROAD_CLEAR_M = 8.0
SPIRE, CHIMNEY, WATER_TOWER, TURBINE, PYLON, MAST, SILO, BLOCK = range(8)
# Kind probabilities in towns and in the countryside.
TOWN_P = np.array([0.34, 0.16, 0.14, 0.0, 0.0, 0.08, 0.0, 0.28])
RURAL_P = np.array([0.08, 0.04, 0.12, 0.32, 0.20, 0.08, 0.16, 0.0])
# Height range (m) and base radius (m) per kind.
HEIGHT = np.array(
    [[40, 70], [45, 85], [28, 42], [70, 110], [32, 46], [80, 130], [18, 30], [40, 70]]
)
RADIUS = np.array([3.2, 1.8, 1.6, 1.4, 3.5, 1.6, 4.2, 11.0])
# Two colours per kind (linear RGB): body and accent (spire, tank, band, blades, dome).
BODY = np.array(
    [[0.72, 0.68, 0.60], [0.55, 0.25, 0.18], [0.62, 0.62, 0.60], [0.90, 0.90, 0.90],
     [0.35, 0.36, 0.38], [0.85, 0.85, 0.85], [0.60, 0.64, 0.68], [0.70, 0.66, 0.62]],
    np.float32,
)  # fmt: skip
ACCENT = np.array(
    [[0.20, 0.42, 0.36], [0.92, 0.92, 0.90], [0.30, 0.50, 0.75], [0.85, 0.85, 0.85],
     [0.35, 0.36, 0.38], [0.85, 0.15, 0.12], [0.40, 0.45, 0.52], [0.25, 0.28, 0.35]],
    np.float32,
)  # fmt: skip


@dataclass
class Landmarks:
    """Landmarks near some place: arrays of length L."""

    x: np.ndarray
    y: np.ndarray
    kind: np.ndarray
    height: np.ndarray
    radius: np.ndarray
    body: np.ndarray  # [L, 3]
    accent: np.ndarray  # [L, 3]
    phase: np.ndarray  # turbine rotor angle (radians)


def sites(world, x0: float, y0: float, x1: float, y1: float) -> Landmarks:
    """All landmarks whose site lies in the box [x0, x1] x [y0, y1] (world metres)."""
    seed = world.seed
    ci = np.arange(np.floor(x0 / CELL_M), np.floor(x1 / CELL_M) + 1).astype(np.int64)
    cj = np.arange(np.floor(y0 / CELL_M), np.floor(y1 / CELL_M) + 1).astype(np.int64)
    ci, cj = (a.ravel() for a in np.meshgrid(ci, cj, indexing="ij"))
    r_has, r_x, r_y, r_kind = hash_units(seed, 501, ci, cj)
    r_height, r_colour, r_phase, _ = hash_units(seed, 502, ci, cj)
    x, y = (ci + 0.15 + 0.7 * r_x) * CELL_M, (cj + 0.15 + 0.7 * r_y) * CELL_M
    town_u, clear = _site_ground(world, x, y)
    town = town_u > 0.2
    keep = (r_has < np.where(town, 0.65, 0.55)) & clear
    cumulative = np.cumsum(np.where(town[:, None], TOWN_P, RURAL_P), axis=1)
    kind = np.minimum((r_kind[:, None] > cumulative).sum(axis=1), len(TOWN_P) - 1)
    lo, hi = HEIGHT[kind, 0], HEIGHT[kind, 1]
    tone = (0.8 + 0.4 * r_colour)[:, None].astype(np.float32)
    key = hash_ints(seed, 503, ci, cj)
    hue_turn = ((key >> np.uint64(40)) % np.uint64(3)).astype(np.int64)
    accent = np.where((hue_turn == 1)[:, None], ACCENT[kind][:, [1, 2, 0]], ACCENT[kind])
    out = Landmarks(x, y, kind, lo + (hi - lo) * r_height, RADIUS[kind] * (0.85 + 0.3 * r_colour),
                    BODY[kind] * tone, accent, r_phase * 2 * np.pi)  # fmt: skip
    return Landmarks(**{k: v[keep] for k, v in vars(out).items()})


def _site_ground(world, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Town influence at sites and whether a site is off roads and water.

    Evaluated with the exact large-scale functions (not the cached lattice tiles, which
    would be built for every far site a view looks at): a site within ``ROAD_CLEAR_M`` of
    a street or rural road line, or in a lake, holds no landmark.
    """
    cfg = world.cfg
    town = world.towns(x, y)
    angle = town["angle"]
    dx, dy = x - town["cx"], y - town["cy"]
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = -np.sin(angle) * dx + np.cos(angle) * dy
    du = np.abs(u - np.round(u / town["bu"]) * town["bu"])
    dv = np.abs(v - np.round(v / town["bv"]) * town["bv"])
    street = (town["u"] > 0) & (np.minimum(du, dv) < town["road_w"] / 2 + ROAD_CLEAR_M)
    warp_r, warp_t = world.rural_warp(x, y)
    c, s = np.cos(world.rural_angle), np.sin(world.rural_angle)
    spacing = cfg.rural_road_spacing_m
    r, t = c * x + s * y + warp_r, -s * x + c * y + warp_t
    lateral = np.minimum(np.abs(r - np.round(r / spacing) * spacing),
                         np.abs(t - np.round(t / spacing) * spacing))  # fmt: skip
    rural_road = lateral < 3.0 + ROAD_CLEAR_M
    water = fractal_noise(world.seed, 52, x, y, 2200.0, 3) > cfg.water_threshold
    return town["u"], ~(street | rural_road | water)


def profile(kind: np.ndarray, height: np.ndarray, radius: np.ndarray, z: np.ndarray):
    """Radius of the landmark at height ``z`` (0 above its top) and whether that part is
    drawn in the accent colour. ``kind, height, radius``: [N, 1]; ``z``: [N, H]."""
    f = z / height
    inside = (z >= 0) & (f <= 1)
    r = np.where(kind == SPIRE, np.where(f < 0.62, radius, radius * (1 - f) / 0.38), radius)
    r = np.where(kind == CHIMNEY, radius * (1.25 - 0.4 * f), r)
    tank = (f > 0.7) & (f < 0.92)
    r = np.where(kind == WATER_TOWER, np.where(tank, radius * 3.6, radius), r)
    r = np.where(kind == TURBINE, radius * (1.0 - 0.45 * f), r)
    r = np.where(kind == PYLON, radius * (1.0 - 0.75 * f) + ((f > 0.72) & (f < 0.78)) * 5.0, r)
    r = np.where(kind == MAST, radius * (1.0 - 0.6 * f), r)
    dome = (kind == SILO) & (f > 0.85)
    r = np.where(dome, radius * np.sqrt(np.clip(1 - ((f - 0.85) / 0.15) ** 2, 0, 1)), r)
    accent = np.where(kind == SPIRE, f >= 0.62, False)
    accent |= (kind == CHIMNEY) & (f > 0.88)
    accent |= (kind == WATER_TOWER) & tank
    accent |= (kind == MAST) & (np.mod(f * 9, 2.0) < 1.0)
    accent |= dome
    accent |= (kind == BLOCK) & (np.mod(z, 3.0) > 1.9) & (f < 0.97)  # window bands
    return np.where(inside, r, 0.0), accent


def shadow(world, x: np.ndarray, y: np.ndarray, sun_azimuth: float, sun_elevation: float):
    """Where landmarks shade the ground at points ``x, y`` under the sun: a bool mask.

    A point at distance ``t`` behind a landmark (away from the sun) and ``d`` to the side
    is in its shadow when the landmark's radius at height ``t * tan(elevation)`` exceeds
    ``d`` (so a spire's shadow tapers, a water tower's has its tank).
    """
    out = np.zeros(x.shape, bool)
    if not x.size:
        return out
    reach = float(HEIGHT.max()) / np.tan(sun_elevation) + 10.0
    found = sites(world, x.min() - reach, y.min() - reach, x.max() + reach, y.max() + reach)
    away = np.array([-np.cos(sun_azimuth), -np.sin(sun_azimuth)])
    for i in range(len(found.x)):
        length = found.height[i] / np.tan(sun_elevation)
        dx, dy = x - found.x[i], y - found.y[i]
        t = dx * away[0] + dy * away[1]
        near = (t > 0) & (t < length)
        if not near.any():
            continue
        side = np.abs(dx[near] * away[1] - dy[near] * away[0])
        z = (t[near] * np.tan(sun_elevation))[:, None]
        radius, _ = profile(np.array([[found.kind[i]]]), np.array([[found.height[i]]]),
                            np.array([[found.radius[i]]]), z)  # fmt: skip
        idx = np.flatnonzero(near)
        out[idx] |= side < radius[:, 0]
    return out


def footprint(world, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Height and top colour of landmarks covering points ``x, y`` (seen from above):
    [N] height (0 where none) and [N, 3] colour."""
    height = np.zeros(x.shape, np.float32)
    colour = np.zeros((*x.shape, 3), np.float32)
    if not x.size:
        return height, colour
    found = sites(world, x.min() - 20, y.min() - 20, x.max() + 20, y.max() + 20)
    for i in range(len(found.x)):
        # Widest part seen from above (the tank of a water tower, a pylon's arms).
        widest = found.radius[i] * (3.6 if found.kind[i] == WATER_TOWER else 1.0)
        if found.kind[i] == PYLON:
            widest = 5.0
        near = (np.abs(x - found.x[i]) < widest) & (np.abs(y - found.y[i]) < widest)
        if not near.any():
            continue
        d = np.hypot(x[near] - found.x[i], y[near] - found.y[i])
        hit = d < widest
        idx = np.flatnonzero(near)[hit]
        height[idx] = found.height[i]
        top = found.accent[i] if found.kind[i] in (SPIRE, WATER_TOWER, SILO) else found.body[i]
        colour[idx] = top * (0.75 + 0.25 * (1 - d[hit] / widest))[:, None]
    return height, colour


BLADE_M = 30.0  # turbine blade length


def draw(renderer, x, y, ray, captures, rgb, dist) -> None:
    """Draw the landmarks within ``RANGE_M`` of each view into ``rgb`` where they are nearer
    than ``dist`` (the depth buffer, updated). x, y: [B]; ray: [B, W, 2] unit directions."""
    marks = sites(renderer.world, x.min() - RANGE_M, y.min() - RANGE_M,
                  x.max() + RANGE_M, y.max() + RANGE_M)  # fmt: skip
    if not len(marks.x):
        return
    dx, dy = marks.x[None, :] - x[:, None], marks.y[None, :] - y[:, None]  # [B, L]
    rx, ry = ray[..., 0][:, None, :], ray[..., 1][:, None, :]  # [B, 1, W]
    along = dx[..., None] * rx + dy[..., None] * ry  # [B, L, W]
    miss = dx[..., None] * ry - dy[..., None] * rx  # signed, metres to the right of the ray
    reach = np.where(marks.kind == WATER_TOWER, marks.radius * 3.6, marks.radius)
    reach = np.where(marks.kind == PYLON, 5.0, reach)
    reach = np.where(marks.kind == TURBINE, BLADE_M, reach)
    # Thin or far structures stay at least one pixel wide (no aliasing away between columns).
    pixel_m = along * (0.55 * renderer.pixel_angle)
    cand = (along > 8.0) & (along < RANGE_M)
    cand &= np.abs(miss) < np.maximum(reach[None, :, None], pixel_m)
    bi, li, ci = np.nonzero(cand)
    if not bi.size:
        return
    t = renderer.tables
    td = along[bi, li, ci].astype(np.float32)[:, None]
    lateral = miss[bi, li, ci].astype(np.float32)[:, None]
    z = renderer.cam_h + t["row_y"][:, 0][None, :] * td / t["col_len"][0, ci][:, None]  # [N, H]
    kind, top = marks.kind[li][:, None], marks.height[li][:, None].astype(np.float32)
    radius, accent = profile(kind, top, marks.radius[li][:, None].astype(np.float32), z)
    solid = np.abs(lateral) < np.where(
        radius > 0, np.maximum(radius, pixel_m[bi, li, ci][:, None]), 0
    )
    blades = np.zeros_like(solid)
    turbine = marks.kind[li] == TURBINE
    if turbine.any():
        k = np.flatnonzero(turbine)
        px, pz = lateral[k], z[k] - top[k]
        for n in range(3):
            angle = (marks.phase[li[k]] + n * 2 * np.pi / 3)[:, None]
            ux, uz = np.cos(angle), np.sin(angle)
            s = np.clip(px * ux + pz * uz, 0.0, BLADE_M)
            blades[k] |= np.hypot(px - s * ux, pz - s * uz) < 1.1 * (1.0 - 0.6 * s / BLADE_M)
    solid |= blades
    draw_px = solid & (td < dist[bi, :, ci])
    if not draw_px.any():
        return
    intensity = per_view(captures, "intensity").astype(np.float32)[bi][:, None]
    sun_az = per_view(captures, "sun_azimuth")[bi]
    ray_az = np.arctan2(ray[bi, ci, 1], ray[bi, ci, 0])
    side = np.clip(lateral / np.maximum(radius, 0.3), -1, 1) * np.sin(sun_az - ray_az)[:, None]
    light = (0.45 + 0.6 * intensity * (0.7 + 0.3 * side)).astype(np.float32)
    colour = np.where((accent | blades)[..., None], marks.accent[li][:, None, :],
                      marks.body[li][:, None, :]) * light[..., None]  # fmt: skip
    cols = rgb[bi, :, ci]  # [N, H, 3]
    np.copyto(cols, colour.astype(np.float32), where=draw_px[..., None])
    rgb[bi, :, ci] = cols
    dist[bi, :, ci] = np.where(draw_px, td, dist[bi, :, ci])
