"""Land/sea lookup from the 1 km GLOBE mask that the ``global-land-mask`` package ships.

Importing ``global_land_mask`` inflates the whole 21600 x 43200 mask (~1 GB). Here the
compressed file is streamed row by row and only the crop a region needs is kept.
"""

from __future__ import annotations

import functools
import zipfile
from importlib import util
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

_ROWS, _COLS = 21600, 43200
_STEP = 1 / 120  # degrees per mask pixel; row 0 is lat 90, column 0 is lon -180


def _mask_file() -> Path:
    spec = util.find_spec("global_land_mask")
    if spec is None or spec.origin is None:
        raise OSError("land_only needs the 'global-land-mask' package (pip install it)")
    return Path(spec.origin).parent / "globe_combined_mask_compressed.npz"


@functools.lru_cache(maxsize=4)
def _ocean_crop(row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
    """Rows row0..row1-1, columns col0..col1-1 of the ocean mask (True = ocean)."""
    with zipfile.ZipFile(_mask_file()) as archive, archive.open("mask.npy") as stream:
        version = npy_format.read_magic(stream)
        header = (
            npy_format.read_array_header_1_0
            if version == (1, 0)
            else npy_format.read_array_header_2_0
        )(stream)
        if header[0] != (_ROWS, _COLS) or header[1] or header[2] != np.bool_:
            raise OSError(f"unexpected land mask layout {header} in {_mask_file()}")
        crop = np.empty((row1 - row0, col1 - col0), bool)
        block = 512
        for start in range(0, row1, block):
            rows = min(block, row1 - start)
            data = np.frombuffer(stream.read(rows * _COLS), bool).reshape(rows, _COLS)
            lo, hi = max(start, row0), start + rows
            if hi > lo:
                crop[lo - row0 : hi - row0] = data[lo - start :, col0:col1]
    return crop


def _row(lat) -> np.ndarray:
    return np.clip(((90.0 - np.asarray(lat)) / _STEP).astype(np.int64), 0, _ROWS - 1)


def _col(lon) -> np.ndarray:
    return np.clip(((np.asarray(lon) + 180.0) / _STEP).astype(np.int64), 0, _COLS - 1)


class LandMask:
    """Land lookup for points within ``bounds`` = (south, west, north, east), plus a margin."""

    def __init__(self, bounds: tuple[float, float, float, float], margin_deg: float = 0.5):
        south, west, north, east = bounds
        self.row0 = int(_row(min(north + margin_deg, 90.0)))
        self.col0 = int(_col(max(west - margin_deg, -180.0)))
        row1 = int(_row(max(south - margin_deg, -90.0))) + 1
        col1 = int(_col(min(east + margin_deg, 180.0))) + 1
        self._ocean = _ocean_crop(self.row0, row1, self.col0, col1)
        self._land_sums = None

    def classify_boxes(self, south, west, north, east) -> tuple[np.ndarray, np.ndarray]:
        """(all land, all sea) per lat/lon box, judged on mask pixels 1 pixel beyond it."""
        if self._land_sums is None:  # summed-area table of land pixels, zero-padded
            land = (~self._ocean).astype(np.int32)
            self._land_sums = np.pad(land.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        rows, cols = self._ocean.shape
        top = np.clip(_row(north) - 1 - self.row0, 0, rows - 1)
        bottom = np.clip(_row(south) + 1 - self.row0, 0, rows - 1)
        left = np.clip(_col(west) - 1 - self.col0, 0, cols - 1)
        right = np.clip(_col(east) + 1 - self.col0, 0, cols - 1)
        sums = self._land_sums
        land = (
            sums[bottom + 1, right + 1]
            - sums[top, right + 1]
            - sums[bottom + 1, left]
            + sums[top, left]
        )
        pixels = (bottom - top + 1) * (right - left + 1)
        return land == pixels, land == 0

    def is_land(self, lat, lon) -> np.ndarray:
        """Whether points (degrees) are on land (most lakes count as land): bool[N]."""
        rows, cols = _row(lat) - self.row0, _col(lon) - self.col0
        outside = (rows < 0) | (rows >= self._ocean.shape[0])
        outside |= (cols < 0) | (cols >= self._ocean.shape[1])
        if outside.any():
            k = int(np.flatnonzero(outside.ravel())[0])
            raise ValueError(
                f"point {k} ({np.ravel(lat)[k]}, {np.ravel(lon)[k]}) is outside the land-mask crop"
            )
        return ~self._ocean[rows, cols]
