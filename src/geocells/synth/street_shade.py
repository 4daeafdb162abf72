"""Shading of street views: sky, walls with windows, crowns, ground, haze and sensor."""

from __future__ import annotations

import numpy as np

from geocells.synth.capture import finish
from geocells.synth.noise import value_noise
from geocells.synth.paint import facade_hsv, ground_rgb, tree_rgb, vegetation, window_params
from geocells.synth.styles import hsv_to_rgb
from geocells.synth.world import FOREST


def _per_view(captures, name):
    return np.array([getattr(c, name) for c in captures], np.float64)


def _sky(renderer, ray, captures):
    """Sky colour per pixel: zenith-to-horizon gradient, haze and a glow around the sun."""
    elev = np.clip(renderer.row_y, 0, None)[None, :, :]  # [1, H, 1]
    haze = _per_view(captures, "haze")[:, None, None, None]
    zenith = np.array([0.25, 0.45, 0.85]) * (1 - 0.5 * haze)
    horizon = np.array([0.75, 0.82, 0.92]) * (1 - 0.2 * haze) + 0.15 * haze
    mix = np.exp(-elev * 3.0)[..., None]
    sky = zenith * (1 - mix) + horizon * mix  # [B, H, 1, 3]
    az = np.arctan2(ray[..., 1], ray[..., 0])  # [B, W]
    sun_az, sun_el = _per_view(captures, "sun_azimuth"), _per_view(captures, "sun_elevation")
    cos_angle = (
        np.cos(sun_el)[:, None, None]
        * np.cos(az - sun_az[:, None])[:, None, :]
        * np.cos(np.arctan(renderer.row_y))[None]
        + np.sin(sun_el)[:, None, None] * np.sin(np.arctan(renderer.row_y))[None]
    )
    glow = 0.35 * np.clip(cos_angle, 0, 1) ** 12
    return np.clip(sky + glow[..., None] * np.array([1.0, 0.9, 0.7]), 0, 1), horizon[:, :, :, :]


def _walls(renderer, wall, hz, b, w, captures):
    """Facade colour with windows (or forest edge foliage) at wall pixels: [B, H, W, 3]."""
    seed = renderer.world.seed
    style, key = wall.style, wall.block_key
    hue, sat, val = facade_hsv(seed, key, style)
    facade = hsv_to_rgb(hue, sat, val).reshape(b, 1, w, 3)
    win = {
        k: np.broadcast_to(v, key.shape).reshape(b, 1, w)
        for k, v in window_params(seed, key, style).items()
    }
    s = wall.wall_s.reshape(b, 1, w)
    in_col = np.mod(s / win["spacing"], 1.0) < win["width"]
    level = np.mod(hz / win["floor"], 1.0)
    in_row = (level > 0.3) & (level < 0.3 + 0.6 * win["height"]) & (hz > 0.8)
    glass = (win["glass"][..., None] * np.array([0.9, 1.0, 1.15])) * np.ones((1, 1, 1, 3))
    top = (wall.height.reshape(b, 1, w) - hz) < 0.35  # cornice line
    rgb = np.where(
        (in_col & in_row)[..., None], glass, facade * np.where(top, 0.75, 1.0)[..., None]
    )
    sun_az, sun_el = _per_view(captures, "sun_azimuth"), _per_view(captures, "sun_elevation")
    normal = wall.wall_normal.reshape(b, w)
    diffuse = np.clip(np.cos(normal - sun_az[:, None]), 0, 1) * np.cos(sun_el)[:, None]
    forest = (wall.ground == FOREST).reshape(b, 1, w)
    if forest.any():
        hx, hy = renderer._hit_xy
        along_edge = ((hx + hy) * 0.7071).reshape(b, 1, w)  # world-anchored leaf texture
        leaves = value_noise(seed, 401, np.broadcast_to(along_edge, hz.shape), hz, 1.6)
        season = _per_view(captures, "season")[:, None, None]
        green = vegetation(
            0.30 + 0.03 * leaves, 0.55, 0.18 + 0.2 * leaves, style.reshape(b, 1, w), season, 0.5
        )
        rgb = np.where(forest[..., None], green, rgb)
        diffuse = np.where(forest[:, 0], 0.4, diffuse)
    return rgb, diffuse


