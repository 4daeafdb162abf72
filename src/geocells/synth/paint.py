"""Colours of the world: ground surfaces, roofs, facades, crowns (unlit, linear RGB in [0, 1])."""

from __future__ import annotations

import numpy as np

from geocells.synth import styles as S
from geocells.synth.noise import hash_ints, hash_unit, value_noise
from geocells.synth.world import FIELD, FOREST, GRASS, ROAD, SIDEWALK, WATER, Layout

# Tree species: hue, saturation, value, autumn sensitivity.
SPECIES = np.array(
    [
        [0.27, 0.60, 0.42, 1.0],
        [0.33, 0.55, 0.28, 0.1],
        [0.22, 0.60, 0.50, 1.3],
        [0.30, 0.40, 0.36, 0.6],
        [0.25, 0.45, 0.55, 0.9],
    ],
    np.float32,
)
# Field crops: hue, saturation, value, seasonal sensitivity.
CROPS = np.array(
    [
        [0.13, 0.55, 0.82, 0.2],
        [0.27, 0.65, 0.55, 1.0],
        [0.07, 0.45, 0.42, 0.0],
        [0.16, 0.85, 0.85, 0.8],
        [0.24, 0.50, 0.52, 1.0],
        [0.31, 0.60, 0.36, 0.7],
        [0.09, 0.30, 0.65, 0.1],
    ],
    np.float32,
)


def vegetation(hue, sat, val, style, season, sensitivity=1.0) -> np.ndarray:
    """Plant colour tinted by the country style and turned by the season (0 summer, 1 autumn)."""
    turn = np.asarray(season, np.float32) * sensitivity
    return S.hsv_to_rgb(
        hue + S.VEG_HUE_SHIFT[style] - 0.16 * turn,
        sat * S.VEG_SAT[style] * (1.0 + 0.1 * turn),
        val * (1.0 + 0.12 * turn),
    )


def tree_rgb(seed: int, tree_key: np.ndarray, style: np.ndarray, season) -> np.ndarray:
    """Crown colour of a tree (species per street or garden)."""
    sp = SPECIES[(hash_ints(seed, 221, tree_key) % np.uint64(len(SPECIES))).astype(np.int64)]
    return vegetation(sp[:, 0], sp[:, 1], sp[:, 2], style, season, sp[:, 3])


def ground_rgb(seed: int, lay: Layout, x: np.ndarray, y: np.ndarray, season) -> np.ndarray:
    """Colour of the ground surface (roads, sidewalks, grass, fields, forest floor, water)."""
    n, style = x.shape[0], lay.style
    season = np.broadcast_to(np.asarray(season, np.float32), (n,))
    rgb = np.zeros((n, 3), np.float32)
    grain = value_noise(seed, 231, x, y, 3.0)
    kind = lay.ground
    sel = kind == ROAD
    if sel.any():
        key = lay.street_key[sel]
        tone = 0.8 + 0.4 * hash_unit(seed, 232, key)[:, None]
        tint = (hash_unit(seed, 233, key)[:, None] - 0.5) * np.array([0.10, 0.02, -0.10])
        road = S.ROAD_RGB[style[sel]] * tone + tint
        mark = S.MARKING_RGB[style[sel]]
        paint = (lay.stripe[sel] > 0.5) & (mark[:, 0] >= 0)
        rgb[sel] = np.where(paint[:, None], mark, road)
    sel = kind == SIDEWALK
    if sel.any():
        tone = 0.88 + 0.24 * hash_unit(seed, 234, lay.block_key[sel])[:, None]
        rgb[sel] = S.SIDEWALK_RGB[style[sel]] * tone
    sel = (kind == GRASS) | (kind == FOREST)
    if sel.any():
        patch = value_noise(seed, 235, x[sel], y[sel], 12.0)
        val = np.where(kind[sel] == FOREST, 0.28, 0.48) * (0.85 + 0.3 * patch)
        rgb[sel] = vegetation(0.25 + 0.04 * patch, 0.5, val, style[sel], season[sel])
    sel = kind == FIELD
    if sel.any():
        crop = CROPS[
            (hash_ints(seed, 236, lay.parcel_key[sel]) % np.uint64(len(CROPS))).astype(np.int64)
        ]
        furrow = 0.9 + 0.1 * np.sin(lay.stripe[sel] * (2 * np.pi / 3.0))
        rgb[sel] = vegetation(
            crop[:, 0], crop[:, 1], crop[:, 2] * furrow, style[sel], season[sel], crop[:, 3]
        )
    sel = kind == WATER
    if sel.any():
        ripple = value_noise(seed, 237, x[sel], y[sel], 6.0)
        rgb[sel] = S.hsv_to_rgb(0.55 + 0.03 * (style[sel] % 3), 0.55, 0.30 + 0.06 * ripple)
    return rgb * (0.94 + 0.12 * grain)[:, None]
