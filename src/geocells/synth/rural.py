"""Rural identity: farmsteads with house and barn, hedgerows, and lone trees in the fields.

Each is a pure function of (seed, position) in the rural grid frame (``r`` across, ``t``
along the rotated road grid), written into the layout where the ground is still open
(fields and grass, never roads): the street view sees barns, hedges and trees as solids,
the orthophoto their roofs, crowns and shadows.
"""

from __future__ import annotations

import numpy as np

from geocells.synth.noise import hash_ints, hash_units
from geocells.synth.world import FIELD, FOREST, GRASS, Layout

FARM_M = 460.0  # lattice of farmstead sites (one site per square at most)
LONE_TREE_M = 42.0  # lattice of lone field trees
# Farm buildings in the site frame: centre (along r, along t), half sizes, eave height.
FARM_PARTS = np.array(
    [
        [0.0, 0.0, 5.5, 6.5, 6.2],  # farmhouse
        [17.0, 4.0, 7.0, 13.5, 7.5],  # barn
        [-2.0, 19.0, 4.0, 6.0, 3.8],  # shed
    ]
)


def _open(lay: Layout, idx: np.ndarray) -> np.ndarray:
    return (lay.ground[idx] == FIELD) | (lay.ground[idx] == GRASS)


def farmsteads(seed: int, r: np.ndarray, t: np.ndarray, angle: float, lay: Layout,
               country: np.ndarray) -> None:  # fmt: skip
    """Farm buildings (pitched roofs, ridge along their long side) at points ``country``."""
    from geocells.synth.layout import _set_building

    fi, fj = np.floor(r / FARM_M), np.floor(t / FARM_M)
    r_has, r_x, r_y, r_turn = hash_units(seed, 131, fi, fj)
    sr = (fi + 0.2 + 0.6 * r_x) * FARM_M
    st = (fj + 0.2 + 0.6 * r_y) * FARM_M
    flip = np.where(r_turn < 0.5, 1.0, -1.0)
    site = hash_ints(seed, 132, fi, fj)
    for part, (cr, ct, hr, ht, eave) in enumerate(FARM_PARTS):
        dr, dt = r - (sr + flip * cr), t - (st + ct)
        inside = country & (r_has < 0.5) & (np.abs(dr) < hr) & (np.abs(dt) < ht)
        idx = np.flatnonzero(inside)
        idx = idx[_open(lay, idx)]
        if not idx.size:
            continue
        dr, dt = dr[idx], dt[idx]
        r_size, r_roof = hash_units(seed, 133 + part, site[idx], count=2)
        wall_r = (hr - np.abs(dr)) < (ht - np.abs(dt))  # nearest wall faces along r
        normal = angle + np.where(wall_r, np.where(dr > 0, 0.0, np.pi),
                                  np.where(dt > 0, np.pi / 2, -np.pi / 2))  # fmt: skip
        # Ridge along t (the long side): the roof slopes face +-r.
        slope = angle + np.where(dr > 0, 0.0, np.pi)
        along = np.where(wall_r, dt, dr)
        ridge = hr - np.abs(dr)
        rise = hr * (0.55 + 0.35 * r_roof)
        height = np.full(idx.size, eave * (0.9 + 0.2 * r_size), np.float32)
        key = hash_ints(seed, 136, site[idx], np.full(idx.size, part))
        _set_building(lay, idx, height, normal, along, slope, key >> np.uint64(1), rise, ridge)


def hedgerows(seed: int, cell, fr, ft, margin_r, margin_t, lay: Layout, country) -> None:
    """Hedges (2-3.5 m of foliage) along some field boundaries."""
    across_r = margin_r <= margin_t
    line = np.where(across_r, np.round(fr), np.round(ft) + 1000)
    r_has, r_height = hash_units(seed, 141, cell, line.astype(np.int64), count=2)
    hedge = country & (np.minimum(margin_r, margin_t) < 1.2) & (r_has < 0.4)
    idx = np.flatnonzero(hedge)
    idx = idx[_open(lay, idx)]
    lay.ground[idx] = FOREST
    lay.height[idx] = 2.0 + 1.5 * r_height[idx]


def lone_trees(seed: int, x, y, r: np.ndarray, t: np.ndarray, angle: float, lay: Layout,
               country) -> None:  # fmt: skip
    """Single trees standing in fields and meadows."""
    from geocells.synth.layout import _set_tree

    ci, cj = np.floor(r / LONE_TREE_M), np.floor(t / LONE_TREE_M)
    r_has, r_x, r_y, r_size = hash_units(seed, 151, ci, cj)
    cr = (ci + 0.2 + 0.6 * r_x) * LONE_TREE_M
    ct = (cj + 0.2 + 0.6 * r_y) * LONE_TREE_M
    radius = 2.5 + 2.5 * r_size
    hit = country & (r_has < 0.1) & ((r - cr) ** 2 + (t - ct) ** 2 < radius**2)
    hit &= lay.tree_top == 0
    idx = np.flatnonzero(hit)
    idx = idx[_open(lay, idx)]
    if not idx.size:
        return
    c, s = np.cos(angle), np.sin(angle)
    # Rural frame -> world: r = c x + s y (+ warp), so the offset rotates back by -angle.
    dr, dt = cr[idx] - r[idx], ct[idx] - t[idx]
    key = hash_ints(seed, 152, ci[idx].astype(np.int64), cj[idx].astype(np.int64))
    tx, ty = x[idx] + dr * c - dt * s, y[idx] + dr * s + dt * c
    _set_tree(lay, idx, tx, ty, radius[idx], 8.0 + 7.0 * r_size[idx], key)
