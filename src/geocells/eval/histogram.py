"""The naive cross-view baseline: colour-histogram similarity between a query and aerial tiles.

A joint RGB histogram (``bins`` per channel), L1-normalised and square-rooted so that the
dot product of two descriptors is the Bhattacharyya coefficient of the histograms. It
knows nothing about geometry; on a non-trivial world it should localise almost nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_BINS = 8


def colour_histograms(images: Iterable[np.ndarray], bins: int = DEFAULT_BINS) -> np.ndarray:
    """uint8 images ``[H, W, 3]`` -> float32 ``[B, bins**3]`` square-rooted L1-normalised."""
    if not 2 <= bins <= 64:
        raise ValueError(f"bins must be in 2..64, got {bins}")
    rows = []
    for index, image in enumerate(images):
        pixels = np.asarray(image)
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise ValueError(
                f"image {index}: expected uint8 [H, W, 3], got {pixels.dtype} {pixels.shape}"
            )
        quantised = (pixels.reshape(-1, 3).astype(np.int64) * bins) // 256
        codes = (quantised[:, 0] * bins + quantised[:, 1]) * bins + quantised[:, 2]
        counts = np.bincount(codes, minlength=bins**3).astype(np.float32)
        rows.append(np.sqrt(counts / max(counts.sum(), 1.0)))
    if not rows:
        return np.zeros((0, bins**3), dtype=np.float32)
    return np.stack(rows)


def histogram_scorer(cell_histograms: np.ndarray) -> Callable[..., np.ndarray]:
    """``score(query_histograms [q, F], rows=all) -> [q, len(rows)]`` Bhattacharyya
    coefficients (of square-rooted, unit-norm histograms)."""
    database = np.asarray(cell_histograms, dtype=np.float32)

    def score(query_histograms: np.ndarray, rows=slice(None)) -> np.ndarray:
        return np.asarray(query_histograms, dtype=np.float32) @ database[rows].T

    return score


HISTOGRAM_BLOCK = 1024  # tiles cropped at a time (64 px: 12 MB)


def aerial_cell_histograms(
    aerial_source,
    cell_lat: np.ndarray,
    cell_lon: np.ndarray,
    tile_m: float,
    px: int = 64,
    bins: int = DEFAULT_BINS,
    progress: bool = True,
) -> np.ndarray:
    """Histogram of the aerial tile (``tile_m`` wide, ``px`` pixels) centred on every cell
    (zeros where there is no imagery: such a cell can never match)."""
    from tqdm import tqdm

    from geocells.data.aerial import crop_many

    out = np.zeros((cell_lat.shape[0], bins**3), dtype=np.float32)
    failed = 0
    starts = range(0, len(out), HISTOGRAM_BLOCK)
    for start in tqdm(starts, desc="colour histograms", disable=None if progress else True):
        rows = slice(start, start + HISTOGRAM_BLOCK)
        tiles, covered = crop_many(aerial_source, cell_lat[rows], cell_lon[rows], tile_m, px)
        failed += int((~covered).sum())
        if covered.any():
            out[rows][covered] = colour_histograms(list(tiles[covered]), bins)
    if failed:
        logger.warning("colour histograms: %d of %d cells had no aerial tile", failed, len(out))
    return out
