"""World geometry at arbitrary points: roads, blocks, buildings, trees, parcels, land cover."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING

import numpy as np

from geocells.synth import rural
from geocells.synth import styles as S
from geocells.synth.noise import hash_ints, hash_units, value_noise
from geocells.synth.world import (
    BUILDING,
    FIELD,
    FOREST,
    FOREST_HEIGHT,
    GRASS,
    ROAD,
    SIDEWALK,
    TREE,
    WATER,
    Layout,
)

if TYPE_CHECKING:
    from geocells.synth.world import World

SIDEWALK_M = 2.5
URBAN_BIT = np.uint64(1 << 63)


def _to_world(town: dict, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Town-grid coordinates -> world metres."""
    ca, sa = np.cos(town["angle"]), np.sin(town["angle"])
    return town["cx"] + ca * u - sa * v, town["cy"] + sa * u + ca * v


def _street_trees(seed, town, u, v, line_u, line_v, sp_keys, half, lay, mask):
    """Rows of street trees on the sidewalks of present street segments."""
    for axis, (coord, along, period, key) in enumerate(
        ((u, v, town["bu"], sp_keys[0]), (v, u, town["bv"], sp_keys[1]))
    ):
        r_has, r_spacing, r_radius, r_height = hash_units(seed, 61, key)
        has = mask & (r_has < 0.4)
        spacing = 8.0 + 6.0 * r_spacing
        radius = 2.0 + 1.5 * r_radius
        k = np.round(coord / period)
        lateral = coord - k * period
        offset = half + 1.2
        centre_along = (np.floor(along / spacing) + 0.5) * spacing
        centre_lat = np.sign(lateral) * offset
        d2 = (lateral - centre_lat) ** 2 + (along - centre_along) ** 2
        hit = has & (d2 < radius**2) & (lay.tree_top == 0)
        if not hit.any():
            continue
        i = np.flatnonzero(hit)
        line = k[i] * period[i] + centre_lat[i]
        cu, cv = (line, centre_along[i]) if axis == 0 else (centre_along[i], line)
        tx, ty = _to_world({n: town[n][i] for n in ("angle", "cx", "cy")}, cu, cv)
        _set_tree(lay, i, tx, ty, radius[i], 7.0 + 6.0 * r_height[i], key[i])


def _set_tree(lay: Layout, idx, tx, ty, radius, height, key) -> None:
    """Write a tree crown into the layout at point indices ``idx``."""
    lay.tree_top[idx] = height
    lay.tree_cx[idx] = tx
    lay.tree_cy[idx] = ty
    lay.tree_r[idx] = radius
    lay.tree_key[idx] = key


def _urban(world: World, x, y, style, town, lay: Layout) -> np.ndarray:
    """Town streets, sidewalks, perimeter blocks and suburban houses; returns the built mask."""
    seed = world.seed
    ca, sa = np.cos(town["angle"]), np.sin(town["angle"])
    dx, dy = x - town["cx"], y - town["cy"]
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy
    bu, bv, half = town["bu"], town["bv"], town["road_w"] / 2
    i, j = np.floor(u / bu), np.floor(v / bv)
    a, b = u - i * bu, v - j * bv
    block = hash_ints(seed, 71, town["key"], i, j)
    centre_dist = np.hypot((i + 0.5) * bu, (j + 0.5) * bv)
    infl = np.clip(1.0 - centre_dist / town["radius"], 0, 1) * (
        0.7 + 0.6 * hash_units(seed, 72, block, count=1)[0]
    )
    urban, built = infl > 0.38, (infl > 0.18) & (town["u"] > 0)
    da, db = np.minimum(a, bu - a), np.minimum(b, bv - b)
    zone = town["u"] > 0.08
    on_u, on_v = zone & (da < half), zone & (db < half)
    road = on_u | on_v
    key_u = hash_ints(seed, 73, town["key"], np.round(u / bu), j)
    key_v = hash_ints(seed, 74, town["key"], np.round(v / bv), i)
    lay.street_key = np.where(on_u, key_u, np.where(on_v, key_v, lay.street_key))
    centre = (on_u & (da < 0.15) & (np.mod(v, 6.0) < 3.0)) | (
        on_v & (db < 0.15) & (np.mod(u, 6.0) < 3.0)
    )
    lay.stripe = np.where(road, centre.astype(np.float32), lay.stripe)
    lay.ground = np.where(road, ROAD, lay.ground).astype(np.uint8)
    side = built & ~road & (np.minimum(da, db) < half + SIDEWALK_M)
    lay.ground = np.where(side, SIDEWALK, lay.ground).astype(np.uint8)
    lay.block_key = np.where(built, block, lay.block_key)
    _street_trees(seed, town, u, v, on_u, on_v, (key_u, key_v), half, lay, built & ~road)
    inner = built & ~road & ~side
    _perimeter_blocks(world, style, block, a, b, bu, bv, half, town["angle"], inner & urban, lay)
    _houses(world, x, y, style, block, a, b, bu, bv, half, town, inner & ~urban, lay)
    return built


