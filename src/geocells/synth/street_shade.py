"""Shading of street views: sky, walls with windows, crowns, ground, haze and sensor.

Everything per pixel is float32; per-renderer constants (row and column tangents, the ground
distance of every pixel, sky gradient terms) come from ``StreetRenderer.tables``.
"""

from __future__ import annotations

import numpy as np

from geocells.synth import landmarks, terrain
from geocells.synth.capture import finish, per_view
from geocells.synth.facades import building_look, mural_pattern, sign_pattern, texture
from geocells.synth.layout import URBAN_BIT
from geocells.synth.noise import value_noise
from geocells.synth.paint import ground_rgb, tree_rgb, vegetation
from geocells.synth.world import FOREST

_GLOW_RGB = np.array([1.0, 0.9, 0.7], np.float32)
_GLASS_RGB = np.array([0.9, 1.0, 1.15], np.float32)
_BARK_RGB = np.array([0.25, 0.2, 0.15], np.float32)
# Meteorological visibility of a clear day (haze shortens it): far landmarks stay visible.
VISIBILITY_M = 2600.0


def _sky(renderer, ray, captures, rows):
    """Sky colour of the top ``rows`` rows (zenith-to-horizon gradient, haze, sun glow)
    and the horizon colour per view: float32 [B, rows, W, 3] and [B, 1, 1, 3]."""
    t = renderer.tables
    haze = per_view(captures, "haze")[:, None, None, None]
    zenith = np.array([0.25, 0.45, 0.85]) * (1 - 0.5 * haze)
    horizon = (np.array([0.75, 0.82, 0.92]) * (1 - 0.2 * haze) + 0.15 * haze).astype(np.float32)
    mix = t["sky_mix"][:rows]  # [rows, 1, 1]
    base = (zenith * (1 - mix) + horizon * mix).astype(np.float32)  # [B, rows, 1, 3]
    az = np.arctan2(ray[..., 1], ray[..., 0])  # [B, W]
    sun_az, sun_el = per_view(captures, "sun_azimuth"), per_view(captures, "sun_elevation")
    across = (np.cos(sun_el)[:, None] * np.cos(az - sun_az[:, None])).astype(np.float32)
    up = np.sin(sun_el).astype(np.float32)[:, None, None]
    cos_angle = across[:, None, :] * t["row_cos"][:rows] + up * t["row_sin"][:rows]
    c = np.clip(cos_angle, 0, 1)
    c4 = np.square(np.square(c))
    glow = 0.35 * (c4 * c4 * c4)  # cos^12
    return np.clip(base + glow[..., None] * _GLOW_RGB, 0, 1), horizon


