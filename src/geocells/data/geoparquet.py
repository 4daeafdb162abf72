"""GeoParquet metadata for point tables, so GIS tools (QGIS, GDAL >= 3.5, GeoPandas) open a
manifest as a layer of points.

Follows GeoParquet 1.1.0: a ``geometry`` column of WKB points (little-endian, type 1,
x = longitude, y = latitude, degrees) and a ``geo`` key in the Parquet schema metadata::

    {"version": "1.1.0", "primary_column": "geometry",
     "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"],
                              "bbox": [west, south, east, north]}}}

``crs`` is left out, which the specification defines as OGC:CRS84 (WGS84 lon/lat).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

GEOPARQUET_VERSION = "1.1.0"
GEOMETRY_COLUMN = "geometry"
_WKB_POINT = np.dtype([("order", "u1"), ("kind", "<u4"), ("x", "<f8"), ("y", "<f8")])


def wkb_points(lon: np.ndarray, lat: np.ndarray) -> pa.Array:
    """WKB ``POINT (lon lat)`` per row: a binary array of 21-byte values."""
    records = np.empty(len(lon), dtype=_WKB_POINT)
    records["order"], records["kind"] = 1, 1
    records["x"], records["y"] = lon, lat
    offsets = np.arange(len(lon) + 1, dtype=np.int32) * _WKB_POINT.itemsize
    data = pa.py_buffer(records.tobytes())
    return pa.Array.from_buffers(pa.binary(), len(lon), [None, pa.py_buffer(offsets), data])


def point_lonlat(wkb: bytes) -> tuple[float, float]:
    """(lon, lat) of one little-endian WKB point (the inverse of ``wkb_points``)."""
    record = np.frombuffer(wkb, dtype=_WKB_POINT, count=1)[0]
    if record["order"] != 1 or record["kind"] != 1:
        raise ValueError("not a little-endian WKB point")
    return float(record["x"]), float(record["y"])


def with_point_geometry(table: pa.Table, lon: np.ndarray, lat: np.ndarray) -> pa.Table:
    """``table`` plus a WKB ``geometry`` column and the GeoParquet ``geo`` metadata."""
    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    if GEOMETRY_COLUMN in table.column_names:
        table = table.drop_columns([GEOMETRY_COLUMN])
    table = table.append_column(GEOMETRY_COLUMN, wkb_points(lon, lat))
    column: dict = {"encoding": "WKB", "geometry_types": ["Point"]}
    if len(lon):
        column["bbox"] = [float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())]
    geo = {
        "version": GEOPARQUET_VERSION,
        "primary_column": GEOMETRY_COLUMN,
        "columns": {GEOMETRY_COLUMN: column},
    }
    metadata = dict(table.schema.metadata or {})
    metadata[b"geo"] = json.dumps(geo).encode()
    return table.replace_schema_metadata(metadata)
