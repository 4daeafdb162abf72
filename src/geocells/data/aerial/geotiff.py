"""GeoTIFF / Cloud-Optimized GeoTIFF aerial source (rasterio): any CRS, one file or a mosaic.

Each file must be georeferenced (a CRS and a geotransform) with 8-bit bands, or 16-bit
(``uint16``/``int16``) bands mapped to 8 bit by a stated linear stretch (per-band 2nd–98th
percentiles of the mosaic, or ``aerial/scale.json``; ``geocells.data.aerial.stretch``):
3 or more bands are read as R, G, B (bands 1–3), one band as grey or through its colour
table.
No-data comes from the file's mask (nodata value, alpha band or internal mask). Files
whose decoded RGBA fits in the cache budget (``max_cached_bytes``, 4 bytes per pixel)
are read whole on first use and kept in memory with a lazily built power-of-two pyramid
(fast: training crops thousands of times a minute); larger files are read per crop
through windowed, decimated reads (GDAL uses COG overviews). In a mosaic, files are tried
in sorted path order and the first valid pixel wins; at most ``MAX_OPEN_FILES`` files are
open at once. Rasters are pixel-is-area (GDAL already shifts pixel-is-point geotransforms).
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geocells.data.aerial.base import (
    OutOfCoverageError,
    check_crop_args,
    crop_to_pixels,
    downsample2,
    footprint_box,
    metres_per_degree,
    pyramid_level,
    sample_bilinear,
    sample_with_pyramid,
    to_rgba,
)
from geocells.data.aerial.stretch import (
    HIGH_DEPTH_DTYPES,
    Stretch,
    percentile_stretch,
    read_scale_file,
    sample_values,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_CACHED_BYTES = 1_500_000_000
MAX_OPEN_FILES = 32


class _HandlePool:
    """Open rasterio datasets of this process, at most ``limit`` (a mosaic of thousands of
    files must not exhaust file descriptors); handles never cross a fork."""

    def __init__(self, limit: int = MAX_OPEN_FILES) -> None:
        self.limit = limit
        self._open: OrderedDict[Path, object] = OrderedDict()
        self._pid = os.getpid()

    def get(self, path: Path):
        """An open dataset for ``path`` (least recently used ones are closed)."""
        import rasterio

        if self._pid != os.getpid():  # forked: the parent's handles are not ours to use
            self._open, self._pid = OrderedDict(), os.getpid()
        if path in self._open:
            self._open.move_to_end(path)
            return self._open[path]
        while len(self._open) >= self.limit:
            self._open.popitem(last=False)[1].close()
        self._open[path] = rasterio.open(path)
        return self._open[path]

    def close(self, path: Path) -> None:
        """Close the handle of ``path`` if open."""
        if self._pid == os.getpid() and path in self._open:
            self._open.pop(path).close()


def _palette(dataset) -> np.ndarray | None:
    """``uint8[256, 3]`` colour table of a single-band palette raster, else None."""
    from rasterio.enums import ColorInterp

    if dataset.colorinterp[0] != ColorInterp.palette:
        return None
    table = np.zeros((256, 3), dtype=np.uint8)
    for index, colour in dataset.colormap(1).items():
        table[index] = colour[:3]
    return table


class _RasterFile:
    """One georeferenced raster: metadata now, pixels (cached or windowed) on demand."""

    def __init__(self, path: Path, handles: _HandlePool) -> None:
        import rasterio
        from rasterio.enums import MaskFlags
        from rasterio.warp import transform_bounds

        self.path = path
        try:
            dataset = rasterio.open(path)
        except rasterio.errors.RasterioIOError as err:
            raise OSError(f"cannot open aerial raster {path}: {err}") from err
        with dataset:
            if dataset.crs is None:
                raise ValueError(f"aerial raster {path} has no CRS (not georeferenced)")
            if dataset.transform.is_identity:
                raise ValueError(f"aerial raster {path} has no geotransform")
            dtypes = set(dataset.dtypes)
            if len(dtypes) > 1 or not dtypes <= {"uint8", *HIGH_DEPTH_DTYPES}:
                raise ValueError(
                    f"aerial raster {path} has bands of type {sorted(dtypes)}; 8-bit or "
                    "16-bit (uint16/int16) bands are read (convert others, e.g. "
                    "gdal_translate -ot Byte -scale)"
                )
            self.high_depth = dtypes <= set(HIGH_DEPTH_DTYPES)
            self.crs = dataset.crs
            self.width, self.height = dataset.width, dataset.height
            self.indexes = [1, 2, 3] if dataset.count >= 3 else [1]
            self.palette = _palette(dataset) if dataset.count == 1 and not self.high_depth else None
            self.inverse = ~dataset.transform
            self.has_mask = any(flags != [MaskFlags.all_valid] for flags in dataset.mask_flag_enums)
            west, south, east, north = transform_bounds(
                dataset.crs, "EPSG:4326", *dataset.bounds, densify_pts=21
            )
        self.bounds = (south, west, north, east)
        self.decoded_bytes = self.width * self.height * 4  # RGBA in memory
        self.cached = False
        self.stretch: Stretch | None = None  # set by GeoTiffSource for 16-bit files
        self._levels: list[np.ndarray] | None = None
        self._handles = handles
        self._pid: int | None = None
        self._transformer = None

    def _ensure_process(self) -> None:
        """(Re)open handles in this process: rasterio and PROJ handles do not survive fork."""
        if self._pid == os.getpid():
            return
        from pyproj import Transformer

        self._transformer = Transformer.from_crs("EPSG:4326", self.crs.to_wkt(), always_xy=True)
        self._pid = os.getpid()

    def to_pixels(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """WGS84 degrees -> continuous pixel coordinates (x = column, y = row)."""
        self._ensure_process()
        x_world, y_world = self._transformer.transform(np.asarray(lon), np.asarray(lat))
        a, b, c, d, e, f = self.inverse[:6]
        x_world, y_world = np.asarray(x_world), np.asarray(y_world)
        return a * x_world + b * y_world + c, d * x_world + e * y_world + f

    def contains(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Whether each point falls inside the raster extent (no-data not checked)."""
        x, y = self.to_pixels(lat, lon)
        return (x >= 0) & (x < self.width) & (y >= 0) & (y < self.height)

    def _read(self, window=None, out_shape=None) -> np.ndarray:
        """RGBA ``[h, w, 4]`` uint8 (alpha = validity) of a window, or of the whole file."""
        from rasterio.enums import Resampling

        dataset = self._handles.get(self.path)
        kwargs = {"window": window}
        if out_shape is not None:
            # palette indices cannot be averaged: pick, then look up the colours
            method = Resampling.nearest if self.palette is not None else Resampling.average
            kwargs.update(out_shape=(len(self.indexes), *out_shape), resampling=method)
        bands = dataset.read(self.indexes, **kwargs)
        if self.high_depth:
            bands = self.stretch.apply(bands)
        image = np.moveaxis(bands, 0, -1) if self.palette is None else self.palette[bands[0]]
        mask = None
        if self.has_mask:
            mask_kwargs = {"window": window}
            if out_shape is not None:
                mask_kwargs.update(out_shape=out_shape, resampling=Resampling.nearest)
            mask = dataset.dataset_mask(**mask_kwargs) > 0
        return to_rgba(image, mask)

    def load(self, levels: int = 1) -> list[np.ndarray]:
        """The in-memory RGBA pyramid, read on first use, with at least ``levels`` levels."""
        if self._levels is None:
            logger.debug("caching aerial raster %s in memory", self.path)
            self._levels = [self._read()]
            self._handles.close(self.path)  # the pixels live in memory now
        while len(self._levels) < levels and min(self._levels[-1].shape[:2]) >= 4:
            self._levels.append(downsample2(self._levels[-1]))
        return self._levels

    def sample(self, affine: np.ndarray, px: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The crop from this file (black + invalid outside it), or None if disjoint."""
        x_min, y_min, x_max, y_max = footprint_box(affine, px)
        if x_max <= 0 or y_max <= 0 or x_min >= self.width or y_min >= self.height:
            return None
        if self.cached:
            return sample_with_pyramid(self.load(), affine, px)
        return self._sample_window(affine, px, (x_min, y_min, x_max, y_max))

    def _sample_window(self, affine: np.ndarray, px: int, box) -> tuple[np.ndarray, np.ndarray]:
        """Windowed (and decimated, when the crop is coarser than the raster) read + sample."""
        from rasterio.windows import Window

        col0, row0 = max(math.floor(box[0]), 0), max(math.floor(box[1]), 0)
        col1, row1 = min(math.ceil(box[2]), self.width), min(math.ceil(box[3]), self.height)
        width, height = col1 - col0, row1 - row0
        factor = 2 ** pyramid_level(affine)
        out_shape = (max(math.ceil(height / factor), 1), max(math.ceil(width / factor), 1))
        image = self._read(Window(col0, row0, width, height), out_shape if factor > 1 else None)
        local = affine.copy()
        local[0, 2] -= col0
        local[1, 2] -= row0
        local[0] *= image.shape[1] / width
        local[1] *= image.shape[0] / height
        return sample_bilinear(image, local, px)


class GeoTiffSource:
    """Aerial crops from one or more GeoTIFF/COG files in any CRS (see the module docstring)."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        max_cached_bytes: int = DEFAULT_MAX_CACHED_BYTES,
        scale_file: str | Path | None = None,
    ) -> None:
        if not paths:
            raise ValueError("GeoTiffSource needs at least one raster file")
        self._handles = _HandlePool()
        self.files = [_RasterFile(Path(p), self._handles) for p in sorted(Path(p) for p in paths)]
        self.stretch = self._stretch(Path(scale_file) if scale_file else None)
        self._file_bounds = np.array([raster.bounds for raster in self.files])  # [F, 4]
        budget = max_cached_bytes
        for raster in self.files:
            raster.cached = raster.decoded_bytes <= budget
            budget -= raster.decoded_bytes if raster.cached else 0
        south, west, north, east = zip(*(raster.bounds for raster in self.files), strict=True)
        self.bounds = (min(south), min(west), max(north), max(east))

    def _stretch(self, scale_file: Path | None) -> Stretch | None:
        """The 16-bit files' stretch (``stretch`` module), logged; None without such files."""
        deep = [raster for raster in self.files if raster.high_depth]
        if not deep:
            return None
        if scale_file is not None and scale_file.is_file():
            stretch = read_scale_file(scale_file)
        else:
            samples = []
            for raster in deep:
                dataset = self._handles.get(raster.path)
                samples.append(sample_values(dataset, raster.indexes, raster.has_mask))
            stretch = percentile_stretch(samples)
        for raster in deep:
            raster.stretch = stretch
        logger.info(
            "%d 16-bit aerial raster(s) mapped to 8 bit per band: %s", len(deep), stretch.describe()
        )
        return stretch

    def __repr__(self) -> str:
        cached = sum(raster.cached for raster in self.files)
        return f"GeoTiffSource({len(self.files)} files, {cached} cached in memory)"

    def preload(self, levels: int = 3) -> None:
        """Read the cached files (and ``levels`` pyramid levels) now, e.g. before DataLoader
        workers fork, so that they share the pixels instead of each reading its own copy."""
        for raster in self.files:
            if raster.cached:
                raster.load(levels)

    def contains(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """``bool[N]``: whether each point is inside some raster's extent."""
        lat, lon = np.atleast_1d(np.asarray(lat, float)), np.atleast_1d(np.asarray(lon, float))
        order = np.argsort(lat, kind="stable")
        sorted_lat = lat[order]
        inside = np.zeros(lat.shape, dtype=bool)
        for raster, (south, west, north, east) in zip(self.files, self._file_bounds, strict=True):
            rows = order[
                np.searchsorted(sorted_lat, south) : np.searchsorted(sorted_lat, north, "right")
            ]
            rows = rows[(lon[rows] >= west) & (lon[rows] <= east) & ~inside[rows]]
            if len(rows):
                inside[rows] = raster.contains(lat[rows], lon[rows])
        return inside

    def crop(
        self, lat: float, lon: float, size_m: float, px: int, rotation_deg: float = 0.0
    ) -> np.ndarray:
        """``uint8[px, px, 3]`` crop, north-up at rotation 0 (conventions: aerial.base)."""
        check_crop_args(lat, lon, size_m, px)
        reach_lat, reach_lon = (size_m / math.sqrt(2) / m for m in metres_per_degree(lat))
        out = np.zeros((px, px, 3), dtype=np.uint8)
        filled = np.zeros((px, px), dtype=bool)
        south, west, north, east = self._file_bounds.T
        near = (lat - reach_lat <= north) & (lat + reach_lat >= south)
        near &= (lon - reach_lon <= east) & (lon + reach_lon >= west)
        for index in np.flatnonzero(near):
            raster = self.files[index]
            affine = crop_to_pixels(lat, lon, size_m, px, rotation_deg, raster.to_pixels)
            sampled = raster.sample(affine, px)
            if sampled is None:
                continue
            rgb, valid = sampled
            if not filled.any() and valid.all():
                return rgb  # the usual case: one file covers the whole crop
            take = valid & ~filled
            np.copyto(out, rgb, where=take[..., None])
            filled |= take
            if filled.all():
                break
        centre = (px - 1) // 2
        if not filled[centre, centre]:
            raise OutOfCoverageError(lat, lon, self.bounds, f"{len(self.files)} GeoTIFF file(s)")
        return out