def _walls(renderer, wall, hz, b, w, captures, forest_px):
    """Lit facade colour with each building's material, windows, shutters and shop front
    (or forest edge foliage) at wall pixels: float32 [B, H, W, 3] (meaningful at walls)."""
    seed = renderer.world.seed
    style = wall.style
    sun_az, sun_el = per_view(captures, "sun_azimuth"), per_view(captures, "sun_elevation")
    normal = wall.wall_normal.reshape(b, w)
    diffuse = np.clip(np.cos(normal - sun_az[:, None]), 0, 1) * np.cos(sun_el)[:, None]
    forest = (wall.ground == FOREST).reshape(b, w)
    diffuse = np.where(forest, 0.4, diffuse)
    light = (0.5 + 0.7 * per_view(captures, "intensity")[:, None] * diffuse).astype(np.float32)
    light = light.reshape(b, 1, w, 1)  # per column, folded into the colours below
    key = wall.building_key
    look = building_look(seed, key, style, (key & URBAN_BIT) != 0)

    def col(name):  # a per-column attribute shaped to broadcast over rows
        value = look[name]
        return value.reshape((b, 1, w, *value.shape[1:]))

    s = wall.wall_s.reshape(b, 1, w)
    facade = col("facade") * (light * texture(col("material"), s, hz)[..., None])
    floor, spacing = col("floor").astype(np.float32), col("spacing")
    frac = np.mod(s / spacing, 1.0)
    in_col = frac < col("width")
    level = np.mod(hz / floor, np.float32(1.0))
    in_row = (level > 0.3) & (level < 0.3 + 0.6 * col("height"))
    shop = col("shop") & (hz < floor)
    upper = in_col & in_row & (hz > floor * np.where(col("shop"), 1.0, 0.25))
    shutter = col("shutters") & in_row & (hz > floor) & (frac >= col("width"))
    shutter &= frac < col("width") + 0.14
    shop_glass = shop & (np.mod(s / 4.0, 1.0) < 0.78) & (hz > 0.25) & (hz < 0.6 * floor)
    awning = shop & (hz >= 0.6 * floor) & (hz < 0.74 * floor)
    sign = shop & (hz >= 0.74 * floor)
    stripe = col("stripes") & (np.mod(s / 0.6, 2.0) < 1.0)
    awning_rgb = np.where(stripe[..., None], np.float32(0.92), col("awning")) * light
    glass = col("glass")[..., None] * _GLASS_RGB * light  # [B, 1, W, 3]
    top = (wall.height.reshape(b, 1, w) - hz) < 0.35  # cornice line
    rgb = facade * np.where(top, np.float32(0.75), np.float32(1.0))[..., None]
    mural = col("mural") & (hz > floor) & mural_pattern(col, s, hz)
    rgb = np.where(mural[..., None], col("mural_rgb") * light, rgb)
    # Windows: frames in the trim colour, some arched, balconies under some floors.
    window_top = 0.3 + 0.6 * col("height")
    arch = col("arched") & (level > window_top - 0.12)
    arch &= np.abs(frac / col("width") - 0.5) > 0.5 * np.sqrt(
        np.clip(1 - ((level - window_top + 0.12) / 0.12) ** 2, 0, 1)
    )
    pane = upper & ~arch
    frame = col("frames") & pane & ((frac < 0.12 * col("width")) | (level < 0.36))
    balcony = col("balconies") & (hz > floor) & (level < 0.3) & (level > 0.12)
    balcony &= frac < col("width") + 0.3
    rgb = np.where(shutter[..., None], col("trim") * light, rgb)
    rgb = np.where((pane | shop_glass)[..., None], glass, rgb)
    rgb = np.where((frame | balcony)[..., None], col("trim") * light, rgb)
    rgb = np.where(awning[..., None], awning_rgb, rgb)
    logo = sign_pattern(col, s, (hz - 0.74 * floor) / (0.26 * floor))
    rgb = np.where(
        sign[..., None], np.where(logo[..., None], col("logo"), col("sign")) * light, rgb
    )
    rgb = rgb.astype(np.float32)
    if forest_px.size:  # world-anchored leaf texture, only on forest-edge wall pixels
        bi, ri, ci = np.unravel_index(forest_px, hz.shape)
        hx, hy = renderer._hit_xy
        along_edge = (hx + hy)[bi, ci] * 0.7071
        leaves = value_noise(seed, 401, along_edge, hz[bi, ri, ci], 1.6)
        season = per_view(captures, "season")[bi]
        green = vegetation(
            0.30 + 0.03 * leaves, 0.55, 0.18 + 0.2 * leaves, style.reshape(b, w)[bi, ci], season,
            0.5,
        )  # fmt: skip
        rgb[bi, ri, ci] = green * light[bi, 0, ci]
    return rgb, look