def _perimeter_blocks(world, style, block, a, b, bu, bv, half, angle, mask, lay) -> None:
    """Closed rows of urban buildings around a courtyard (computed on ``mask`` only)."""
    idx = np.flatnonzero(mask)
    if not idx.size:
        return
    seed, style, block, a, b = world.seed, style[idx], block[idx], a[idx], b[idx]
    bu, bv, half = bu[idx], bv[idx], half[idx]
    r_setback, r_depth, r_plot, r_floors = hash_units(seed, 81, block)
    off = half + SIDEWALK_M + S.SETBACK[style] * r_setback
    edges = np.stack([a - off, bu - off - a, b - off, bv - off - b])
    nearest = np.argmin(edges, axis=0)
    edge_dist = np.min(edges, axis=0)
    depth = S.BLOCK_DEPTH[style] * (0.8 + 0.4 * r_depth)
    bld = (edge_dist > 0) & (edge_dist < depth)
    along = np.where(nearest < 2, b, a)
    plot = np.floor(along / (9.0 + 8.0 * r_plot))
    # The top bit marks perimeter-block buildings (they may have shop fronts).
    building = hash_ints(seed, 85, block, nearest * 100_003 + plot.astype(np.int64)) | URBAN_BIT
    r_height, r_own, r_roof, r_rise = hash_units(seed, 86, building)
    lo, hi = S.URBAN_FLOORS[style, 0], S.URBAN_FLOORS[style, 1]
    # The block sets the typical height; each building differs from it by up to two floors.
    floors = np.clip(np.round(lo + (hi - lo) * r_floors + 4.0 * (r_own - 0.5)), 1, hi + 2)
    height = floors * S.FLOOR_HEIGHT[style] * (0.9 + 0.2 * r_height)
    normal = angle[idx] + np.array([np.pi, 0.0, -np.pi / 2, np.pi / 2])[nearest]
    # Pitched roofs (ridge along the street, halfway through the building's depth).
    pitched = r_roof < S.PITCHED_SHARE[style]
    rise = np.where(pitched, (0.25 + 0.35 * r_rise) * depth, 0.0)
    back = edge_dist > depth / 2
    slope = np.where(pitched, normal + np.where(back, np.pi, 0.0), np.nan)
    ridge = np.abs(depth / 2 - edge_dist)
    _set_building(lay, idx[bld], height[bld], normal[bld], along[bld], slope[bld], building[bld],
                  rise[bld], ridge[bld])  # fmt: skip


