"""geocells.geo regions: construction, containment, area, GeoJSON I/O and bad input."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pyproj
import pytest
from matplotlib.path import Path as MplPath

from geocells.geo import Region, preset_names

_SQUARE_WITH_HOLE = {
    "type": "Polygon",
    "coordinates": [
        [[5, 50], [7.3, 50.2], [8, 52], [6.5, 51.2], [5.2, 52.5], [5, 50]],
        [[6, 50.5], [6.5, 50.5], [6.2, 50.9], [6, 50.5]],
    ],
}


def _geodesic_area_km2(region: Region) -> float:
    """Area with pyproj on the WGS84 ellipsoid, edges densified so they follow lon/lat lines."""
    geod = pyproj.Geod(ellps="WGS84")
    total = 0.0
    for rings in region.polygons:
        areas = []
        for ring in rings:
            closed = np.concatenate([ring, ring[:1]])
            t = np.linspace(0, 1, 200, endpoint=False)
            dense = np.concatenate(
                [a + (b - a) * t[:, None] for a, b in itertools.pairwise(closed)]
            )
            areas.append(abs(geod.polygon_area_perimeter(dense[:, 0], dense[:, 1])[0]))
        total += areas[0] - sum(areas[1:])
    return total / 1e6


def test_bbox_contains_bounds_and_area():
    region = Region.from_bbox(45.0, 5.0, 47.0, 8.0)
    assert region.bounds == (45.0, 5.0, 47.0, 8.0)
    lat = np.array([46.0, 44.9, 46.0, 47.1, 46.5])
    lon = np.array([6.0, 6.0, 8.1, 6.0, 4.0])
    assert region.contains(lat, lon).tolist() == [True, False, False, False, False]
    radius = 6371.0072
    exact = radius**2 * np.radians(3.0) * (np.sin(np.radians(47)) - np.sin(np.radians(45)))
    assert region.area_km2() == pytest.approx(exact, rel=1e-9)
    assert region.area_km2() == pytest.approx(_geodesic_area_km2(region), rel=5e-3)


def test_contains_matches_matplotlib_and_respects_holes():
    region = Region.from_geojson(_SQUARE_WITH_HOLE)
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(49.5, 53, 50_000), rng.uniform(4.5, 8.5, 50_000)
    outer = MplPath(np.array(_SQUARE_WITH_HOLE["coordinates"][0]))
    hole = MplPath(np.array(_SQUARE_WITH_HOLE["coordinates"][1]))
    points = np.stack([lon, lat], axis=1)
    expected = outer.contains_points(points) & ~hole.contains_points(points)
    assert (region.contains(lat, lon) == expected).mean() > 0.9999  # ties on edges aside
    assert not region.contains(50.7, 6.2)[0]  # inside the hole
    assert region.area_km2() == pytest.approx(_geodesic_area_km2(region), rel=5e-3)


def test_geojson_round_trip(tmp_path):
    region = Region.from_geojson(_SQUARE_WITH_HOLE)
    path = tmp_path / "region.geojson"
    data = region.to_geojson(path)
    assert data["features"][0]["geometry"]["type"] == "Polygon"
    again = Region.from_geojson(path)
    assert again.area_km2() == pytest.approx(region.area_km2(), rel=1e-12)
    assert np.array_equal(again.edges, region.edges)
    multi = Region.preset("europe-west").to_geojson()
    assert multi["features"][0]["geometry"]["type"] == "MultiPolygon"


@pytest.mark.parametrize(
    ("name", "inside", "outside"),
    [
        (
            "europe-west",
            # Munich, Paris, Madrid, Lisbon, Rome, Palermo, Cagliari, Corte, Palma, Vienna,
            # Zurich, Amsterdam, Brussels, Luxembourg, Berlin, Milan, Seville, Naples
            [
                (48.14, 11.58),
                (48.86, 2.35),
                (40.42, -3.70),
                (38.72, -9.14),
                (41.90, 12.50),
                (38.12, 13.36),
                (39.22, 9.12),
                (42.31, 9.15),
                (39.57, 2.65),
                (48.21, 16.37),
                (47.38, 8.54),
                (52.37, 4.90),
                (50.85, 4.35),
                (49.61, 6.13),
                (52.52, 13.41),
                (45.46, 9.19),
                (37.39, -5.99),
                (40.85, 14.27),
            ],
            # London, Copenhagen, Prague, Warsaw, Ljubljana, Budapest, Algiers, Tunis
            [
                (51.50, -0.13),
                (55.68, 12.57),
                (50.08, 14.43),
                (52.23, 21.01),
                (46.05, 14.50),
                (47.50, 19.04),
                (36.75, 3.06),
                (36.80, 10.18),
            ],
        ),
        (
            "bedenl",
            [(48.14, 11.58), (52.52, 13.41), (52.37, 4.90), (50.85, 4.35), (50.94, 6.96)],
            [(48.86, 2.35), (48.21, 16.37), (47.38, 8.54), (49.61, 6.13), (50.08, 14.43)],
        ),
    ],
)
def test_presets_contain_their_capitals(name, inside, outside):
    region = Region.preset(name)
    lat, lon = np.array(inside + outside).T
    assert region.contains(lat, lon).tolist() == [True] * len(inside) + [False] * len(outside)


def test_preset_areas_match_the_countries():
    # Land areas: BE 30.7k + DE 357.6k + NL 41.9k; the ten europe-west countries ~2.01 M km².
    assert Region.preset("bedenl").area_km2() == pytest.approx(430_000, rel=0.03)
    assert Region.preset("europe-west").area_km2() == pytest.approx(2_009_000, rel=0.05)
    assert set(preset_names()) >= {"bedenl", "europe-west"}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Region.preset("europe"), "unknown region preset 'europe'; valid: bedenl"),
        (
            lambda: Region.from_geojson({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}),
            "'LineString' is not a Polygon or MultiPolygon",
        ),
        (lambda: Region.from_geojson({"type": "Point", "coordinates": [0, 0]}), "'Point'"),
        (
            lambda: Region.from_geojson({"type": "FeatureCollection", "features": []}),
            "empty region",
        ),
        (lambda: Region.from_geojson({"type": "Polygon", "coordinates": []}), "is empty"),
        (
            lambda: Region.from_geojson(
                {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]}
            ),
            "at least 3 distinct vertices",
        ),
        (
            lambda: Region.from_geojson(
                {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [2, 0], [0, 0]]]}
            ),
            "zero area",
        ),
        (lambda: Region.from_bbox(10, 0, 5, 1), "south < north"),
        (lambda: Region.from_bbox(float("nan"), 0, 5, 1), "south = nan"),
        (lambda: Region.from_bbox(80, 0, 89, 1), "vertex 2 = [1.0, 89.0]"),
        (lambda: Region.from_bbox(0, -170, 1, 170), "split it at the antimeridian"),
    ],
)
def test_bad_regions_raise_value_error_naming_it(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


def test_bad_geojson_files(tmp_path):
    broken = tmp_path / "broken.geojson"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match=r"broken\.geojson: not valid JSON"):
        Region.from_geojson(broken)
    line = tmp_path / "line.geojson"
    line.write_text(json.dumps({"type": "Feature", "geometry": {"type": "LineString"}}))
    with pytest.raises(ValueError, match="'LineString'"):
        Region.from_geojson(line)
    with pytest.raises(OSError):
        Region.from_geojson(tmp_path / "missing.geojson")


def test_repeated_vertices_are_dropped():
    ring = [[5, 50], [6, 50], [6, 50], [6, 51], [5, 51], [5, 50]]
    region = Region.from_geojson({"type": "Polygon", "coordinates": [ring]})
    assert region.polygons[0][0].tolist() == [[5, 50], [6, 50], [6, 51], [5, 51]]


def test_multipolygon_contains_matches_even_odd_over_all_rings():
    """Polygon by polygon with bounding-box candidates gives the global even-odd answer,
    overlapping parts included (their overlap is outside, as even-odd says)."""
    from geocells.geo.region import points_in_edges

    rng = np.random.default_rng(2)
    polygons = []
    for lat, lon in zip(rng.uniform(10, 12, 40), rng.uniform(20, 22, 40)):
        angle = np.sort(rng.uniform(0, 2 * np.pi, 7))
        radius = rng.uniform(0.05, 0.3, 7)
        polygons.append([np.stack([lon + radius * np.cos(angle), lat + radius * np.sin(angle)], 1)])
    region = Region(polygons, "blobs")
    lat, lon = rng.uniform(9.5, 12.5, 5000), rng.uniform(19.5, 22.5, 5000)
    expected = points_in_edges(lon, lat, region.edges)
    assert expected.any() and not expected.all()
    np.testing.assert_array_equal(region.contains(lat, lon), expected)