def _roofs(renderer, wall, wall_d, ray, look, captures, b, w):
    """Pitched roofs seen above the eaves: mask [B, H, W] and lit colour [B, 1, W, 3].

    The roof rises from the eaves (the wall top at the hit) to the ridge ``ridge_m`` behind
    the wall, ``roof_rise`` higher; a row shows roof where its ray passes above the eaves
    and below the ridge line.
    """
    t = renderer.tables
    rise = wall.roof_rise.reshape(b, 1, w)
    eave = wall.height.reshape(b, 1, w)
    normal = wall.wall_normal.reshape(b, w)
    # Ray direction against the wall normal: how much farther the ridge is along the ray.
    facing = -(ray[..., 0] * np.sin(normal) + ray[..., 1] * np.cos(normal))
    ridge_d = wall_d + wall.ridge_m.reshape(b, w) / np.clip(facing, 0.35, None)
    d0 = np.where(np.isfinite(wall_d), wall_d, 0.0)[:, None, :].astype(np.float32)
    d1 = np.where(np.isfinite(ridge_d), ridge_d, 0.0)[:, None, :].astype(np.float32)
    z0 = renderer.cam_h + t["row_y"] * d0 / t["col_len"]
    z1 = renderer.cam_h + t["row_y"] * d1 / t["col_len"]
    mask = (rise > 0) & (z0 > eave) & (z1 <= eave + rise) & np.isfinite(wall_d)[:, None, :]
    sun_az, sun_el = per_view(captures, "sun_azimuth"), per_view(captures, "sun_elevation")
    lit = 0.55 + 0.5 * np.clip(np.cos(normal - sun_az[:, None]), 0, 1) * np.sin(sun_el)[:, None]
    lit *= per_view(captures, "intensity")[:, None]
    colour = look["pitched_roof"].reshape(b, 1, w, 3) * lit.reshape(b, 1, w, 1)
    return mask, colour.astype(np.float32)


