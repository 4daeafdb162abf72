"""Regions that fit the data: the union of small lon/lat squares around the points.

A dataset spread over several cities gets one polygon per city (or per cluster of
points), not one box spanning a continent. How:

1. The globe is cut into squares of ``step`` degrees (about ``pad_m / 2`` metres of
   latitude; 360 / step is an even integer so rows and columns tile the globe exactly).
2. Every square whose nearest point lies within ``pad_m`` of some point's square is kept,
   so the region reaches at least ``pad_m`` beyond every point (at most about
   ``pad_m + 1.5 step``). Squares are never joined across the antimeridian: a cluster on
   both sides of it becomes two polygons, one on each side.
3. Squares that touch only at a corner get one of the two empty squares filled, so every
   boundary ring is a simple loop (S2 and GIS tools reject rings that touch themselves).
4. The boundary edges between kept and empty squares are chained into rings (kept squares
   on the left: outer rings run counter-clockwise, holes clockwise), collinear vertices
   are dropped, and each hole is given to the smallest outer ring around it.

The region's area is known from the squares before any ring is traced, which is what the
memory guard (``estimate_cells``) needs: a worldwide point set is refused in seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from geocells.geo.region import MAX_ABS_LAT, Region, points_in_edges

EARTH_RADIUS_KM = 6371.0088
METRES_PER_DEGREE = math.pi * EARTH_RADIUS_KM * 1000.0 / 180.0
_CHUNK = 200_000  # points dilated at a time (bounds the offsets array)


class RegionTooLarge(ValueError):
    """The squares around the points already exceed the area allowed (``area_km2`` is a
    lower bound: covering stopped as soon as it was exceeded)."""

    def __init__(self, area_km2: float) -> None:
        super().__init__(f"the region fitted to the points is over {area_km2:,.0f} km²")
        self.area_km2 = area_km2


def _unique(keys: np.ndarray) -> np.ndarray:
    """Sorted unique int64 keys (sort-based: faster than hashing for these sizes)."""
    keys = np.sort(keys)
    return keys[np.r_[True, keys[1:] != keys[:-1]]] if keys.size else keys


def _member(sorted_keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Whether each query key is in ``sorted_keys``."""
    if not sorted_keys.size:
        return np.zeros(query.shape, bool)
    index = np.minimum(np.searchsorted(sorted_keys, query), sorted_keys.size - 1)
    return sorted_keys[index] == query


@dataclass
class SquareCover:
    """Kept squares: ``rows``, ``cols`` (int64) of a ``step``-degree global grid."""

    step: float
    rows: np.ndarray
    cols: np.ndarray

    @property
    def ncols(self) -> int:
        return round(360.0 / self.step)

    def keys(self) -> np.ndarray:
        return self.rows * self.ncols + self.cols

    def area_km2(self) -> float:
        """Area of the squares on the sphere (exact for lon/lat rectangles)."""
        south = np.radians(-90.0 + self.rows * self.step)
        north = south + math.radians(self.step)
        band = np.sin(north) - np.sin(south)
        return float(EARTH_RADIUS_KM**2 * math.radians(self.step) * band.sum())


def grid_step(pad_m: float) -> float:
    """Square size in degrees for a padding: about half the padding, tiling the globe."""
    if not (math.isfinite(pad_m) and pad_m > 0):
        raise ValueError(f"region padding must be a positive number of metres, got {pad_m}")
    columns = max(2 * round(360.0 * METRES_PER_DEGREE / (pad_m / 2.0) / 2.0), 2)
    return 360.0 / columns