def _houses(world, x, y, style, block, a, b, bu, bv, half, town, mask, lay) -> None:
    """Detached suburban houses with gabled roofs, one per lot, and garden trees."""
    idx = np.flatnonzero(mask)
    if not idx.size:
        return
    seed, style, block, a, b = world.seed, style[idx], block[idx], a[idx], b[idx]
    bu, bv, half, angle = bu[idx], bv[idx], half[idx], town["angle"][idx]
    off = half + SIDEWALK_M
    r_lot, r_hx, r_hy, r_floors = hash_units(seed, 91, block)
    lot = S.LOT_SIZE[style] * (0.85 + 0.3 * r_lot)
    li, lj = np.floor((a - off) / lot), np.floor((b - off) / lot)
    p, q = a - off - li * lot, b - off - lj * lot
    fits = (li >= 0) & (lj >= 0) & ((li + 1) * lot <= bu - 2 * off)
    fits &= (lj + 1) * lot <= bv - 2 * off
    lot_key = hash_ints(seed, 92, block, li.astype(np.int64) * 1009 + lj.astype(np.int64))
    r_pc, r_qc, r_house, r_tq = hash_units(seed, 93, lot_key)
    r_radius, r_tree, r_height = hash_units(seed, 100, lot_key, count=3)
    pc, qc = lot * (0.5 + 0.16 * (r_pc - 0.5)), lot * (0.5 + 0.16 * (r_qc - 0.5))
    hx, hy = lot * (0.2 + 0.1 * r_hx), lot * (0.2 + 0.1 * r_hy)
    dp, dq = p - pc, q - qc
    inside = fits & (np.abs(dp) < hx) & (np.abs(dq) < hy) & (r_house < 0.88)
    lo, hi = S.SUBURBAN_FLOORS[style, 0], S.SUBURBAN_FLOORS[style, 1]
    height = np.round(lo + (hi - lo) * r_floors) * S.FLOOR_HEIGHT[style] + 1.8
    x_wall = (hx - np.abs(dp)) < (hy - np.abs(dq))
    u_normal = angle + np.where(dp < 0, np.pi, 0.0)
    v_normal = angle + np.where(dq < 0, -np.pi / 2, np.pi / 2)
    normal = np.where(x_wall, u_normal, v_normal)
    slope = np.where(hx > hy, v_normal, u_normal)
    along = np.where(x_wall, q, p)
    sel = inside
    ridge = np.where(hx > hy, hy - np.abs(dq), hx - np.abs(dp))
    rise = (0.6 + 0.5 * r_floors) * np.minimum(hx, hy)
    house_key = lot_key[sel] & ~URBAN_BIT
    _set_building(lay, idx[sel], height[sel], normal[sel], along[sel], slope[sel], house_key,
                  rise[sel], ridge[sel])  # fmt: skip
    # A garden tree in some lots.
    tp, tq = lot * 0.14, lot * (0.15 + 0.7 * r_tq)
    radius = 1.8 + 1.6 * r_radius
    tree = fits & ((p - tp) ** 2 + (q - tq) ** 2 < radius**2) & (r_tree < 0.6)
    tree &= lay.tree_top[idx] == 0
    if tree.any():
        ca, sa = np.cos(angle), np.sin(angle)
        du, dv = tp - p, tq - q
        tx, ty = x[idx] + ca * du - sa * dv, y[idx] + sa * du + ca * dv
        h = 6.0 + 5.0 * r_height
        t = tree
        _set_tree(lay, idx[t], tx[t], ty[t], radius[t], h[t], block[t])


def _set_building(lay: Layout, idx, height, normal, along, slope, key, rise, ridge) -> None:
    """Write building geometry into the layout at point indices ``idx``."""
    lay.height[idx] = height
    lay.wall_normal[idx] = normal
    lay.wall_s[idx] = along
    lay.roof_slope[idx] = slope
    lay.building_key[idx] = key
    lay.roof_rise[idx] = rise
    lay.ridge_m[idx] = ridge


def _rural(world: World, x, y, town_u, coarse, lay: Layout) -> None:
    """Rural roads with tree rows, field parcels with furrows and field margins."""
    seed, spacing = world.seed, world.cfg.rural_road_spacing_m
    c, s = np.cos(world.rural_angle), np.sin(world.rural_angle)
    r = c * x + s * y + coarse["warp_r"]
    t = -s * x + c * y + coarse["warp_t"]
    country = town_u < 0.14
    for axis, (coord, along) in enumerate(((r, t), (t, r))):
        k = np.round(coord / spacing)
        lateral = coord - k * spacing
        key = hash_ints(seed, 111 + axis, k, np.floor(along / spacing))
        r_present, r_rows, r_spacing, r_radius = hash_units(seed, 113, key)
        present = country & (r_present < 0.55)
        on_road = present & (np.abs(lateral) < 3.0)
        lay.ground[on_road] = ROAD
        lay.street_key[on_road] = key[on_road]
        centre = on_road & (np.abs(lateral) < 0.12) & (np.mod(along, 8.0) < 3.0)
        lay.stripe[on_road] = centre[on_road]
        # Rows of trees along some rural roads.
        rows = present & (r_rows < 0.35) & (lay.tree_top == 0)
        tree_spacing = 10.0 + 6.0 * r_spacing
        centre_along = (np.floor(along / tree_spacing) + 0.5) * tree_spacing
        centre_lat = np.sign(lateral) * 6.0
        radius = 2.4 + 1.2 * r_radius
        hit = rows & ((lateral - centre_lat) ** 2 + (along - centre_along) ** 2 < radius**2)
        if hit.any():
            i = np.flatnonzero(hit)
            d_coord, d_along = centre_lat[i] - lateral[i], centre_along[i] - along[i]
            dr, dt = (d_coord, d_along) if axis == 0 else (d_along, d_coord)
            tx, ty = x[i] + c * dr - s * dt, y[i] + s * dr + c * dt
            _set_tree(lay, i, tx, ty, radius[i], 9.0 + 5.0 * r_spacing[i], key[i])
    # Field parcels: each road cell is cut into strips.
    cr, ct = np.floor(r / spacing), np.floor(t / spacing)
    cell = hash_ints(seed, 121, cr, ct)
    n_r = 2 + (cell % np.uint64(4)).astype(np.int64)
    n_t = 1 + ((cell >> np.uint64(8)) % np.uint64(3)).astype(np.int64)
    fr, ft = (r / spacing - cr) * n_r, (t / spacing - ct) * n_t
    lay.parcel_key = hash_ints(seed, 122, cell, np.floor(fr), np.floor(ft))
    margin_r = np.minimum(fr % 1.0, 1.0 - fr % 1.0) * spacing / n_r
    margin_t = np.minimum(ft % 1.0, 1.0 - ft % 1.0) * spacing / n_t
    field = (lay.ground == GRASS) & (np.minimum(margin_r, margin_t) > 1.5) & country
    furrow = np.where((lay.parcel_key & np.uint64(1)) == 0, r, t)
    lay.stripe[field] = furrow[field]
    lay.ground[field] = FIELD
    angle = world.rural_angle
    rural.farmsteads(seed, r, t, angle, lay, country & (town_u < 0.02))
    rural.hedgerows(seed, cell, fr, ft, margin_r, margin_t, lay, country)
    rural.lone_trees(seed, x, y, r, t, angle, lay, country)


