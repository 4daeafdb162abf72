"""geocells.geo cell maths, compared bit for bit with Google's s2geometry."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import s2geometry as s2

from geocells.geo import (
    cell_children,
    cell_level,
    cell_neighbors,
    cell_parent,
    cell_to_latlng,
    cell_to_token,
    cell_vertices,
    latlng_to_cell,
    token_to_cell,
)


def _hard_points(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform points on the sphere plus poles, antimeridian, cube-face edges and corners."""
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    lon = rng.uniform(-180, 180, n)
    k = n // 10
    jitter = rng.normal(0, 1e-9, k)
    lat[:k] = np.tile([90.0, -90.0, 89.9999999, -89.9999999, 0.0], k // 5 + 1)[:k]
    lon[k : 2 * k] = np.tile([180.0, -180.0, 179.9999999999, -179.9999999999], k // 4 + 1)[:k]
    # Face edges: |x| = |y| at lon = ±45°, ±135°, and |z| = |x| etc. along those meridians.
    lon[2 * k : 3 * k] = rng.choice([45.0, -45.0, 135.0, -135.0], k) + jitter
    theta = rng.uniform(-45, 45, k)  # |z| = |x| on faces 0/3: tan(lat) = cos(lon)
    lon[3 * k : 4 * k] = (theta + rng.choice([0.0, 180.0], k) + 180) % 360 - 180
    edge_lat = np.degrees(np.arctan(np.cos(np.radians(theta))))
    lat[3 * k : 4 * k] = edge_lat * rng.choice([-1.0, 1.0], k) + jitter
    corner_lat = np.degrees(np.arctan(1 / np.sqrt(2)))  # cube corners
    lat[4 * k : 5 * k] = corner_lat * rng.choice([-1.0, 1.0], k) + jitter
    lon[4 * k : 5 * k] = rng.choice([45.0, -45.0, 135.0, -135.0], k) + jitter
    return np.clip(lat, -90, 90), np.clip(lon, -180, 180)


def _s2_id(lat: float, lon: float, level: int) -> int:
    return s2.S2CellId(s2.S2LatLng.FromDegrees(lat, lon)).parent(level).id()


def test_latlng_to_cell_matches_s2geometry_on_200k_points_all_levels():
    rng = np.random.default_rng(0)
    lat, lon = _hard_points(rng, 200_000)
    levels = rng.integers(0, 31, lat.size)
    levels[:31] = np.arange(31)
    ours = np.empty(lat.size, np.uint64)
    for level in range(31):
        sel = levels == level
        ours[sel] = latlng_to_cell(lat[sel], lon[sel], level)
    ref = [_s2_id(a, b, c) for a, b, c in zip(lat.tolist(), lon.tolist(), levels.tolist())]
    mismatch = np.flatnonzero(ours != np.array(ref, np.uint64))
    assert mismatch.size == 0, (
        f"{mismatch.size} mismatches, first at {lat[mismatch[0]]}, {lon[mismatch[0]]}"
    )
    assert (cell_level(ours) == levels).all()


def _unit(latlng: np.ndarray) -> np.ndarray:
    lat, lon = np.radians(latlng[..., 0]), np.radians(latlng[..., 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1)


def _s2_latlng(point_or_latlng) -> tuple[float, float]:
    ll = (
        s2.S2LatLng(point_or_latlng) if isinstance(point_or_latlng, s2.S2Point) else point_or_latlng
    )
    return ll.lat().degrees(), ll.lng().degrees()


@pytest.fixture(scope="module")
def sample_cells() -> np.ndarray:
    """5 000 cells of every level from hard points."""
    rng = np.random.default_rng(1)
    lat, lon = _hard_points(rng, 5000)
    levels = np.arange(lat.size) % 31
    return np.concatenate(
        [latlng_to_cell(lat[levels == k], lon[levels == k], k) for k in range(31)]
    )


def test_centres_vertices_tokens_neighbours_match_s2geometry(sample_cells):
    ids = [s2.S2CellId(int(c)) for c in sample_cells]
    ref_centre = np.array([_s2_latlng(i.ToLatLng()) for i in ids])
    ref_vertices = np.array(
        [[_s2_latlng(s2.S2Cell(i).GetVertex(k)) for k in range(4)] for i in ids]
    )
    centre = np.stack(cell_to_latlng(sample_cells), -1)
    # Compare as unit vectors: longitude is arbitrary at the poles.
    assert np.abs(_unit(centre) - _unit(ref_centre)).max() < 1e-14
    assert np.abs(_unit(cell_vertices(sample_cells)) - _unit(ref_vertices)).max() < 1e-14
    assert cell_to_token(sample_cells).tolist() == [i.ToToken() for i in ids]
    ref_neighbors = [[n.id() for n in i.GetEdgeNeighbors()] for i in ids]
    assert (cell_neighbors(sample_cells) == np.array(ref_neighbors, np.uint64)).all()


def test_token_round_trip_and_case(sample_cells):
    tokens = cell_to_token(sample_cells)
    assert (token_to_cell(tokens) == sample_cells).all()
    assert (token_to_cell(np.char.upper(tokens)) == sample_cells).all()
    assert token_to_cell("479dd91dd")[0] == _s2_id(48.1, 11.5, 16)


def test_parent_and_children_match_s2geometry(sample_cells):
    cells = sample_cells[cell_level(sample_cells) >= 12]
    for level in (0, 7, 12):
        ref = [s2.S2CellId(int(c)).parent(level).id() for c in cells]
        assert (cell_parent(cells, level) == np.array(ref, np.uint64)).all()
    parents = cell_parent(cells[:50], 12)
    children = cell_children(parents, 14)
    assert children.shape == (50, 16)
    first = s2.S2CellId(int(parents[0])).child_begin(14)
    ref_children = []
    while first != s2.S2CellId(int(parents[0])).child_end(14):
        ref_children.append(first.id())
        first = first.next()
    assert children[0].tolist() == ref_children
    assert (cell_parent(children.ravel(), 12) == np.repeat(parents, 16)).all()


def test_centre_maps_back_to_its_cell(sample_cells):
    lat, lon = cell_to_latlng(sample_cells)
    levels = cell_level(sample_cells)
    for level in (0, 10, 20, 30):
        sel = levels == level
        assert (latlng_to_cell(lat[sel], lon[sel], level) == sample_cells[sel]).all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: latlng_to_cell(np.nan, 0.0, 5), "lat[0] = nan"),
        (lambda: latlng_to_cell([0.0, 91.0], 0.0, 5), "lat[1] = 91.0"),
        (lambda: latlng_to_cell(0.0, -180.5, 5), "lon[0] = -180.5"),
        (lambda: latlng_to_cell(0.0, 0.0, 31), "level must be in 0..30, got 31"),
        (lambda: latlng_to_cell(0.0, 0.0, -1), "got -1"),
        (lambda: latlng_to_cell(0.0, 0.0, 2.5), "got 2.5"),
        (lambda: token_to_cell(["479dd91dd", "47g"]), "tokens[1] = '47g'"),
        (lambda: token_to_cell(["12345678901234567"]), "'12345678901234567'"),
        (lambda: token_to_cell([""]), "tokens[0] = ''"),
        (lambda: token_to_cell(["X"]), "'X'"),
        (lambda: token_to_cell(["e"]), "'e'"),  # face 7 does not exist
        (lambda: token_to_cell(["2"]), "'2'"),  # odd number of trailing zero bits
        (lambda: cell_level(np.array([0], np.uint64)), "cells[0] = 0"),
        (lambda: cell_parent(latlng_to_cell(0.0, 0.0, 5), 6), "level 5 < requested parent level 6"),
        (lambda: cell_children(latlng_to_cell(0.0, 0.0, 5), 4), "level 5 > requested"),
    ],
)
def test_bad_input_raises_value_error_naming_it(call, message):
    with pytest.raises(ValueError, match=None) as info:
        call()
    assert message in str(info.value)


def test_importing_geo_does_not_import_torch():
    code = "import sys, geocells.geo; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
