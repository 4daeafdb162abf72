"""geocells.geo coverings: exactness, agreement with s2geometry, streaming, land mask."""

from __future__ import annotations

import numpy as np
import pytest
import s2geometry as s2

from geocells.geo import (
    LandMask,
    Region,
    cell_children,
    cell_level,
    cell_neighbors,
    cell_parent,
    cell_to_latlng,
    count_cells,
    cover_region,
    latlng_to_cell,
    region_cells,
)
from geocells.geo import cover as cover_module

_POLYGON = [[5, 50], [6.3, 50.1], [6.6, 51], [6.0, 50.6], [5.2, 51.2], [5, 50]]
_HOLE = [[5.5, 50.3], [5.8, 50.3], [5.6, 50.6], [5.5, 50.3]]


@pytest.fixture(scope="module")
def region() -> Region:
    """A concave polygon with a hole, ~8 000 km²."""
    return Region.from_geojson({"type": "Polygon", "coordinates": [_POLYGON, _HOLE]})


def _brute_force(region: Region, level: int) -> np.ndarray:
    """Every candidate cell tested against every edge, no hierarchy."""
    coarse = cover_module._s2_covering(region, min(level, cover_module.COARSE_LEVEL))
    for _ in range(2):
        coarse = np.unique(np.concatenate([coarse, cell_neighbors(coarse).ravel()]))
    level_cells = cell_children(coarse, level).ravel() if level > 8 else coarse
    cells = cover_module._Cells(level_cells)
    edges = region.edges
    pair_cell = np.repeat(np.arange(level_cells.size), len(edges))
    pair_edge = np.tile(np.arange(len(edges)), level_cells.size)
    keep = region.contains(cells.lat, cells.lon)
    keep[pair_cell[cover_module._quad_hits(cells, pair_cell, pair_edge, edges)]] = True
    return np.sort(level_cells[keep])


@pytest.mark.parametrize("level", [4, 7, 9, 12])
def test_hierarchical_covering_equals_brute_force(region, level):
    assert np.array_equal(region_cells(region, level), _brute_force(region, level))


def test_covering_is_exactly_cells_inside_or_on_the_boundary(region):
    """Independent check: cells holding an inside point or a point of a densified edge."""
    level = 11
    cells = region_cells(region, level)
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(49.9, 51.3, 200_000), rng.uniform(4.9, 6.7, 200_000)
    inside = region.contains(lat, lon)
    holding_inside = latlng_to_cell(lat[inside], lon[inside], level)
    fractions = np.linspace(0, 1, 20_000, endpoint=False)  # ~5 m steps along each edge
    edge_points = np.concatenate(
        [region.edges[:, :2] + (region.edges[:, 2:] - region.edges[:, :2]) * f for f in fractions]
    )
    on_boundary = latlng_to_cell(edge_points[:, 1], edge_points[:, 0], level)
    centre_inside = cells[region.contains(*cell_to_latlng(cells))]
    assert np.isin(holding_inside, cells).all()
    assert np.isin(on_boundary, cells).all()
    assert np.array_equal(np.union1d(centre_inside, on_boundary), cells)


def test_agrees_with_s2geometry_region_coverer(region):
    """Against s2's own cell-level covering of the (densified, geodesic) outer ring."""
    level = 12
    ours = region_cells(Region.from_geojson({"type": "Polygon", "coordinates": [_POLYGON]}), level)
    coverer = s2.S2RegionCoverer()
    coverer.set_min_level(level)
    coverer.set_max_level(level)
    coverer.set_max_cells(1 << 30)
    ring = cover_module._densify(np.array(_POLYGON[:-1], float))
    loop = s2.S2Loop([s2.S2LatLng.FromDegrees(lat, lon).ToPoint() for lon, lat in ring])
    loop.Normalize()
    theirs = np.array([c.id() for c in coverer.GetCovering(loop)], np.uint64)
    differ = np.setxor1d(ours, theirs)
    assert differ.size <= 0.002 * ours.size, (differ.size, ours.size)


def test_streaming_chunks_are_sorted_bounded_and_complete(region):
    level = 13
    full = region_cells(region, level)
    chunks = list(cover_region(region, level, chunk_size=4096))
    assert all(0 < chunk.size <= 4096 for chunk in chunks)
    joined = np.concatenate(chunks)
    assert joined.dtype == np.uint64
    assert np.array_equal(joined, full)
    assert (np.diff(joined) > 0).all()
    assert (cell_level(joined) == level).all()
    assert count_cells(region, level) == full.size
    # Coarser cells' descendants: the level-13 set is a subset of the level-12 set's children.
    parents = region_cells(region, 12)
    assert np.isin(cell_parent(full, 12), parents).all()


def test_small_levels_use_s2geometry_directly(region):
    cells = region_cells(region, 2)
    assert (cell_level(cells) == 2).all()
    assert cells.size >= 1
    assert region.contains(*cell_to_latlng(cells)).sum() <= cells.size


def test_land_only_drops_sea_cells():
    coast = Region.from_bbox(52.0, 3.8, 52.6, 5.0)  # North Sea off Holland plus the land
    everything = region_cells(coast, 13)
    land = region_cells(coast, 13, land_only=True)
    assert 0.3 * everything.size < land.size < 0.9 * everything.size
    # Runs are judged whole where the mask is uniform; the result must equal the per-cell test.
    centre_on_land = LandMask(coast.bounds).is_land(*cell_to_latlng(everything))
    assert np.array_equal(land, everything[centre_on_land])
    _, lon = cell_to_latlng(np.setdiff1d(everything, land))
    assert np.median(lon) < 4.6  # dropped cells lie to the west, at sea
    assert count_cells(coast, 13, land_only=True) == land.size
    chunks = list(cover_region(coast, 13, chunk_size=1000, land_only=True))
    assert np.array_equal(np.concatenate(chunks), land)


def test_land_mask_known_points():
    mask = LandMask((50.0, 2.0, 54.0, 8.0))
    # Utrecht, Cologne, North Sea, IJsselmeer (water in GLOBE, unlike most small lakes).
    lat = np.array([52.09, 50.94, 53.5, 52.8])
    lon = np.array([5.12, 6.96, 3.0, 5.3])
    assert mask.is_land(lat, lon).tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="outside the land-mask crop"):
        mask.is_land(np.array([40.0]), np.array([5.0]))


def test_bad_cover_input(region):
    with pytest.raises(ValueError, match=r"level must be in 0\.\.30, got 31"):
        count_cells(region, 31)
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        next(cover_region(region, 10, chunk_size=0))
    bow_tie = Region.from_geojson(
        {"type": "Polygon", "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 1], [0, 0]]]}
    )
    with pytest.raises(ValueError, match="not a simple loop"):
        count_cells(bow_tie, 10)


def test_many_small_polygons_are_covered_part_by_part_exactly():
    """A MultiPolygon of scattered parts (a region fitted to photos) covers group by group;
    the result is the union of the parts' own coverings, overlaps at part edges merged."""
    from geocells.geo import Region, count_cells, region_cells

    rng = np.random.default_rng(5)
    polygons = []
    for lat, lon in zip(rng.uniform(45, 48, 60), rng.uniform(0, 4, 60)):
        size = rng.uniform(0.01, 0.05)
        ring = np.array(
            [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size]]
        )
        polygons.append([ring])
    region = Region(polygons, "scattered")
    cells = region_cells(region, 13)
    union = np.unique(np.concatenate([region_cells(Region([p]), 13) for p in polygons]))
    np.testing.assert_array_equal(cells, union)
    assert count_cells(region, 13) == len(union)