def subset(lay: Layout, mask: np.ndarray) -> Layout:
    """The layout restricted to the points ``mask``."""
    return Layout(**{f.name: getattr(lay, f.name)[mask] for f in fields(Layout)})


def scatter(lay: Layout, sub: Layout, mask: np.ndarray) -> None:
    """Write ``sub`` (a subset layout) back into ``lay`` at ``mask``."""
    for f in fields(Layout):
        getattr(lay, f.name)[mask] = getattr(sub, f.name)


def build_layout(world: World, x: np.ndarray, y: np.ndarray) -> Layout:
    """Evaluate the world geometry at points ``x, y`` (1-D arrays of world metres)."""
    n = x.shape[0]
    zeros32 = np.zeros(n, np.float32)
    lay = Layout(
        kind=np.zeros(n, np.uint8), ground=np.full(n, GRASS, np.uint8), style=np.zeros(n, np.int64),
        height=zeros32.copy(), tree_top=zeros32.copy(), tree_cx=np.zeros(n), tree_cy=np.zeros(n),
        tree_r=np.zeros(n), tree_key=np.zeros(n, np.uint64), block_key=np.zeros(n, np.uint64),
        building_key=np.zeros(n, np.uint64), roof_rise=zeros32.copy(), ridge_m=zeros32.copy(),
        street_key=np.zeros(n, np.uint64), parcel_key=np.zeros(n, np.uint64),
        wall_s=zeros32.copy(), wall_normal=zeros32.copy(),
        roof_slope=np.full(n, np.nan, np.float32),
        stripe=zeros32.copy(), u=zeros32,
    )  # fmt: skip
    if n == 0:
        return lay
    coarse = world.coarse(x, y)
    lay.style = style = coarse["style"]
    town = {k[5:]: v for k, v in coarse.items() if k.startswith("town_")}
    lay.u = town["u"]
    # Town and country parts run only on the points that can hold them.
    built = np.zeros(n, bool)
    sel = town["u"] > 0.0
    if sel.any():
        sub = subset(lay, sel)
        built[sel] = _urban(
            world, x[sel], y[sel], style[sel], {k: v[sel] for k, v in town.items()}, sub
        )
        scatter(lay, sub, sel)
    sel = town["u"] < 0.14
    if sel.any():
        sub = subset(lay, sel)
        _rural(world, x[sel], y[sel], town["u"][sel], {k: v[sel] for k, v in coarse.items()}, sub)
        sub.ground = np.where(built[sel] & (sub.ground == FIELD), GRASS, sub.ground).astype(
            np.uint8
        )
        scatter(lay, sub, sel)
    road = lay.ground == ROAD
    cfg = world.cfg
    water = (coarse["water"] > cfg.water_threshold) & ~road
    forest = (coarse["forest"] > cfg.forest_threshold) & ~road & ~built & ~water
    lay.ground = np.where(water, WATER, np.where(forest, FOREST, lay.ground)).astype(np.uint8)
    lay.height = np.where(water | road, 0.0, lay.height).astype(np.float32)
    canopy = value_noise(world.seed, 53, x[forest], y[forest], 30.0)
    lay.height[forest] = FOREST_HEIGHT * (0.8 + 0.4 * canopy)
    lay.tree_top = np.where(water | road | (lay.height > 0), 0.0, lay.tree_top).astype(np.float32)
    lay.kind = lay.ground.copy()
    lay.kind[lay.tree_top > 0] = TREE
    lay.kind[(lay.height > 0) & ~forest & (lay.ground != FOREST)] = BUILDING
    return lay
