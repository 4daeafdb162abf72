"""Regions fitted to points: padding reached, simple rings, holes, antimeridian, estimates."""

import numpy as np
import pytest

from geocells.data.regionfit import (
    SquareCover,
    cover_points,
    estimate_cells,
    grid_step,
    perimeter_km,
    region_from_cover,
)
from geocells.geo import Region, count_cells, haversine_m


def _offset(lat, lon, distance_m, bearing):
    north, east = distance_m * np.cos(bearing), distance_m * np.sin(bearing)
    return lat + north / 111_195.0, lon + east / (111_195.0 * np.cos(np.radians(lat)))


def test_region_reaches_the_padding_and_not_much_further():
    rng = np.random.default_rng(3)
    centres = np.array([[41.88, -87.63], [40.71, -74.0], [60.17, 24.94]])
    points = np.concatenate([c + rng.normal(0, 0.01, (200, 2)) for c in centres])
    lat, lon = points[:, 0], points[:, 1]
    pad = 500.0
    cover = cover_points(lat, lon, pad)
    region = region_from_cover(cover, "fit")
    assert len(region.polygons) >= 3
    bearing = rng.uniform(0, 2 * np.pi, len(lat))
    near_lat, near_lon = _offset(lat, lon, 0.98 * pad, bearing)
    assert region.contains(near_lat, near_lon).all()
    # points far from every image are outside: the region hugs the data
    far_lat, far_lon = _offset(lat, lon, 3000.0, bearing)
    nearest = np.array(
        [haversine_m(np.full(len(lat), a), np.full(len(lat), b), lat, lon).min()
         for a, b in zip(far_lat, far_lon)]
    )  # fmt: skip
    step_m = grid_step(pad) * 111_195.0
    clear = nearest > pad + 2 * step_m
    assert clear.sum() > 100 and not region.contains(far_lat[clear], far_lon[clear]).any()
    # the area is the squares' area, and the cell estimate is close to the exact count
    assert region.area_km2() == pytest.approx(cover.area_km2(), rel=0.02)
    exact = count_cells(region, 16)
    assert estimate_cells(region.area_km2(), 16) < exact  # interior only
    estimate = estimate_cells(region.area_km2(), 16, perimeter_km(region))
    assert estimate == pytest.approx(exact, rel=0.25)


def test_corner_touching_squares_become_simple_loops():
    step = grid_step(500.0)
    row, col = round(100 / step), round(200 / step)  # near lat 10, lon 20
    # a checkerboard of five squares touching at corners
    rows = np.array([row, row + 1, row + 1, row + 2, row])
    cols = np.array([col, col + 1, col - 1, col, col + 2])
    region = region_from_cover(SquareCover(step, rows, cols), "pinch")
    assert count_cells(region, 16) > 0  # s2geometry accepts every loop
    centres_lat = -90 + (rows + 0.5) * step
    centres_lon = -180 + (cols + 0.5) * step
    assert region.contains(centres_lat, centres_lon).all()


def test_a_ring_of_points_keeps_its_hole():
    angle = np.linspace(0, 2 * np.pi, 500, endpoint=False)
    lat, lon = 10 + 0.05 * np.cos(angle), 20 + 0.05 * np.sin(angle)
    region = region_from_cover(cover_points(lat, lon, 500.0), "ring")
    assert [len(p) for p in region.polygons] == [2]  # one outer ring, one hole
    assert region.contains([10.0, 10.05], [20.0, 20.0]).tolist() == [False, True]
    outer, _ = region.polygons[0]
    assert region.area_km2() < Region([[outer]]).area_km2()


def test_multipolygons_may_straddle_the_antimeridian_single_polygons_may_not():
    east = np.array([[179.0, -17.0], [180.0, -17.0], [180.0, -16.0], [179.0, -16.0]])
    west = np.array([[-180.0, -17.0], [-179.0, -17.0], [-179.0, -16.0], [-180.0, -16.0]])
    region = Region([[east], [west]], "fiji")
    assert region.contains([-16.5, -16.5, -16.5], [179.5, -179.5, 0.0]).tolist() == [
        True,
        True,
        False,
    ]
    assert count_cells(region, 8) > 0
    wide = np.array([[-170.0, 0.0], [170.0, 0.0], [170.0, 1.0], [-170.0, 1.0]])
    with pytest.raises(ValueError, match="spans more than 180"):
        Region([[wide]], "wide")
    with pytest.raises(ValueError, match="positive"):
        grid_step(0.0)
