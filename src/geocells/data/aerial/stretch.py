"""High-bit-depth orthophotos (16-bit, as national mapping agencies deliver them) -> 8 bit.

A GeoTIFF with ``uint16`` or ``int16`` bands is mapped linearly to 0–255 per band:
``out = clip((value - low) / (high - low), 0, 1) * 255``. Where ``low``/``high`` come from:

1. ``aerial/scale.json`` beside the rasters, if present: ``{"low": 0, "high": 4095}``
   (one pair for every band, e.g. 12-bit data in a 16-bit container) or per band
   ``{"low": [120, 150, 90], "high": [3800, 3600, 3300]}``; the ``--aerial-scale`` of
   this project is this file, so that every stage (train, index, locate, serve) reads the
   same stretch;
2. otherwise the **2nd and 98th percentiles of each band** over all 16-bit files of the
   source (valid pixels of a decimated read, at most ``SAMPLE_PX`` on a side per file):
   one stretch for the whole mosaic, so tiles join without seams.

The stretch in use is logged once when the source opens (``GeoTiffSource.stretch``).
8-bit files are never stretched.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

HIGH_DEPTH_DTYPES = ("uint16", "int16")
SCALE_FILE = "scale.json"
PERCENTILES = (2.0, 98.0)
SAMPLE_PX = 512


@dataclass(frozen=True)
class Stretch:
    """Per-band linear map ``low -> 0``, ``high -> 255`` (``float64[bands]`` each)."""

    low: np.ndarray
    high: np.ndarray
    origin: str  # "scale.json" or "percentiles 2-98"

    def apply(self, bands: np.ndarray) -> np.ndarray:
        """``[B, H, W]`` high-bit-depth values -> uint8 (a one-pair stretch serves every
        band); row blocks bound the float temporaries of a whole cached file."""
        count, height, width = bands.shape
        low = np.resize(self.low, count).astype(np.float32)[:, None, None]
        high = np.resize(self.high, count).astype(np.float32)[:, None, None]
        factor = 255.0 / np.maximum(high - low, np.float32(1e-9))
        out = np.empty(bands.shape, dtype=np.uint8)
        rows = max(1, (1 << 22) // max(count * width, 1))
        for start in range(0, height, rows):
            block = (bands[:, start : start + rows].astype(np.float32) - low) * factor
            out[:, start : start + rows] = np.rint(np.clip(block, 0.0, 255.0))
        return out

    def describe(self) -> str:
        """``low..high`` per band and where they came from, for logs and messages."""
        pairs = ", ".join(f"{lo:g}..{hi:g}" for lo, hi in zip(self.low, self.high, strict=True))
        return f"{pairs} ({self.origin})"


def read_scale_file(path: Path) -> Stretch:
    """A ``scale.json`` (see the module docstring) -> Stretch; ValueError naming the file."""
    try:
        data = json.loads(path.read_text())
        low = np.atleast_1d(np.asarray(data["low"], dtype=np.float64))
        high = np.atleast_1d(np.asarray(data["high"], dtype=np.float64))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f'{path}: want {{"low": L, "high": H}} (numbers, or one per band): {err}'
        ) from None
    if low.shape != high.shape or low.ndim != 1 or not np.all(np.isfinite([*low, *high])):
        raise ValueError(f"{path}: low and high must be finite and of the same length")
    if np.any(high <= low):
        raise ValueError(f"{path}: every high must be above its low (got {low} / {high})")
    return Stretch(low, high, str(path.name))


def percentile_stretch(samples: list[np.ndarray]) -> Stretch:
    """Stretch from ``[N, B]`` valid pixel values of every file (``PERCENTILES``)."""
    found = [values for values in samples if len(values)]
    if not found:
        raise ValueError("16-bit aerial rasters without a single valid pixel to stretch from")
    low, high = np.percentile(np.concatenate(found), PERCENTILES, axis=0)
    high = np.maximum(high, low + 1)  # a constant band maps to black instead of dividing by 0
    return Stretch(low, high, f"percentiles {PERCENTILES[0]:g}-{PERCENTILES[1]:g}")


def sample_values(dataset, indexes: list[int], has_mask: bool) -> np.ndarray:
    """``[N, B]`` valid pixel values of a decimated read (at most ``SAMPLE_PX`` a side)."""
    from rasterio.enums import Resampling

    factor = max(1, -(-max(dataset.width, dataset.height) // SAMPLE_PX))
    shape = (max(dataset.height // factor, 1), max(dataset.width // factor, 1))
    bands = dataset.read(indexes, out_shape=(len(indexes), *shape), resampling=Resampling.nearest)
    values = bands.reshape(len(indexes), -1).T
    if has_mask:
        mask = dataset.dataset_mask(out_shape=shape, resampling=Resampling.nearest) > 0
        values = values[mask.reshape(-1)]
    return values
