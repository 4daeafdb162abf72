"""Aerial imagery sources: ``open_aerial(path)`` -> an ``AerialSource`` with ``crop()``.

Backends: GeoTIFF/COG files in any CRS (one or a mosaic), an XYZ tile folder (with
``tiles.json``, gdal2tiles' ``tilemapresource.xml``, or neither), an MBTiles file, or a
set of centred tiles listed in ``tileset.json`` (VIGOR's satellite images). Crop
conventions (north-up, rotation sign, pixel-is-area, coverage) are in
``geocells.data.aerial.base``.
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
    no_coverage: tuple[type[Exception], ...] = (OutOfCoverageError,),
) -> tuple[np.ndarray, np.ndarray]:
    """Crops at many points -> (``uint8[N, px, px, 3]``, ``covered bool[N]``); a point
    outside coverage (``source.crop`` raising one of ``no_coverage``) gets a black crop and
    ``covered`` False instead of an error. ``source``: anything with ``AerialSource.crop``."""
    lat, lon = np.atleast_1d(np.asarray(lat, float)), np.atleast_1d(np.asarray(lon, float))
    rotations = np.broadcast_to(np.asarray(rotation_deg, float), lat.shape)
    crops = np.zeros((len(lat), px, px, 3), dtype=np.uint8)
    covered = np.zeros(len(lat), dtype=bool)
    for i in range(len(lat)):
        try:
            crops[i] = source.crop(lat[i], lon[i], size_m, px, rotations[i])
            covered[i] = True
        except no_coverage:
            pass  # reported through `covered`
    return crops, covered


def open_aerial(path: str | Path, **options) -> AerialSource:
    """Open an aerial source from a file or folder, dispatching on what is there.

    A ``.tif``/``.tiff``/``.vrt`` file, an ``.mbtiles`` file, a ``tiles.json`` or a
    ``tileset.json`` file open that backend. A folder with ``tileset.json`` is a centred
    tile set; with ``tiles.json`` or ``tilemapresource.xml`` an XYZ folder; otherwise a
    folder with exactly one ``*.mbtiles`` is that file; otherwise its GeoTIFFs (not
    recursive) form a mosaic (16-bit ones stretched as ``scale.json`` beside them says, or
    by per-band percentiles: ``geocells.data.aerial.stretch``); a folder of numeric
    ``{z}`` sub-folders only is an XYZ folder with inferred metadata (other files, e.g.
    gdal2tiles viewers, are ignored).
    ``options`` go to the backend (``max_cached_bytes``, ``cache_tiles``).
    """
    from geocells.data.aerial.geotiff import GeoTiffSource
    from geocells.data.aerial.stretch import SCALE_FILE
    from geocells.data.aerial.tiles import TMS_FILE, MBTilesSource, XYZTileSource
    from geocells.data.aerial.tileset import TILESET_FILE, CentredTileSource

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"aerial source not found: {path}")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in GEOTIFF_SUFFIXES:
            return GeoTiffSource([path], scale_file=path.parent / SCALE_FILE, **options)
        if suffix == ".mbtiles":
            return MBTilesSource(path, **options)
        if path.name in ("tiles.json", TMS_FILE):
            return XYZTileSource(path.parent, **options)
        if path.name == TILESET_FILE:
            return CentredTileSource(path.parent, **_tile_options(options))
        raise ValueError(
            f"aerial source {path}: unsupported file type {suffix!r} "
            "(want .tif/.tiff/.vrt, .mbtiles, or a tiles.json)"
        )
    if (path / TILESET_FILE).is_file():
        return CentredTileSource(path, **_tile_options(options))
    if (path / "tiles.json").is_file() or (path / TMS_FILE).is_file():
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
        return GeoTiffSource(rasters, scale_file=path / SCALE_FILE, **options)
    entries = list(path.iterdir())
    if any(p.is_dir() and p.name.isdigit() for p in entries):
        return XYZTileSource(path, **options)
    found = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
    raise ValueError(
        f"aerial folder {path} holds no tileset.json, tiles.json, tilemapresource.xml, "
        f"*.mbtiles, GeoTIFF files or {{z}}/{{x}}/{{y}} folders (found: {found})"
    )


def _tile_options(options: dict) -> dict:
    """The options a centred tile set takes (the GeoTIFF ones do not apply)."""
    return {k: v for k, v in options.items() if k == "cache_tiles"}
