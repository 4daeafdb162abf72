"""JSON and GeoJSON bodies of ``POST /locate`` and the polygon of ``GET /cells/{token}``.

The bodies are those of ``geocells locate`` (``geocells.locate.formats``): one
``ImageResult`` record per uploaded file, the file's name as ``image`` (echoed, never
used as a path); docs/results.md describes the fields.
"""

from __future__ import annotations

from typing import Any

from geocells.locate.formats import to_geojson, to_json
from geocells.locate.record import ImageResult, cell_polygon, exif_position

__all__ = ["ImageResult", "cell_polygon", "cell_polygons", "exif_position", "to_geojson", "to_json"]


def cell_polygons(tokens: list[str]) -> list[dict[str, Any]]:
    """GeoJSON Polygons (lon, lat; counter-clockwise, closed) of S2 cells."""
    return [cell_polygon(token) for token in tokens]
