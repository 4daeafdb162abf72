"""Every S2 cell of one level that intersects a region, streamed as sorted uint64 chunks.

What "intersects" means, precisely: a cell is kept when the quadrilateral of its four S2
vertices, with straight edges in (lon, lat), shares a point with the region polygon
(straight lon/lat edges, even-odd rule). At level 16 the quadrilateral differs from the
true (geodesic) cell by micrometres. Levels below 4 use s2geometry's covering directly.

How: s2geometry's RegionCoverer covers each outer ring (densified, so its geodesic edges
stay within ~1 m of the straight lon/lat ones) at a coarse level; that covering is grown
by two rings of edge neighbours, then refined level by level. A cell whose bounding disk
(1.5x the centre-to-corner radius, in a local lon*cos(lat), lat frame) meets no polygon
edge lies wholly inside or outside, decided by its centre; inside cells become one id
range at the target level. Cells near edges are split; at the target level they are kept
if the centre is inside, a polygon vertex lies in the quad, or an edge crosses it.
Centre inside/outside is inherited from the parent by counting edge crossings on the
parent-centre -> child-centre segment, so work grows with the boundary, not the area.
With ``land_only``, runs are judged whole against the land mask where it is uniform
around them and split where it is not. See docs/regions.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from geocells.geo.cells import (
    _cell_bounds_st,
    _face_uv_to_xyz,
    _lsb_for_level,
    _st_to_uv,
    _xyz_to_latlng,
    cell_children,
    cell_neighbors,
    cell_to_latlng,
    cell_vertices,
    check_level,
)
from geocells.geo.land import LandMask
from geocells.geo.region import Region

log = logging.getLogger(__name__)

COARSE_LEVEL = 8
_DIRECT_BELOW = 4
_DENSIFY_DEG = 0.05
_NEAR = 1.5


def _densify(ring: np.ndarray) -> np.ndarray:
    """Insert vertices so no edge is longer than _DENSIFY_DEG (lon/lat degrees)."""
    ends = np.roll(ring, -1, axis=0)
    steps = np.maximum(1, np.ceil(np.abs(ends - ring).max(axis=1) / _DENSIFY_DEG)).astype(int)
    parts = [a + (b - a) * (np.arange(n)[:, None] / n) for a, b, n in zip(ring, ends, steps)]
    return np.concatenate(parts)


def _s2_covering(region: Region, level: int) -> np.ndarray:
    """s2geometry's covering at ``level`` of the region's outer rings (holes ignored)."""
    import s2geometry as s2

    coverer = s2.S2RegionCoverer()
    coverer.set_min_level(level)
    coverer.set_max_level(level)
    coverer.set_max_cells(1 << 30)
    cells = []
    for index, rings in enumerate(region.polygons):
        ring = _densify(rings[0])
        loop = s2.S2Loop([s2.S2LatLng.FromDegrees(lat, lon).ToPoint() for lon, lat in ring])
        if not loop.IsValid():
            raise ValueError(
                f"region {region.name!r}: outer ring of polygon {index} is not a "
                "simple loop (self-intersecting or repeated vertices)"
            )
        loop.Normalize()
        cells.extend(cell.id() for cell in coverer.GetCovering(loop))
    return np.unique(np.array(cells, np.uint64))


def _frame(lon, lat, lon0, lat0, scale):
    """Local frame around (lon0, lat0): ((lon - lon0) * cos(lat0), lat - lat0) in degrees."""
    dlon = lon - lon0
    return (dlon - 360.0 * np.round(dlon / 360.0)) * scale, lat - lat0


def _segment_distance(ax, ay, bx, by):
    """Distance from the origin to segments a-b."""
    dx, dy = bx - ax, by - ay
    length2 = np.maximum(dx * dx + dy * dy, 1e-300)
    t = np.clip(-(ax * dx + ay * dy) / length2, 0.0, 1.0)
    return np.hypot(ax + t * dx, ay + t * dy)


def _orient(ax, ay, bx, by, cx, cy):
    return (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)


def _crosses(p, q, a, b) -> np.ndarray:
    """Whether segments p-q and a-b cross properly (points are (x, y) tuples of arrays)."""
    d1, d2 = _orient(*a, *b, *p), _orient(*a, *b, *q)
    d3, d4 = _orient(*p, *q, *a), _orient(*p, *q, *b)
    return (d1 * d2 < 0) & (d3 * d4 < 0)


class _Cells:
    """Cells of one level with centres, local frames and bounding-disk radii."""

    def __init__(self, cells: np.ndarray):
        self.ids = cells
        face, s0, t0, size = _cell_bounds_st(cells)
        centre = np.stack(_face_uv_to_xyz(face, _st_to_uv(s0 + size / 2), _st_to_uv(t0 + size / 2)))
        centre /= np.linalg.norm(centre, axis=0)
        self.lat, self.lon = _xyz_to_latlng(*centre)
        self.scale = np.cos(np.radians(self.lat))
        chord = np.zeros(cells.size)
        for ds, dt in ((0, 0), (1, 0), (1, 1), (0, 1)):
            corner = np.stack(
                _face_uv_to_xyz(face, _st_to_uv(s0 + ds * size), _st_to_uv(t0 + dt * size))
            )
            corner /= np.linalg.norm(corner, axis=0)
            chord = np.maximum(chord, np.linalg.norm(corner - centre, axis=0))
        # Chord (radians) < arc; the frame is near-isometric for small cells, and _NEAR
        # leaves ample room for the rest.
        self.radius = np.degrees(chord) * 1.01

    def edge_in_frame(self, cell, edges):
        """Edge endpoints a, b in the frames of ``cell`` (pairs)."""
        args = (self.lon[cell], self.lat[cell], self.scale[cell])
        return _frame(edges[:, 0], edges[:, 1], *args), _frame(edges[:, 2], edges[:, 3], *args)


def _near_pairs(level_cells: _Cells, pair_cell, pair_edge, edges):
    """Keep (cell, edge) pairs whose edge passes within _NEAR radii of the cell centre."""
    (ax, ay), (bx, by) = level_cells.edge_in_frame(pair_cell, edges[pair_edge])
    keep = _segment_distance(ax, ay, bx, by) <= _NEAR * level_cells.radius[pair_cell]
    return pair_cell[keep], pair_edge[keep]


def _quad_hits(level_cells: _Cells, pair_cell, pair_edge, edges) -> np.ndarray:
    """Whether each pair's edge touches its cell's quadrilateral (vertex inside or crossing)."""
    (ax, ay), (bx, by) = level_cells.edge_in_frame(pair_cell, edges[pair_edge])
    cells, index = np.unique(pair_cell, return_inverse=True)
    corners = cell_vertices(level_cells.ids[cells])[index]
    qx, qy = _frame(
        corners[..., 1],
        corners[..., 0],
        level_cells.lon[pair_cell, None],
        level_cells.lat[pair_cell, None],
        level_cells.scale[pair_cell, None],
    )
    hit = np.zeros(pair_cell.size, bool)
    for px, py in ((ax, ay), (bx, by)):
        sides = np.stack(
            [
                _orient(qx[:, k], qy[:, k], qx[:, (k + 1) % 4], qy[:, (k + 1) % 4], px, py)
                for k in range(4)
            ]
        )
        hit |= (sides >= 0).all(axis=0) | (sides <= 0).all(axis=0)
    for k in range(4):
        corner, following = (qx[:, k], qy[:, k]), (qx[:, (k + 1) % 4], qy[:, (k + 1) % 4])
        hit |= _crosses(corner, following, (ax, ay), (bx, by))
    return hit


def _child_inside(parent: _Cells, children: _Cells, boundary, pair_cell, pair_edge, edges):
    """Whether an odd number of edges cross each parent-centre -> child-centre segment."""
    rank = np.cumsum(boundary) - 1
    (ax, ay), (bx, by) = parent.edge_in_frame(pair_cell, edges[pair_edge])
    origin = (np.zeros_like(ax), np.zeros_like(ay))
    args = (parent.lon[pair_cell], parent.lat[pair_cell], parent.scale[pair_cell])
    flips = np.zeros(children.ids.size, np.int64)
    for k in range(4):
        child = 4 * rank[pair_cell] + k
        centre = _frame(children.lon[child], children.lat[child], *args)
        crossing = _crosses(origin, centre, (ax, ay), (bx, by))
        flips += np.bincount(child[crossing], minlength=children.ids.size)
    return flips % 2 == 1


def _cell_ranges(region: Region, level: int) -> tuple[np.ndarray, np.ndarray]:
    """(first ids, counts) of disjoint runs of target-level cells, sorted by id."""
    if level < _DIRECT_BELOW:
        cells = _s2_covering(region, level)
        return cells, np.ones(cells.size, np.int64)
    coarse = min(level, COARSE_LEVEL)
    cells = _s2_covering(region, coarse)
    for _ in range(2):
        cells = np.unique(np.concatenate([cells, cell_neighbors(cells).ravel()]))
    edges = region.edges
    current = _Cells(cells)
    inside = region.contains(current.lat, current.lon)
    pair_cell = np.repeat(np.arange(cells.size), len(edges))
    pair_edge = np.tile(np.arange(len(edges)), cells.size)
    starts, counts = [], []
    target_lsb = _lsb_for_level(level)
    for current_level in range(coarse, level + 1):
        pair_cell, pair_edge = _near_pairs(current, pair_cell, pair_edge, edges)
        boundary = np.bincount(pair_cell, minlength=current.ids.size) > 0
        if current_level == level:
            keep = inside.copy()
            keep[pair_cell[_quad_hits(current, pair_cell, pair_edge, edges)]] = True
            starts.append(current.ids[keep])
            counts.append(np.ones(int(keep.sum()), np.int64))
            break
        interior = current.ids[inside & ~boundary]
        starts.append(interior - _lsb_for_level(current_level) + target_lsb)
        counts.append(np.full(interior.size, 4 ** (level - current_level), np.int64))
        children = _Cells(cell_children(current.ids[boundary], current_level + 1).ravel())
        child_inside = np.repeat(inside[boundary], 4)
        child_inside ^= _child_inside(current, children, boundary, pair_cell, pair_edge, edges)
        rank = np.cumsum(boundary) - 1
        pair_cell = (4 * rank[pair_cell])[:, None] + np.arange(4)
        pair_edge = np.repeat(pair_edge, 4)
        pair_cell = pair_cell.ravel()
        current, inside = children, child_inside
        log.debug("level %d: %d boundary cells", current_level, int(boundary.sum()))
    starts, counts = np.concatenate(starts), np.concatenate(counts)
    order = np.argsort(starts)
    return starts[order], counts[order]


def _land_ranges(starts, counts, level: int, land: LandMask):
    """Restrict runs to cells whose centre is land, splitting runs that touch the coast."""
    depth = (np.log2(counts) / 2).round().astype(np.int64)  # counts are 4**depth
    target_lsb = _lsb_for_level(level)
    blocks = starts - target_lsb + _lsb_for_level(level - depth)
    out_starts, out_counts = [], []
    while blocks.size:
        block_level = level - depth
        corners = cell_vertices(blocks)
        lat, lon = corners[..., 0], corners[..., 1]
        all_land, all_sea = land.classify_boxes(lat.min(1), lon.min(1), lat.max(1), lon.max(1))
        keep = all_land.copy()
        at_target = ~all_land & ~all_sea & (block_level == level)
        keep[at_target] = land.is_land(*cell_to_latlng(blocks[at_target]))
        lsb = _lsb_for_level(block_level[keep])
        out_starts.append(blocks[keep] - lsb + target_lsb)
        out_counts.append(4 ** depth[keep])
        split = ~all_land & ~all_sea & (block_level < level)
        parents, parent_lsb = blocks[split], _lsb_for_level(block_level[split])
        quarter = parent_lsb >> np.uint64(2)
        # The four children of a cell are id + (2k - 3) * lsb / 4 for k = 0..3.
        blocks = np.concatenate(
            [
                parents - np.uint64(3) * quarter,
                parents - quarter,
                parents + quarter,
                parents + np.uint64(3) * quarter,
            ]
        )
        depth = np.tile(depth[split] - 1, 4)
    starts, counts = np.concatenate(out_starts), np.concatenate(out_counts)
    order = np.argsort(starts)
    return starts[order], counts[order]


def _polygon_groups(region: Region) -> list[Region]:
    """The region's polygons grouped by the 1-degree square of their bounding-box centre.

    Refinement pairs every candidate cell with every edge, so a MultiPolygon of thousands
    of small parts (a region fitted to scattered photos) is covered group by group: each
    group's cells meet only its own edges. The union of the groups' cells is the region's
    (valid MultiPolygons do not overlap, so union and even-odd agree).
    """
    if len(region.polygons) <= 1:
        return [region]
    groups: dict[tuple[int, int], list] = {}
    for polygon in region.polygons:
        outer = polygon[0]
        lon = (outer[:, 0].min() + outer[:, 0].max()) / 2
        lat = (outer[:, 1].min() + outer[:, 1].max()) / 2
        groups.setdefault((int(np.floor(lat)), int(np.floor(lon))), []).append(polygon)
    if len(groups) == 1:
        return [region]
    return [Region(polygons, name=region.name) for _, polygons in sorted(groups.items())]


def _merge_ranges(parts: list[tuple[np.ndarray, np.ndarray]], level: int):
    """Union of runs of target-level cells (runs of different parts may overlap)."""
    starts = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts]).astype(np.uint64)
    if not starts.size:
        return starts, counts.astype(np.int64)
    step = _lsb_for_level(level) << np.uint64(1)
    order = np.argsort(starts, kind="stable")
    begin, end = starts[order], starts[order] + counts[order] * step
    reach = np.maximum.accumulate(end)
    # a new run starts where it begins beyond everything before it
    new = np.r_[True, begin[1:] > reach[:-1]]
    group = np.cumsum(new) - 1
    merged_begin = begin[new]
    merged_end = np.zeros(merged_begin.size, np.uint64)
    np.maximum.at(merged_end, group, end)
    return merged_begin, ((merged_end - merged_begin) // step).astype(np.int64)


def _ranges(region: Region, level: int, land_only: bool):
    parts = []
    for part in _polygon_groups(region):
        starts, counts = _cell_ranges(part, level)
        if land_only:
            starts, counts = _land_ranges(starts, counts, level, LandMask(part.bounds))
        parts.append((starts, counts))
    if len(parts) == 1:
        return parts[0]
    return _merge_ranges(parts, level)


def cover_region(
    region: Region, level: int, chunk_size: int = 1 << 20, land_only: bool = False
) -> Iterator[np.ndarray]:
    """Yield sorted uint64 chunks (<= chunk_size) of all ``level`` cells meeting ``region``.

    With ``land_only`` a cell is kept only if its centre is land in the 1 km GLOBE mask.
    """
    level = check_level(level)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    starts, counts = _ranges(region, level, land_only)
    step = _lsb_for_level(level) << np.uint64(1)
    ends = np.cumsum(counts)
    total = int(ends[-1]) if ends.size else 0
    for lo in range(0, total, chunk_size):
        hi = min(lo + chunk_size, total)
        first = int(np.searchsorted(ends, lo, side="right"))
        last = int(np.searchsorted(ends, hi - 1, side="right"))
        run_begin = ends[first : last + 1] - counts[first : last + 1]  # position of each run
        taken = np.minimum(ends[first : last + 1], hi) - np.maximum(run_begin, lo)
        run = np.repeat(np.arange(first, last + 1), taken)
        offset = np.arange(lo, hi) - (ends[run] - counts[run])
        yield starts[run] + offset.astype(np.uint64) * step


def count_cells(region: Region, level: int, land_only: bool = False) -> int:
    """Number of ``level`` cells meeting ``region`` (computed from id runs, not expanded)."""
    return int(_ranges(region, check_level(level), land_only)[1].sum())


def region_cells(region: Region, level: int, land_only: bool = False) -> np.ndarray:
    """All ``level`` cells meeting ``region``, sorted: uint64[N] (for small regions)."""
    chunks = list(cover_region(region, level, land_only=land_only))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.uint64)