def compose(renderer, x, y, ray, wall_d, wall, tree, captures) -> np.ndarray:
    """Resolve every pixel and shade it: uint8 [B, H, W, 3]."""
    b, w = wall_d.shape
    h = renderer.size
    row_y = renderer.row_y[None].astype(np.float32)  # [1, H, 1]
    col_len = renderer.col_len[None, None, :].astype(np.float32)
    intensity = _per_view(captures, "intensity")[:, None, None, None]
    sun_el = _per_view(captures, "sun_elevation")
    rgb, horizon = _sky(renderer, ray, captures)
    rgb = np.broadcast_to(rgb, (b, h, w, 3)).astype(np.float32)
    dist = np.full((b, h, w), np.inf, np.float32)
    # Walls.
    wd = wall_d[:, None, :].astype(np.float32)
    hz = renderer.cam_h + row_y * np.where(np.isfinite(wd), wd, 0.0) / col_len
    is_wall = np.isfinite(wd) & (hz >= 0) & (hz <= wall.height.reshape(b, 1, w))
    wall_rgb, diffuse = _walls(renderer, wall, hz, b, w, captures)
    light = 0.5 + 0.7 * intensity * diffuse[:, None, :, None]
    np.copyto(rgb, wall_rgb * light, where=is_wall[..., None], casting="unsafe")
    np.copyto(dist, wd, where=is_wall, casting="unsafe")
    # Ground.
    below = row_y < 0
    gd = np.where(below, renderer.cam_h * col_len / np.maximum(-row_y, 1e-9), np.inf)
    is_ground = below & (gd < np.minimum(wd, renderer.max_view))
    # The ground is shaded at half the horizontal resolution (pairs of columns share it).
    pairs = is_ground[..., 0::2] | is_ground[..., 1::2]
    bi, ri, pi = np.nonzero(pairs)
    ci = 2 * pi
    gx = x[bi] + ray[bi, ci, 0] * gd[0, ri, ci]
    gy = y[bi] + ray[bi, ci, 1] * gd[0, ri, ci]
    glay = renderer.world.layout(gx, gy)
    season = _per_view(captures, "season")
    ground = ground_rgb(renderer.world.seed, glay, gx, gy, season[bi])
    ground_light = 0.45 + 0.65 * intensity[bi, 0, 0] * np.sin(sun_el[bi])[:, None] ** 0.5
    shaded = np.zeros((b, h, (w + 1) // 2, 3))
    shaded[bi, ri, pi] = ground * ground_light
    shaded = np.repeat(shaded, 2, axis=2)[:, :, :w]
    np.copyto(rgb, shaded, where=is_ground[..., None], casting="unsafe")
    np.copyto(dist, gd, where=is_ground, casting="unsafe")
    far = below & ~is_ground & ~is_wall
    np.copyto(rgb, horizon * 0.9, where=far[..., None], casting="unsafe")
    # Tree crowns and trunks in front of everything else.
    td = tree["dist"][:, None, :].astype(np.float32)
    tz = renderer.cam_h + row_y * np.where(np.isfinite(td), td, 0.0) / col_len
    top = tree["top"][:, None, :]
    bottom = top * 0.38
    centre, half = 0.5 * (top + bottom), 0.5 * (top - bottom) * tree["profile"][:, None, :]
    crown = np.isfinite(td) & (np.abs(tz - centre) < half) & (td < dist)
    trunk = np.isfinite(td) & tree["trunk"][:, None, :] & (tz >= 0) & (tz < bottom) & (td < dist)
    leaves = tree_rgb(
        renderer.world.seed, tree["key"].ravel(), tree["style"].ravel(), np.repeat(season, w)
    )
    shade = (
        0.7
        + 0.35
        * tree["profile"][:, None, :, None]
        * (0.6 + 0.4 * np.clip((tz - bottom) / np.maximum(top - bottom, 1e-3), 0, 1))[..., None]
    )
    crown_rgb = leaves.reshape(b, 1, w, 3) * shade * (0.5 + 0.55 * intensity)
    np.copyto(rgb, crown_rgb, where=crown[..., None], casting="unsafe")
    bark = np.array([0.25, 0.2, 0.15]) * (0.5 + 0.4 * intensity)
    np.copyto(rgb, bark, where=trunk[..., None], casting="unsafe")
    np.copyto(dist, td, where=crown | trunk, casting="unsafe")
    # Distance haze.
    visibility = 700.0 * (1 - 0.75 * _per_view(captures, "haze"))[:, None, None]
    fog = (1 - np.exp(-np.minimum(dist, 1e9) / visibility.astype(np.float32)))[..., None]
    sky_mask = ~np.isfinite(dist)[..., None]
    np.copyto(rgb, rgb * (1 - fog) + horizon * fog, where=~sky_mask, casting="unsafe")
    out = np.empty((b, h, w, 3), np.uint8)
    for i, cap in enumerate(captures):
        noise = np.random.default_rng(cap.seed).standard_normal((h, w, 3)).astype(np.float32)
        out[i] = finish(rgb[i].astype(np.float32), cap, noise)
    return out
