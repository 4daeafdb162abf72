"""JSON and GeoJSON bodies of ``POST /locate`` and ``GET /cells/{token}``."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from geocells.locate import Prediction


@dataclass
class ImageResult:
    """One uploaded file: its predictions, or the reason it could not be located."""

    index: int  # position among the request's files
    filename: str  # as the client named it (echoed, never used as a path)
    predictions: list[Prediction] | None = None
    error: str | None = None


def cell_polygons(tokens: list[str]) -> list[dict[str, Any]]:
    """GeoJSON Polygons (lon, lat; counter-clockwise, closed) of S2 cells."""
    return [cell_polygon(token) for token in tokens]


@functools.lru_cache(maxsize=1 << 16)
def cell_polygon(token: str) -> dict[str, Any]:
    """One cell's GeoJSON Polygon; cached, because answers keep naming the same cells and
    the numpy call costs more than the rest of the response on a small model."""
    from geocells.geo import cell_vertices, token_to_cell

    corners = cell_vertices(token_to_cell(np.array([token])))[0]  # [4, (lat, lon)], CCW
    ring = [[float(lon), float(lat)] for lat, lon in corners]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def prediction_dicts(predictions: list[Prediction]) -> list[dict[str, Any]]:
    """Predictions as dicts with a ``rank`` and the ``polygon`` of their cell."""
    polygons = cell_polygons([p.token for p in predictions])
    return [
        {"rank": rank, **p.to_dict(), "polygon": polygon}  # shared, never mutated
        for rank, (p, polygon) in enumerate(zip(predictions, polygons), start=1)
    ]


def to_json(results: list[ImageResult], top_k: int) -> dict[str, Any]:
    """``{"top_k", "located", "failed", "results": [{index, filename, predictions|error}]}``."""
    items = []
    for result in results:
        item: dict[str, Any] = {"index": result.index, "filename": result.filename}
        if result.error is None:
            item["predictions"] = prediction_dicts(result.predictions or [])
        else:
            item["error"] = result.error
        items.append(item)
    failed = sum(result.error is not None for result in results)
    return {"top_k": top_k, "located": len(results) - failed, "failed": failed, "results": items}


def to_geojson(results: list[ImageResult], top_k: int) -> dict[str, Any]:
    """A FeatureCollection: per prediction a Point and its cell Polygon; failures listed
    in the foreign member ``errors`` (GeoJSON has no place for them)."""
    features = []
    for result in results:
        if result.error is not None:
            continue
        for item in prediction_dicts(result.predictions or []):
            polygon = item.pop("polygon")
            properties = {"index": result.index, "filename": result.filename, **item}
            point = {"type": "Point", "coordinates": [item["lon"], item["lat"]]}
            for kind, geometry in (("prediction", point), ("cell", polygon)):
                features.append(
                    {
                        "type": "Feature",
                        "geometry": geometry,
                        "properties": {**properties, "kind": kind},
                    }
                )
    errors = [
        {"index": r.index, "filename": r.filename, "error": r.error}
        for r in results
        if r.error is not None
    ]
    return {"type": "FeatureCollection", "top_k": top_k, "features": features, "errors": errors}
