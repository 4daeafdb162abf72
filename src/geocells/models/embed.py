"""Embed many images with an encoder: load, skip the unreadable, encode in batches.

The one loop behind eval's query embedding, calibration, the prototype refit and
``geocells locate``: every item that cannot be loaded is reported (index and reason) and
the rest of its batch goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class Embedded:
    """What ``embed_items`` made: embeddings of the items it could load, and the rest."""

    embeddings: np.ndarray  # float32 [K, D]
    kept: np.ndarray  # int64 [K]: positions in the input of the embedded items
    failures: list[tuple[int, str]] = field(default_factory=list)  # (position, reason)
    extra: np.ndarray | None = None  # per-item output of ``extra`` [K, ...], when given


def _reason(err: Exception) -> str:
    return getattr(err, "reason", None) or str(err)


def embed_items(
    encode: Callable[..., np.ndarray],
    items: Sequence[Any],
    load: Callable[[Any], Any],
    dim: int,
    batch_size: int = 64,
    skip: tuple[type[Exception], ...] = (OSError, ValueError),
    extra: Callable[[list[Any]], np.ndarray] | None = None,
    progress: bool = False,
    desc: str = "embed",
) -> Embedded:
    """Embed ``load(item)`` for every item, ``batch_size`` at a time.

    ``encode(images, batch_size=...) -> float32 [B, D]`` (an ``Encoder.encode``); an item
    whose ``load`` raises one of ``skip`` is left out and listed in ``failures``;
    ``extra(images)`` computes further per-image features of each batch (kept rows only).
    """
    from tqdm import tqdm

    vectors, extras, kept, failures = [], [], [], []
    bar = tqdm(total=len(items), desc=desc, unit="img", disable=None if progress else True)
    for start in range(0, len(items), batch_size):
        images = []
        for position in range(start, min(start + batch_size, len(items))):
            try:
                images.append(load(items[position]))
                kept.append(position)
            except skip as err:
                logger.debug("%s: skipping %s: %s", desc, items[position], _reason(err))
                failures.append((position, _reason(err)))
        if images:
            vectors.append(np.asarray(encode(images, batch_size=len(images)), np.float32))
            if extra is not None:
                extras.append(np.asarray(extra(images)))
        bar.update(min(batch_size, len(items) - start))
    bar.close()
    if failures:
        first, reason = failures[0]
        logger.warning(
            "%s: skipped %d of %d (first: %s: %s)", desc, len(failures), len(items),
            items[first], reason,
        )  # fmt: skip
    embeddings = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
    return Embedded(
        embeddings,
        np.asarray(kept, dtype=np.int64),
        failures,
        np.concatenate(extras) if extras else None,
    )


PANORAMA_CROPS = 4  # level 90° crops per panorama outside training (N, E, S, W)


class PanoramaViews(np.ndarray):
    """One panorama item: its level crops side by side, uint8 [S, k·S, 3]. Its embedding
    is the re-normalised mean of the k crop embeddings (the score of a query against it
    is then the mean of its scores against the crops)."""


def panorama_views(panorama: np.ndarray, heading: float, size: int) -> PanoramaViews:
    """The item of an equirectangular panorama uint8 [H, 2H, 3] whose centre column looks
    at compass ``heading``: its ``PANORAMA_CROPS`` level 90° crops of ``size`` px."""
    from geocells.data.panorama import fixed_crops

    crops = fixed_crops(panorama, heading, PANORAMA_CROPS, size)
    return np.concatenate(list(crops), axis=1).view(PanoramaViews)


def encode_views(encode: Callable[..., np.ndarray], size: int):
    """``encode`` for items that may be ``PanoramaViews``: crops in, one row per item."""

    def encode_items(images: list[Any], batch_size: int) -> np.ndarray:
        flat, counts = [], []
        for image in images:
            if isinstance(image, PanoramaViews):
                crops = [np.asarray(image[:, k : k + size]) for k in range(0, image.shape[1], size)]
            else:
                crops = [image]
            flat.extend(crops)
            counts.append(len(crops))
        vectors = np.asarray(encode(flat, batch_size=batch_size), np.float32)
        ends = np.cumsum(counts)
        means = np.stack([vectors[e - c : e].mean(0) for e, c in zip(ends, counts)])
        return means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)

    return encode_items


def embed_files(
    encoder: Any,
    paths: Sequence[str | Path],
    batch_size: int = 64,
    extra: Callable[[list[Any]], np.ndarray] | None = None,
    progress: bool = False,
    desc: str = "embed",
    fov: np.ndarray | None = None,
    heading: np.ndarray | None = None,
) -> Embedded:
    """Embed image files with ``encoder``; unreadable files are reported, not fatal.

    With manifest ``fov`` (and ``heading``) columns, ``fov = 360`` rows are panoramas:
    each is embedded as the mean of ``PANORAMA_CROPS`` level 90° crops (``extra`` sees
    the crops side by side).
    """
    from geocells.data.images import ImageLoadError, load_image
    from geocells.data.panorama import is_panorama, load_panorama

    panorama = np.zeros(len(paths), bool) if fov is None else is_panorama(fov)
    headings = np.zeros(len(paths)) if heading is None else np.nan_to_num(heading, nan=0.0)
    size = encoder.input_size
    items = [_File(path, bool(p), float(h)) for path, p, h in zip(paths, panorama, headings)]

    def load(item: _File):
        if item.panorama:
            return panorama_views(load_panorama(item.path), item.heading, size)
        return np.asarray(load_image(item.path))

    return embed_items(
        encode_views(encoder.encode, size) if panorama.any() else encoder.encode,
        items,
        load,
        encoder.dim,
        batch_size,
        skip=(ImageLoadError, OSError),
        extra=extra,
        progress=progress,
        desc=desc,
    )


@dataclass(frozen=True)
class _File:
    """An image file to embed; shown by its path in messages."""

    path: str | Path
    panorama: bool
    heading: float

    def __str__(self) -> str:
        return str(self.path)
