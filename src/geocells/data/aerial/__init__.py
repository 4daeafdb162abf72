"""Aerial imagery sources: ``open_aerial(path)`` -> an ``AerialSource`` with ``crop()``.

Backends: GeoTIFF/COG files in any CRS (one or a mosaic), an XYZ tile folder with
``tiles.json``, or an MBTiles file. Crop conventions (north-up, rotation sign, pixel-is-
area, coverage) are in ``geocells.data.aerial.base``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geocells.data.aerial.base import AerialSource, OutOfCoverageError

GEOTIFF_SUFFIXES = (".tif", ".tiff", ".vrt")

__all__ = ["GEOTIFF_SUFFIXES", "AerialSource", "OutOfCoverageError", "crop_many", "open_aerial"]


def crop_many(
    source: AerialSource,
    lat: np.ndarray,
    lon: np.ndarray,
    size_m: float,
    px: int,
    rotation_deg: np.ndarray | float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Crops at many points -> (``uint8[N, px, px, 3]``, ``covered bool[N]``); a point
    outside coverage gets a black crop and ``covered`` False instead of an error."""
    lat, lon = np.atleast_1d(np.asarray(lat, float)), np.atleast_1d(np.asarray(lon, float))
    rotations = np.broadcast_to(np.asarray(rotation_deg, float), lat.shape)
    crops = np.zeros((len(lat), px, px, 3), dtype=np.uint8)
    covered = np.zeros(len(lat), dtype=bool)
    for i in range(len(lat)):
        try:
            crops[i] = source.crop(lat[i], lon[i], size_m, px, rotations[i])
            covered[i] = True
        except OutOfCoverageError:
            pass  # reported through `covered`
    return crops, covered


def open_aerial(path: str | Path, **options) -> AerialSource:
    """Open an aerial source from a file or folder, dispatching on what is there.

    A ``.tif``/``.tiff``/``.vrt`` file, an ``.mbtiles`` file, or a ``tiles.json`` file
    open that backend. A folder with ``tiles.json`` is an XYZ folder; otherwise a folder
    with exactly one ``*.mbtiles`` is that file; otherwise its GeoTIFFs (not recursive)
    form a mosaic. ``options`` go to the backend (``max_cached_bytes``, ``cache_tiles``).
    """
    from geocells.data.aerial.geotiff import GeoTiffSource
    from geocells.data.aerial.tiles import MBTilesSource, XYZTileSource

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"aerial source not found: {path}")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in GEOTIFF_SUFFIXES:
            return GeoTiffSource([path], **options)
        if suffix == ".mbtiles":
            return MBTilesSource(path, **options)
        if path.name == "tiles.json":
            return XYZTileSource(path.parent, **options)
        raise ValueError(
            f"aerial source {path}: unsupported file type {suffix!r} "
            "(want .tif/.tiff/.vrt, .mbtiles, or a tiles.json)"
        )
    if (path / "tiles.json").is_file():
        return XYZTileSource(path, **options)
    mbtiles = sorted(path.glob("*.mbtiles"))
    rasters = sorted(p for p in path.iterdir() if p.suffix.lower() in GEOTIFF_SUFFIXES)
    if len(mbtiles) == 1 and not rasters:
        return MBTilesSource(mbtiles[0], **options)
    if mbtiles:
        raise ValueError(
            f"aerial folder {path} mixes or repeats MBTiles files ({len(mbtiles)} .mbtiles, "
            f"{len(rasters)} rasters); keep exactly one source kind"
        )
    if rasters:
        return GeoTiffSource(rasters, **options)
    found = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
    raise ValueError(
        f"aerial folder {path} holds no tiles.json, *.mbtiles or GeoTIFF files (found: {found})"
    )
