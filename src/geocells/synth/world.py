"""The procedural world: countries, towns, roads, blocks, buildings, trees, fields, water.

World coordinates are metres (easting, northing) in the UTM zone of the region centre, so
the aerial raster is axis-aligned. Every attribute is a pure function of (seed, x, y):
any window can be evaluated alone and agrees with every other window.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from pyproj import CRS, Transformer

from geocells.synth import styles as S
from geocells.synth.config import SynthConfig
from geocells.synth.noise import fractal_noise, hash_ints, hash_unit

# Kinds of surface (what is seen from above).
GRASS, ROAD, BUILDING, TREE, WATER, FOREST, FIELD, SIDEWALK = range(8)
FOREST_HEIGHT = 17.0
COARSE_M = 8.0  # lattice of the large-scale fields
TILE_NODES = 64  # cache tiles of the coarse lattice
_CONTINUOUS = {"town_u", "water", "forest", "warp_r", "warp_t"}


@dataclass
class Layout:
    """World geometry at N points (all arrays of length N)."""

    kind: np.ndarray  # uint8 surface kind seen from above
    ground: np.ndarray  # uint8 kind of the ground itself (under trees)
    style: np.ndarray  # int64 country style index
    height: np.ndarray  # float32 height of the solid (building/forest) here, else 0
    tree_top: np.ndarray  # float32 crown top of a tree covering this point, else 0
    tree_cx: np.ndarray  # float64 tree centre (x, y) and crown radius
    tree_cy: np.ndarray
    tree_r: np.ndarray
    tree_key: np.ndarray  # uint64 key of that tree (species colour)
    block_key: np.ndarray  # uint64 key of the town block (0 outside towns)
    building_key: np.ndarray  # uint64 key of the building here (its colours, material, windows)
    street_key: np.ndarray  # uint64 key of the road segment (roads only)
    parcel_key: np.ndarray  # uint64 key of the field parcel
    wall_s: np.ndarray  # float32 coordinate along the nearest wall (for windows)
    wall_normal: np.ndarray  # float32 azimuth of the nearest wall's outward normal (rad)
    roof_slope: np.ndarray  # float32 azimuth of the roof slope normal, NaN when flat
    roof_rise: np.ndarray  # float32 height of a pitched roof's ridge above the eaves, 0 if flat
    ridge_m: np.ndarray  # float32 horizontal distance from the wall here to the ridge
    stripe: np.ndarray  # float32 field furrow phase / road marking flag
    u: np.ndarray  # float32 town influence in [0, 1]


class World:
    """A deterministic procedural world over real lat/lon (``World(cfg)``)."""

    def __init__(self, cfg: SynthConfig):
        if not -80.0 <= cfg.center_lat <= 84.0:
            raise ValueError(f"center_lat={cfg.center_lat} is outside the UTM range [-80, 84]")
        if not -180.0 <= cfg.center_lon <= 180.0:
            raise ValueError(f"center_lon={cfg.center_lon} is outside [-180, 180]")
        self.cfg = cfg
        self.seed = int(cfg.seed)
        zone = int((cfg.center_lon + 180.0) // 6.0) % 60 + 1
        epsg = (32600 if cfg.center_lat >= 0 else 32700) + zone
        self.crs = CRS.from_epsg(epsg)
        self._to_xy = Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)
        self._to_ll = Transformer.from_crs(self.crs, "EPSG:4326", always_xy=True)
        self.center_xy = self.to_xy(np.array([cfg.center_lat]), np.array([cfg.center_lon]))
        self._tiles: OrderedDict[tuple[int, int], dict[str, np.ndarray]] = OrderedDict()
        # Enough tiles for the region and its aerial margin, so sampling never thrashes.
        tile_m = TILE_NODES * COARSE_M
        side = (cfg.size_km * 1000.0 + 2 * cfg.margin_m) / tile_m + 2
        self.max_tiles = max(256, int(side * side) + 64)
        self.rural_angle = float(hash_unit(self.seed, 11, np.array(0))) * np.pi / 2

    def to_xy(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """WGS84 degrees -> world metres (easting, northing)."""
        x, y = self._to_xy.transform(np.asarray(lon, float), np.asarray(lat, float))
        return np.asarray(x), np.asarray(y)

    def to_latlon(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World metres -> WGS84 degrees (lat, lon)."""
        lon, lat = self._to_ll.transform(np.asarray(x, float), np.asarray(y, float))
        return np.asarray(lat), np.asarray(lon)

    # --- large scale: countries and towns -------------------------------------------------
    def country(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Style index of the country at each point (warped Voronoi of jittered seeds)."""
        spacing = self.cfg.country_km * 1000.0
        wx = x + (fractal_noise(self.seed, 21, x, y, spacing * 0.7) - 0.5) * spacing * 0.6
        wy = y + (fractal_noise(self.seed, 22, x, y, spacing * 0.7) - 0.5) * spacing * 0.6
        ix, iy = np.floor(wx / spacing).astype(np.int64), np.floor(wy / spacing).astype(np.int64)
        best = np.full(x.shape, np.inf)
        style = np.zeros(x.shape, np.int64)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                cx, cy = ix + dx, iy + dy
                px = (cx + 0.15 + 0.7 * hash_unit(self.seed, 23, cx, cy)) * spacing
                py = (cy + 0.15 + 0.7 * hash_unit(self.seed, 24, cx, cy)) * spacing
                dist = (wx - px) ** 2 + (wy - py) ** 2
                closer = dist < best
                best = np.where(closer, dist, best)
                code = hash_ints(self.seed, 25, cx, cy) % np.uint64(len(S.STYLE_NAMES))
                style = np.where(closer, code.astype(np.int64), style)
        return style

    def towns(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """The most influential town at each point: influence ``u`` and its street grid."""
        cfg, spacing = self.cfg, self.cfg.town_spacing_km * 1000.0
        ix, iy = np.floor(x / spacing).astype(np.int64), np.floor(y / spacing).astype(np.int64)
        best = np.zeros(x.shape, np.float32)
        out = {k: np.zeros(x.shape) for k in ("cx", "cy")}
        out["radius"] = np.ones(x.shape)  # no town: any positive radius (influence is 0)
        out["key"] = np.zeros(x.shape, np.uint64)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                tx, ty = ix + dx, iy + dy
                exists = hash_unit(self.seed, 31, tx, ty) < cfg.town_probability
                cx = (tx + 0.2 + 0.6 * hash_unit(self.seed, 32, tx, ty)) * spacing
                cy = (ty + 0.2 + 0.6 * hash_unit(self.seed, 33, tx, ty)) * spacing
                lo, hi = cfg.town_radius_m
                radius = lo + (hi - lo) * hash_unit(self.seed, 34, tx, ty) ** 2
                dist = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
                infl = np.where(exists, np.clip(1.0 - dist / radius, 0.0, 1.0), 0.0)
                better = infl > best
                best = np.where(better, infl, best).astype(np.float32)
                for name, value in (("cx", cx), ("cy", cy), ("radius", radius)):
                    out[name] = np.where(better, value, out[name])
                out["key"] = np.where(better, hash_ints(self.seed, 35, tx, ty), out["key"])
        out["u"] = best
        key = out["key"]
        out["angle"] = hash_unit(self.seed, 36, key) * (np.pi / 2)
        out["bu"] = 70.0 + 60.0 * hash_unit(self.seed, 37, key)
        out["bv"] = 70.0 + 60.0 * hash_unit(self.seed, 38, key)
        out["road_w"] = 6.5 + 4.0 * hash_unit(self.seed, 39, key)
        return out

    def rural_warp(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Smooth displacement of the rural road and field grid (metres)."""
        amp = 0.12 * self.cfg.rural_road_spacing_m
        return (
            (fractal_noise(self.seed, 41, x, y, 900.0, 2) - 0.5) * amp,
            (fractal_noise(self.seed, 42, x, y, 900.0, 2) - 0.5) * amp,
        )

    def node_fields(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """The large-scale fields, evaluated exactly (used at the coarse lattice nodes)."""
        fields = {f"town_{k}": v for k, v in self.towns(x, y).items()}
        fields["style"] = self.country(x, y)
        fields["water"] = fractal_noise(self.seed, 52, x, y, 2200.0, 3)
        fields["forest"] = fractal_noise(self.seed, 51, x, y, 1400.0, 3)
        fields["warp_r"], fields["warp_t"] = self.rural_warp(x, y)
        return fields

    def coarse(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """Large-scale fields at points: bilinear between ``COARSE_M`` lattice nodes for the
        continuous ones, nearest node for the discrete ones (country, town and its grid).

        This *is* the definition of these fields, so every renderer sees the same world.
        Node values are computed once per tile of ``TILE_NODES`` nodes and cached.
        """
        gx, gy = x / COARSE_M, y / COARSE_M
        ix, iy = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
        fx, fy = (gx - ix).astype(np.float32), (gy - iy).astype(np.float32)
        tx, ty = ix // TILE_NODES, iy // TILE_NODES
        tx0, ty0 = int(tx.min()), int(ty.min())
        span_y = int(ty.max()) - ty0 + 1
        code = (tx - tx0) * span_y + (ty - ty0)
        present = np.zeros((int(tx.max()) - tx0 + 1) * span_y, bool)
        present[code] = True
        used = np.flatnonzero(present)
        slot = (np.cumsum(present) - 1)[code]
        stacked = [self._tile(tx0 + int(c) // span_y, ty0 + int(c) % span_y) for c in used]
        side = TILE_NODES + 1
        base = slot * side * side + (ix - tx * TILE_NODES) * side + (iy - ty * TILE_NODES)
        near = base + (fx >= 0.5) * side + (fy >= 0.5)
        out = {}
        for name in stacked[0]:
            values = (
                stacked[0][name]
                if len(stacked) == 1
                else np.concatenate([t[name] for t in stacked])
            )
            if name in _CONTINUOUS:
                v00, v01, v10, v11 = (values[base + off] for off in (0, 1, side, side + 1))
                top = v00 + (v10 - v00) * fx
                out[name] = top + ((v01 + (v11 - v01) * fx) - top) * fy
            else:
                out[name] = values[near]
        return out

    def _tile(self, tx: int, ty: int) -> dict[str, np.ndarray]:
        """Node fields of one tile (``TILE_NODES + 1`` nodes a side, sharing its far edges)."""
        key = (tx, ty)
        cached = self._tiles.get(key)
        if cached is not None:
            self._tiles.move_to_end(key)
            return cached
        side = np.arange(TILE_NODES + 1)
        nx, ny = np.meshgrid(tx * TILE_NODES + side, ty * TILE_NODES + side, indexing="ij")
        fields = self.node_fields(nx.ravel() * COARSE_M, ny.ravel() * COARSE_M)
        fields = {k: (v.astype(np.float32) if v.dtype == np.float64 and k in _CONTINUOUS else v)
                  for k, v in fields.items()}  # fmt: skip
        self._tiles[key] = fields
        if len(self._tiles) > self.max_tiles:
            self._tiles.popitem(last=False)
        return fields

    # --- geometry ---------------------------------------------------------------------------
    def layout(self, x: np.ndarray, y: np.ndarray) -> Layout:
        """World geometry at points ``x, y`` (1-D float64 arrays of world metres)."""
        from geocells.synth.layout import build_layout

        return build_layout(self, np.asarray(x, np.float64), np.asarray(y, np.float64))
