"""The one result record of geocells: ``Prediction`` and ``ImageResult``.

The Python API (``Localizer.locate``), ``geocells locate`` and ``POST /locate`` all
return these, and all write them in the same three formats (``to_json``, ``to_geojson``,
``to_csv``); docs/results.md describes the fields once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

GPS_IFD = 0x8825
_LAT_REF, _LAT, _LON_REF, _LON = 1, 2, 3, 4


@dataclass(frozen=True)
class Prediction:
    """One candidate location of an image: a database cell, ranked by score."""

    rank: int  # 1 = best
    lat: float  # the cell's centre, WGS84 degrees
    lon: float
    token: str  # S2 token of the cell
    score: float  # sim_A + κ · sim_P
    confidence: float  # P(within radius_m), calibrated on val; NaN if not calibrated
    error_m: float | None = None  # distance from the image's own EXIF position, if any

    @property
    def polygon(self) -> dict[str, Any]:
        """The cell as a GeoJSON Polygon (lon, lat; counter-clockwise, closed)."""
        return cell_polygon(self.token)

    def to_dict(self, polygon: bool = True) -> dict[str, Any]:
        """A JSON-ready dict: ``rank, lat, lon, token, score, confidence, error_m, polygon``."""
        data = {
            "rank": self.rank,
            "lat": self.lat,
            "lon": self.lon,
            "token": self.token,
            "score": self.score,
            "confidence": None if math.isnan(self.confidence) else self.confidence,
            "error_m": self.error_m,
        }
        if polygon:
            data["polygon"] = self.polygon
        return data


@dataclass
class ImageResult:
    """One input image: its ranked predictions, or the reason it could not be located.

    It behaves as the list of its predictions (``result[0]`` is the best one; a failed
    image has none), so ``for p in localizer.locate([path])[0]`` reads as before.
    """

    index: int  # position among the inputs
    image: str  # path or name as given (an in-memory image: "<image N>")
    predictions: list[Prediction] = field(default_factory=list)
    error: str | None = None  # why the image was not located; None when it was
    exif_lat: float | None = None  # the image's own EXIF GPS position, when it has one
    exif_lon: float | None = None

    def __post_init__(self) -> None:
        if self.exif_lat is not None and self.exif_lon is not None and self.predictions:
            from geocells.geo import haversine_m

            lat = np.array([p.lat for p in self.predictions])
            lon = np.array([p.lon for p in self.predictions])
            errors = haversine_m(lat, lon, self.exif_lat, self.exif_lon)
            self.predictions = [
                replace(p, error_m=float(e)) for p, e in zip(self.predictions, errors)
            ]

    @property
    def ok(self) -> bool:
        """Whether the image was located."""
        return self.error is None

    def __iter__(self) -> Iterator[Prediction]:
        return iter(self.predictions)

    def __len__(self) -> int:
        return len(self.predictions)

    def __getitem__(self, rank: int) -> Prediction:
        return self.predictions[rank]

    def to_dict(self, polygon: bool = True) -> dict[str, Any]:
        """``index, image, exif_lat, exif_lon, error, predictions: [...]``."""
        return {
            "index": self.index,
            "image": self.image,
            "exif_lat": self.exif_lat,
            "exif_lon": self.exif_lon,
            "error": self.error,
            "predictions": [p.to_dict(polygon) for p in self.predictions],
        }


@functools.lru_cache(maxsize=1 << 16)
def cell_polygon(token: str) -> dict[str, Any]:
    """One cell's GeoJSON Polygon; cached, because answers keep naming the same cells and
    the numpy call costs more than the rest of a response on a small model."""
    from geocells.geo import cell_vertices, token_to_cell

    corners = cell_vertices(token_to_cell(np.array([token])))[0]  # [4, (lat, lon)], CCW
    ring = [[float(lon), float(lat)] for lat, lon in corners]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def exif_position(image: Any) -> tuple[float, float] | None:
    """``(lat, lon)`` from the EXIF GPS tags of a path, a binary file object or a PIL image;
    None when absent or unusable (minutes or seconds >= 60, references other than N/S/E/W,
    out of range)."""
    from PIL import Image

    try:
        if isinstance(image, str | Path) or hasattr(image, "read"):
            with Image.open(image) as opened:
                exif = opened.getexif()
        elif isinstance(image, Image.Image):
            exif = image.getexif()
        else:
            return None
        gps = exif.get_ifd(GPS_IFD)
        lat = _degrees(gps.get(_LAT), gps.get(_LAT_REF, "N"), "NS", 90.0)
        lon = _degrees(gps.get(_LON), gps.get(_LON_REF, "E"), "EW", 180.0)
    except (OSError, SyntaxError, ValueError, TypeError, ZeroDivisionError, KeyError):
        return None
    if lat is None or lon is None:
        return None
    return lat, lon


def _degrees(value: Any, ref: Any, refs: str, limit: float) -> float | None:
    """EXIF (degrees, minutes, seconds) + reference -> signed degrees; None if unusable."""
    if value is None:
        return None
    parts = [float(v) for v in value] if isinstance(value, tuple | list) else [float(value)]
    parts += [0.0] * (3 - len(parts))
    degrees, minutes, seconds = parts[:3]
    ref = str(ref or refs[0]).strip().rstrip("\0").upper()
    if ref not in refs or not (0 <= minutes < 60 and 0 <= seconds < 60) or degrees < 0:
        return None
    signed = (degrees + minutes / 60 + seconds / 3600) * (-1 if ref == refs[1] else 1)
    return signed if abs(signed) <= limit and math.isfinite(signed) else None
