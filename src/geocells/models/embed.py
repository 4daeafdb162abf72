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
    bar = tqdm(total=len(items), desc=desc, unit="img", disable=not progress)
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


def embed_files(
    encoder: Any,
    paths: Sequence[str | Path],
    batch_size: int = 64,
    extra: Callable[[list[Any]], np.ndarray] | None = None,
    progress: bool = False,
    desc: str = "embed",
) -> Embedded:
    """Embed image files with ``encoder``; unreadable files are reported, not fatal."""
    from geocells.data.images import ImageLoadError, load_image

    return embed_items(
        encoder.encode,
        paths,
        lambda path: np.asarray(load_image(path)),
        encoder.dim,
        batch_size,
        skip=(ImageLoadError, OSError),
        extra=extra,
        progress=progress,
        desc=desc,
    )
