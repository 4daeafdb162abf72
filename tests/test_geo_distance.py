"""geocells.geo distances against pyproj's WGS84 geodesics."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest

from geocells.geo import haversine_m, latlng_to_local_m, local_m_to_latlng

_GEOD = pyproj.Geod(ellps="WGS84")


def _random_pairs(rng: np.random.Generator, n: int, spread_deg: float | None):
    lat1 = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    lon1 = rng.uniform(-180, 180, n)
    if spread_deg is None:
        lat2 = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
        lon2 = rng.uniform(-180, 180, n)
    else:
        lat2 = np.clip(lat1 + rng.normal(0, spread_deg, n), -90, 90)
        lon2 = (lon1 + rng.normal(0, spread_deg, n) + 180) % 360 - 180
    return lat1, lon1, lat2, lon2


@pytest.mark.parametrize(
    ("spread_deg", "tolerance"), [(None, 5e-3), (5.0, 1e-5), (0.01, 1e-5), (1e-4, 1e-5)]
)
def test_haversine_matches_wgs84_geodesics(spread_deg, tolerance):
    """Within 0.5 % worldwide (the requirement), and far closer for regional distances."""
    rng = np.random.default_rng(0)
    lat1, lon1, lat2, lon2 = _random_pairs(rng, 20_000, spread_deg)
    _, _, reference = _GEOD.inv(lon1, lat1, lon2, lat2)
    ours = haversine_m(lat1, lon1, lat2, lon2)
    assert np.max(np.abs(ours / reference - 1)) < tolerance


def test_haversine_basics():
    assert haversine_m(48.1, 11.5, 48.1, 11.5) == 0.0
    one_degree = haversine_m(0.0, 0.0, 1.0, 0.0)
    assert one_degree == pytest.approx(110_574.4, rel=1e-5)  # meridian degree at the equator
    assert np.isnan(haversine_m(np.nan, 0.0, 0.0, 0.0))
    across = haversine_m(0.0, 179.9, 0.0, -179.9)
    assert across == pytest.approx(haversine_m(0.0, 0.0, 0.0, 0.2))
    broadcast = haversine_m(np.zeros(3), np.zeros(3), 0.0, [0.0, 1.0, 2.0])
    assert broadcast.shape == (3,) and broadcast[0] == 0 and broadcast[2] > broadcast[1]


def test_local_offsets_match_geodesics_and_round_trip():
    rng = np.random.default_rng(1)
    ref_lat, ref_lon = rng.uniform(36, 55, 5000), rng.uniform(-10, 19, 5000)
    east, north = rng.uniform(-3000, 3000, 5000), rng.uniform(-3000, 3000, 5000)
    lat, lon = local_m_to_latlng(east, north, ref_lat, ref_lon)
    azimuth, _, distance = _GEOD.inv(ref_lon, ref_lat, lon, lat)
    assert np.abs(distance / np.hypot(east, north) - 1).max() < 1e-3
    bearing = np.degrees(np.arctan2(east, north))
    assert np.abs((azimuth - bearing + 180) % 360 - 180).max() < 0.05
    back_east, back_north = latlng_to_local_m(lat, lon, ref_lat, ref_lon)
    assert np.allclose(back_east, east, atol=1e-6) and np.allclose(back_north, north, atol=1e-6)