def cover_points(
    lat: np.ndarray, lon: np.ndarray, pad_m: float, max_area_km2: float | None = None
) -> SquareCover:
    """The squares within ``pad_m`` of the points (rows beyond ±85° latitude dropped).

    With ``max_area_km2``, raises ``RegionTooLarge`` as soon as the squares found so far
    exceed it (a worldwide set of millions of points is refused without covering it all).
    """
    step = grid_step(pad_m)
    ncols, nrows = round(360.0 / step), round(180.0 / step)
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    rows = np.clip(np.floor((lat + 90.0) / step).astype(np.int64), 0, nrows - 1)
    cols = np.floor((lon + 180.0) / step).astype(np.int64) % ncols
    seeds = _unique(rows * ncols + cols)
    step_m = step * METRES_PER_DEGREE
    reach_rows = math.ceil(pad_m / step_m) + 1
    keys = np.zeros(0, np.int64)
    # seeds in a random order, so that an early stop has sampled the whole extent
    shuffled = seeds[np.random.default_rng(0).permutation(len(seeds))]
    for start in range(0, len(shuffled), _CHUNK):
        chunk = shuffled[start : start + _CHUNK]
        found = _dilate(chunk // ncols, chunk % ncols, step, pad_m, reach_rows, ncols)
        keys = _unique(np.concatenate([keys, found]))
        if max_area_km2 is not None:
            area = SquareCover(step, keys // ncols, keys % ncols).area_km2()
            if area > max_area_km2:
                raise RegionTooLarge(area)
    rows, cols = keys // ncols, keys % ncols
    inside = (-90.0 + rows * step >= -MAX_ABS_LAT) & (-90.0 + (rows + 1) * step <= MAX_ABS_LAT)
    return SquareCover(step, rows[inside], cols[inside])


def _dilate(rows, cols, step, pad_m, reach_rows, ncols) -> np.ndarray:
    """Keys of the squares whose nearest distance to a seed square is at most ``pad_m``."""
    step_m = step * METRES_PER_DEGREE
    centre_lat = np.radians(-90.0 + (rows + 0.5) * step)
    # The narrowest latitude of the seed's band sets how far east-west the padding reaches.
    cos_lat = np.maximum(np.cos(np.abs(centre_lat) + math.radians(step)), 0.05)
    reach_cols = np.minimum(np.ceil(pad_m / (step_m * cos_lat)) + 1, ncols // 2).astype(np.int64)
    widest = int(reach_cols.max()) if len(reach_cols) else 0
    keys = []
    for d_row in range(-reach_rows, reach_rows + 1):
        gap_north = max(abs(d_row) - 1, 0) * step_m
        if gap_north > pad_m:
            continue
        d_col = np.arange(-widest, widest + 1)
        gap_east = np.maximum(np.abs(d_col)[None, :] - 1, 0) * step_m * cos_lat[:, None]
        near = np.hypot(gap_north, gap_east) <= pad_m
        near &= np.abs(d_col)[None, :] <= reach_cols[:, None]
        seed, offset = np.nonzero(near)
        new_rows = rows[seed] + d_row
        new_cols = cols[seed] + d_col[offset]
        # No wrap across the antimeridian: columns outside [0, ncols) fold to the other
        # side as squares of their own (they are never joined to their old neighbours).
        new_cols %= ncols
        keys.append(new_rows * ncols + new_cols)
    return np.concatenate(keys) if keys else np.zeros(0, np.int64)


def mean_cell_area_km2(level: int) -> float:
    """Average area of an S2 cell at ``level`` (6 faces, 4**level cells each)."""
    return 4.0 * math.pi * EARTH_RADIUS_KM**2 / (6.0 * 4.0**level)


def estimate_cells(area_km2: float, level: int, perimeter_km: float = 0.0) -> int:
    """Cells of ``level`` meeting a region of that area and boundary length: the interior
    by mean cell area (S2 cell areas vary by < 2x, the mean is close over many cells) plus
    one cell per cell width of boundary (cells the boundary cuts)."""
    cell_area = mean_cell_area_km2(level)
    return math.ceil(area_km2 / cell_area + perimeter_km / math.sqrt(cell_area))


def perimeter_km(region: Region) -> float:
    """Boundary length of a region (equirectangular per edge; for the cell estimate)."""
    edges = region.edges
    mid = np.radians((edges[:, 1] + edges[:, 3]) / 2)
    d_lon = (edges[:, 2] - edges[:, 0]) * np.cos(mid)
    return float(np.hypot(d_lon, edges[:, 3] - edges[:, 1]).sum() * METRES_PER_DEGREE / 1000)


def _fill_pinches(cover: SquareCover) -> SquareCover:
    """Fill an empty square wherever two kept squares touch only at a corner."""
    ncols = cover.ncols
    keys = _unique(cover.keys())
    while True:
        rows, cols = keys // ncols, keys % ncols

        def present(r, c, keys=keys):
            ok = (c >= 0) & (c < ncols)
            return ok & _member(keys, r * ncols + np.clip(c, 0, ncols - 1))

        east, north = present(rows, cols + 1), present(rows + 1, cols)
        west = present(rows, cols - 1)
        diagonal = present(rows + 1, cols + 1) & ~east & ~north & (cols + 1 < ncols)
        anti = present(rows + 1, cols - 1) & ~west & ~north & (cols >= 1)
        added = np.concatenate([keys[diagonal] + 1, keys[anti] - 1])
        if not len(added):
            return SquareCover(cover.step, rows, cols)
        keys = _unique(np.concatenate([keys, added]))


def _boundary_edges(cover: SquareCover) -> tuple[np.ndarray, np.ndarray]:
    """Directed boundary edges (kept square on the left) as vertex pairs ``[E, 2]`` (x, y)."""
    ncols = cover.ncols
    keys = _unique(cover.keys())
    rows, cols = keys // ncols, keys % ncols

    def empty(r, c):
        outside = (c < 0) | (c >= ncols)
        return outside | ~_member(keys, r * ncols + np.clip(c, 0, ncols - 1))

    starts, ends = [], []
    sides = (  # neighbour offset, start corner, end corner (corner offsets in x=col, y=row)
        ((-1, 0), (0, 0), (1, 0)),  # south side, heading east
        ((0, 1), (1, 0), (1, 1)),  # east side, heading north
        ((1, 0), (1, 1), (0, 1)),  # north side, heading west
        ((0, -1), (0, 1), (0, 0)),  # west side, heading south
    )
    for (d_row, d_col), (sx, sy), (ex, ey) in sides:
        mask = empty(rows + d_row, cols + d_col)
        starts.append(np.stack([cols[mask] + sx, rows[mask] + sy], axis=1))
        ends.append(np.stack([cols[mask] + ex, rows[mask] + ey], axis=1))
    return np.concatenate(starts), np.concatenate(ends)


def _chain_rings(starts: np.ndarray, ends: np.ndarray, ncols: int) -> list[np.ndarray]:
    """Chain edges into closed rings of grid vertices, collinear vertices dropped.

    Without pinches every vertex starts exactly one edge, so "the edge after" is a lookup
    of the end vertex among the start vertices.
    """
    width = ncols + 1
    start_keys = starts[:, 1] * width + starts[:, 0]
    end_keys = ends[:, 1] * width + ends[:, 0]
    by_start = np.argsort(start_keys)
    following = by_start[np.searchsorted(start_keys[by_start], end_keys)].tolist()
    used = bytearray(len(starts))
    ordered: list[int] = []
    bounds = [0]
    for first in range(len(starts)):
        if used[first]:
            continue
        edge = first
        while not used[edge]:
            used[edge] = 1
            ordered.append(edge)
            edge = following[edge]
        bounds.append(len(ordered))
    order = np.array(ordered, dtype=np.int64)
    direction = (ends - starts)[order]
    ring_start = np.repeat(np.array(bounds[:-1]), np.diff(bounds))
    ring_end = np.repeat(np.array(bounds[1:]), np.diff(bounds))
    position = np.arange(len(order))
    previous = np.where(position == ring_start, ring_end - 1, position - 1)
    turning = np.any(direction != direction[previous], axis=1)
    vertices = starts[order].astype(np.float64)
    kept_per_ring = np.add.reduceat(turning, bounds[:-1]) if len(order) else []
    return np.split(vertices[turning], np.cumsum(kept_per_ring)[:-1])


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _assemble(rings: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Polygons (outer ring first, then its holes) from oriented rings in grid units."""
    areas = [_signed_area(r) for r in rings]
    outers = [i for i, a in enumerate(areas) if a > 0]
    polygons = {i: [rings[i]] for i in outers}
    edges = {i: np.concatenate([rings[i], np.roll(rings[i], -1, axis=0)], axis=1) for i in outers}
    for hole in (i for i, a in enumerate(areas) if a < 0):
        a, b = rings[hole][0], rings[hole][1]
        direction = np.sign(b - a)
        # The kept square left of the hole's first edge lies inside the hole's owner.
        probe = (a + b) / 2 + 0.5 * np.array([-direction[1], direction[0]])
        owners = [
            i
            for i in outers
            if points_in_edges(np.array([probe[0]]), np.array([probe[1]]), edges[i])[0]
        ]
        if owners:
            polygons[min(owners, key=lambda i: areas[i])].append(rings[hole])
    return list(polygons.values())


def region_from_cover(cover: SquareCover, name: str) -> Region:
    """The (Multi)Polygon region of a square cover (lon/lat degrees)."""
    if not len(cover.rows):
        raise ValueError("no points inside ±85° latitude to derive a region from")
    cover = _fill_pinches(cover)
    starts, ends = _boundary_edges(cover)
    rings = _chain_rings(starts, ends, cover.ncols)
    polygons = [
        [np.stack([-180.0 + r[:, 0] * cover.step, -90.0 + r[:, 1] * cover.step], 1) for r in p]
        for p in _assemble(rings)
    ]
    return Region(polygons, name=name)