def _ground(renderer, x, y, ray, is_ground, captures, intensity):
    """Lit ground colour at half horizontal resolution: [B, H, ceil(W / 2), 3] float32."""
    b, h, w = is_ground.shape
    gd = renderer.tables["ground_d"]
    pairs = is_ground[..., 0::2].copy()  # an odd last column is its own pair
    pairs[..., : w // 2] |= is_ground[..., 1::2]
    bi, ri, pi = np.nonzero(pairs)
    ci = 2 * pi
    gx = x[bi] + ray[bi, ci, 0] * gd[ri, ci]
    gy = y[bi] + ray[bi, ci, 1] * gd[ri, ci]
    glay = renderer.world.layout(gx, gy)
    season = per_view(captures, "season")
    sun_el = per_view(captures, "sun_elevation")
    ground = ground_rgb(renderer.world.seed, glay, gx, gy, season[bi])
    view_light = (0.45 + 0.65 * intensity * np.sin(sun_el) ** 0.5).astype(np.float32)
    shaded = np.zeros((b, h, (w + 1) // 2, 3), np.float32)
    shaded[bi, ri, pi] = ground * view_light[bi, None]
    return shaded


def _paint_pairs(rgb, shaded, mask):
    """Write half-resolution ``shaded`` [B, H, ceil(W/2), 3] into ``rgb`` where ``mask``."""
    b, h, w = mask.shape
    if w % 2:
        shaded = np.repeat(shaded, 2, axis=2)[:, :, :w]
        np.copyto(rgb, shaded, where=mask[..., None])
        return
    # Pairs of columns as a trailing axis: the source broadcasts over it without a copy.
    pairs = rgb.reshape(b, h, w // 2, 2, 3)
    np.copyto(pairs, shaded[:, :, :, None, :], where=mask.reshape(b, h, w // 2, 2, 1))


def _trees(renderer, tree, captures, intensity, rgb, dist) -> None:
    """Draw tree crowns and trunks in front of what ``rgb``/``dist`` hold (only the columns
    that have a tree are touched)."""
    tb, tc = np.nonzero(np.isfinite(tree["dist"]))
    if not tb.size:
        return
    t = renderer.tables
    td = tree["dist"][tb, tc].astype(np.float32)[:, None]  # [N, 1]
    tz = renderer.cam_h + t["row_y"][:, 0] * td / t["col_len"][0, tc][:, None]  # [N, H]
    top = tree["top"][tb, tc].astype(np.float32)[:, None]
    bottom = top * np.float32(0.38)
    profile = tree["profile"][tb, tc].astype(np.float32)[:, None]
    centre, half = 0.5 * (top + bottom), 0.5 * (top - bottom) * profile
    behind = dist[tb, :, tc]  # [N, H]
    front = td < behind
    crown = front & (np.abs(tz - centre) < half)
    trunk = front & tree["trunk"][tb, tc][:, None] & (tz >= 0) & (tz < bottom)
    season = per_view(captures, "season")[tb]
    leaves = tree_rgb(renderer.world.seed, tree["key"][tb, tc], tree["style"][tb, tc], season)
    height = np.clip((tz - bottom) / np.maximum(top - bottom, np.float32(1e-3)), 0, 1)
    shade = 0.7 + 0.35 * profile * (0.6 + 0.4 * height)  # [N, H]
    light = (0.5 + 0.55 * intensity[tb]).astype(np.float32)[:, None]
    cols = rgb[tb, :, tc]  # [N, H, 3]
    np.copyto(cols, (leaves * light)[:, None, :] * shade[..., None], where=crown[..., None])
    bark = _BARK_RGB * (0.5 + 0.4 * intensity[tb]).astype(np.float32)[:, None]
    np.copyto(cols, bark[:, None, :], where=trunk[..., None])
    rgb[tb, :, tc] = cols
    dist[tb, :, tc] = np.where(crown | trunk, td, behind)


def compose(renderer, x, y, ray, wall_d, wall, tree, captures) -> np.ndarray:
    """Resolve every pixel and shade it: uint8 [B, H, W, 3]."""
    b, w = wall_d.shape
    h = renderer.height
    t = renderer.tables
    row_y, col_len = t["row_y"], t["col_len"]  # [H, 1], [1, W] float32
    intensity = per_view(captures, "intensity")
    # Sky only above the horizon: every pixel below it is ground, wall or far ground.
    upper = int(np.count_nonzero(renderer.row_y > 0))
    sky, horizon = _sky(renderer, ray, captures, upper)
    rgb = np.empty((b, h, w, 3), np.float32)
    rgb[:, :upper] = sky
    rgb[:, upper:] = horizon
    dist = np.full((b, h, w), np.inf, np.float32)
    # Walls.
    wd = wall_d[:, None, :].astype(np.float32)
    hz = renderer.cam_h + row_y * np.where(np.isfinite(wd), wd, np.float32(0.0)) / col_len
    is_wall = np.isfinite(wd) & (hz >= 0) & (hz <= wall.height.reshape(b, 1, w))
    forest_px = np.flatnonzero(is_wall & (wall.ground == FOREST).reshape(b, 1, w))
    wall_rgb, look = _walls(renderer, wall, hz, b, w, captures, forest_px)
    np.copyto(rgb, wall_rgb, where=is_wall[..., None])
    np.copyto(dist, wd, where=is_wall)
    roof, roof_rgb = _roofs(renderer, wall, wall_d, ray, look, captures, b, w)
    roof &= ~is_wall
    np.copyto(rgb, np.broadcast_to(roof_rgb, rgb.shape), where=roof[..., None])
    np.copyto(dist, wd, where=roof)
    # Ground (shaded at half the horizontal resolution: pairs of columns share it).
    gd = t["ground_d"]  # [H, W], inf above the horizon
    is_ground = gd < np.minimum(wd, np.float32(renderer.max_view))
    _paint_pairs(rgb, _ground(renderer, x, y, ray, is_ground, captures, intensity), is_ground)
    np.copyto(dist, gd, where=is_ground)
    far = t["below"] & ~is_ground & ~is_wall & ~roof
    np.copyto(rgb, horizon * np.float32(0.9), where=far[..., None])
    # Tree crowns and trunks in front of everything else.
    _trees(renderer, tree, captures, intensity, rgb, dist)
    terrain.draw(renderer, x, y, ray, captures, rgb, dist)
    landmarks.draw(renderer, x, y, ray, captures, rgb, dist)
    # Distance haze (the sky keeps its colour).
    visibility = (VISIBILITY_M * (1 - 0.6 * per_view(captures, "haze"))).astype(np.float32)
    solid = np.isfinite(dist)
    fog = -np.expm1(-np.where(solid, dist, np.float32(0.0)) / visibility[:, None, None])
    rgb += fog[..., None] * (horizon - rgb)
    out = np.empty((b, h, w, 3), np.uint8)
    for i, cap in enumerate(captures):
        noise = np.random.default_rng(cap.seed).standard_normal((h, w, 3)).astype(np.float32)
        out[i] = finish(rgb[i], cap, noise)
    return out
