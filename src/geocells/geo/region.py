"""Regions: (Multi)Polygons in WGS84 lon/lat with straight edges in lon/lat (GeoJSON).

Inside/outside follows the even-odd rule over all rings (holes are rings too). No polygon
may cross the antimeridian (a MultiPolygon may have parts on both sides of it), and all
must stay within ±85° latitude, so that straight
lon/lat edges and the local planar maths in ``geocells.geo.cover`` stay meaningful.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import numpy as np

from geocells.geo.cells import check_latlng
from geocells.io import write_text

MAX_ABS_LAT = 85.0
# Authalic radius: a sphere with the WGS84 ellipsoid's surface area (areas within ~0.3 %).
_AUTHALIC_RADIUS_KM = 6371.0072


def preset_names() -> list[str]:
    """Names of the regions shipped with geocells."""
    folder = resources.files("geocells.geo") / "regions"
    return sorted(
        p.name.removesuffix(".geojson") for p in folder.iterdir() if p.name.endswith(".geojson")
    )


class Region:
    """A (Multi)Polygon region; ``polygons`` is a list of polygons, each a list of rings.

    Each ring is float64[K, 2] of (lon, lat) degrees, not repeating the first vertex; the
    first ring of a polygon is its outer boundary, the others are holes.
    """

    def __init__(self, polygons: list[list[np.ndarray]], name: str = "region"):
        self.name = name
        self.polygons = [
            [_check_ring(ring, f"{name}: polygon {p} ring {r}") for r, ring in enumerate(rings)]
            for p, rings in enumerate(polygons)
        ]
        if not self.polygons or not all(self.polygons):
            raise ValueError(f"region {name!r} is empty (no polygon rings)")
        if self.area_km2() <= 0:
            raise ValueError(f"region {name!r} is empty (zero area)")
        rings = [ring for rings in self.polygons for ring in rings]
        starts = np.concatenate(rings)
        ends = np.concatenate([np.roll(ring, -1, axis=0) for ring in rings])
        self.edges = np.concatenate([starts, ends], axis=1)  # [E, 4] lon1, lat1, lon2, lat2
        for index, rings in enumerate(self.polygons):
            # Per polygon: a MultiPolygon may hold parts on both sides of the antimeridian
            # (each part's straight lon/lat edges stay meaningful), one polygon may not.
            if np.ptp(rings[0][:, 0]) > 180:
                raise ValueError(
                    f"region {name!r}: polygon {index} spans more than 180° of longitude; "
                    "split it at the antimeridian"
                )

    def __repr__(self) -> str:
        rings = sum(len(p) for p in self.polygons)
        return f"Region({self.name!r}, {len(self.polygons)} polygons, {rings} rings)"

    @classmethod
    def from_bbox(cls, south: float, west: float, north: float, east: float) -> Region:
        """The lon/lat rectangle [south, north] x [west, east] (degrees)."""
        values = {"south": south, "west": west, "north": north, "east": east}
        for key, value in values.items():
            if not np.isfinite(value):
                raise ValueError(f"bbox {key} = {value} is not a finite number")
        if not (south < north and west < east):
            raise ValueError(f"bbox needs south < north and west < east, got {values}")
        ring = np.array([[west, south], [east, south], [east, north], [west, north]], float)
        return cls([[ring]], name=f"bbox:{south},{west},{north},{east}")

    @classmethod
    def from_geojson(cls, source: str | Path | Mapping) -> Region:
        """From a GeoJSON file (or parsed dict): Polygon, MultiPolygon, Feature(Collection)."""
        if isinstance(source, Mapping):
            data, name = source, "geojson"
        else:
            path = Path(source)
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: not valid JSON ({err})") from None
            name = path.stem
        return cls(_polygons_from_geojson(data, name), name=name)

    @classmethod
    def preset(cls, name: str) -> Region:
        """A region shipped with geocells (``preset_names()`` lists them)."""
        names = preset_names()
        if name not in names:
            raise ValueError(f"unknown region preset {name!r}; valid: {', '.join(names)}")
        path = resources.files("geocells.geo") / "regions" / f"{name}.geojson"
        region = cls.from_geojson(json.loads(path.read_text()))
        region.name = name
        return region

    @classmethod
    def parse(cls, spec: str) -> Region:
        """A preset name, a GeoJSON file path, or ``bbox:south,west,north,east``."""
        if spec.startswith("bbox:"):
            parts = spec[len("bbox:") :].split(",")
            try:
                values = [float(part) for part in parts]
            except ValueError:
                values = []
            if len(values) != 4:
                raise ValueError(f"region {spec!r}: expected bbox:south,west,north,east")
            return cls.from_bbox(*values)
        path = Path(spec)
        if path.suffix.lower() in (".geojson", ".json") or path.exists():
            if not path.is_file():
                raise FileNotFoundError(f"region file {spec!r} does not exist")
            return cls.from_geojson(path)
        if spec not in preset_names():
            raise ValueError(
                f"unknown region {spec!r}: not a preset ({', '.join(preset_names())}), "
                "a .geojson file or bbox:south,west,north,east"
            )
        return cls.preset(spec)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(south, west, north, east) in degrees."""
        lon, lat = self.edges[:, 0], self.edges[:, 1]
        return float(lat.min()), float(lon.min()), float(lat.max()), float(lon.max())

    def contains(self, lat, lon) -> np.ndarray:
        """Whether points (degrees) lie inside (even-odd rule): bool[N]."""
        lat, lon = check_latlng(lat, lon)
        if len(self.polygons) > 1:
            return self._contains_by_polygon(lat, lon)
        south, west, north, east = self.bounds
        inside = np.zeros(lat.size, bool)
        candidates = np.flatnonzero((lat >= south) & (lat <= north) & (lon >= west) & (lon <= east))
        inside[candidates] = points_in_edges(lon[candidates], lat[candidates], self.edges)
        return inside

    def _contains_by_polygon(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Even-odd over all rings, polygon by polygon (the parity of a sum of crossings is
        the XOR of the parts' parities), each against the points in its bounding box only:
        a MultiPolygon of thousands of small parts costs its edges, not edges x points."""
        inside = np.zeros(lat.size, bool)
        order = np.argsort(lon, kind="stable")
        sorted_lon = lon[order]
        for rings in self.polygons:
            points = np.concatenate(rings)
            low = np.searchsorted(sorted_lon, points[:, 0].min(), side="left")
            high = np.searchsorted(sorted_lon, points[:, 0].max(), side="right")
            rows = order[low:high]
            rows = rows[(lat[rows] >= points[:, 1].min()) & (lat[rows] <= points[:, 1].max())]
            if rows.size:
                ends = np.concatenate([np.roll(ring, -1, axis=0) for ring in rings])
                edges = np.concatenate([points, ends], axis=1)
                inside[rows] ^= points_in_edges(lon[rows], lat[rows], edges)
        return inside

    def area_km2(self) -> float:
        """Area on the authalic sphere of the polygon with straight lon/lat edges."""
        total = 0.0
        for rings in self.polygons:
            areas = [abs(_ring_signed_area_km2(ring)) for ring in rings]
            total += areas[0] - sum(areas[1:])
        return float(total)

    def to_geojson(self, path: str | Path | None = None) -> dict:
        """The region as a GeoJSON FeatureCollection dict; also written to ``path`` if given."""
        coords = [[_closed(ring).tolist() for ring in rings] for rings in self.polygons]
        geometry = (
            {"type": "Polygon", "coordinates": coords[0]}
            if len(coords) == 1
            else {"type": "MultiPolygon", "coordinates": coords}
        )
        data = {
            "type": "FeatureCollection",
            "features": [
                {"type": "Feature", "properties": {"name": self.name}, "geometry": geometry}
            ],
        }
        if path is not None:
            write_text(path, json.dumps(data))  # atomic: a failed write keeps the old file
        return data


def points_in_edges(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon of points (x, y) against edges [E, 4]: bool[N]."""
    inside = np.zeros(x.shape, bool)
    for x1, y1, x2, y2 in edges:
        if y1 == y2:
            continue
        crosses = (y1 > y) != (y2 > y)
        x_cross = x1 + (y - y1) * ((x2 - x1) / (y2 - y1))
        inside ^= crosses & (x < x_cross)
    return inside


def _closed(ring: np.ndarray) -> np.ndarray:
    return np.concatenate([ring, ring[:1]])


def _ring_signed_area_km2(ring: np.ndarray) -> float:
    """Exact spherical area enclosed by a lon/lat ring whose edges are straight in lon/lat."""
    lon, lat = np.radians(ring[:, 0]), np.radians(ring[:, 1])
    dlon = np.roll(lon, -1) - lon
    dlat = np.roll(lat, -1) - lat
    mid = lat + dlat / 2
    # Green's theorem: area = -R² ∮ sin(lat) dlon, integrated exactly along each edge.
    integral = np.sum(dlon * np.sin(mid) * np.sinc(dlat / (2 * np.pi)))
    return float(-integral * _AUTHALIC_RADIUS_KM**2)


def _check_ring(ring, where: str) -> np.ndarray:
    ring = np.asarray(ring, dtype=float)
    if ring.ndim != 2 or ring.shape[1] < 2:
        raise ValueError(f"{where}: expected a list of [lon, lat] positions")
    ring = ring[:, :2]
    # Drop repeated consecutive vertices and the closing one (both common in GeoJSON).
    ring = ring[np.r_[True, (ring[1:] != ring[:-1]).any(axis=1)]]
    if len(ring) > 1 and (ring[0] == ring[-1]).all():
        ring = ring[:-1]
    if len(ring) < 3:
        raise ValueError(f"{where}: a ring needs at least 3 distinct vertices, got {len(ring)}")
    bad = ~np.isfinite(ring).all(axis=1) | (np.abs(ring[:, 0]) > 180)
    bad |= np.abs(ring[:, 1]) > MAX_ABS_LAT
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{where}: vertex {k} = {ring[k].tolist()} is not a lon/lat inside "
            f"[-180, 180] x [-{MAX_ABS_LAT}, {MAX_ABS_LAT}]"
        )
    return ring


def _polygons_from_geojson(data, name: str) -> list[list[np.ndarray]]:
    """Polygons (lists of rings) from any GeoJSON object holding (Multi)Polygons."""
    if not isinstance(data, Mapping) or "type" not in data:
        raise ValueError(f"{name}: not a GeoJSON object (no 'type')")
    kind = data["type"]
    if kind == "FeatureCollection":
        features = data.get("features") or []
        polygons = [p for f in features for p in _polygons_from_geojson(f, name)]
        if not polygons:
            raise ValueError(f"{name}: FeatureCollection has no polygon features (empty region)")
        return polygons
    if kind == "Feature":
        if not data.get("geometry"):
            raise ValueError(f"{name}: Feature without geometry (empty region)")
        return _polygons_from_geojson(data["geometry"], name)
    if kind == "Polygon":
        return [list(data["coordinates"])]
    if kind == "MultiPolygon":
        return [list(polygon) for polygon in data["coordinates"]]
    raise ValueError(f"{name}: geometry type {kind!r} is not a Polygon or MultiPolygon")
