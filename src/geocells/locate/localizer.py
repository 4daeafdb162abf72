"""The public inference API: where was this photo taken?

```python
from geocells.locate import Localizer
localizer = Localizer.load("db/")          # device="auto": cuda when available
for prediction in localizer.locate(["photo.jpg"], top_k=5)[0]:
    print(prediction.lat, prediction.lon, prediction.confidence)
```

``locate`` returns one ``ImageResult`` per image (``geocells.locate.record``): an image
that cannot be read carries its ``error`` and the others are still located
(``errors="raise"`` raises instead). A database is self-contained: ``Localizer.load``
reads the model from ``DB/model/``, κ and the confidence model from ``DB/meta.json``
(+ ``DB/confidence.npy``), and the compressed index from ``DB/index.faiss`` when the
database has one. A remote database (``geocells export milvus --out``) is searched in
its Milvus collection through the same interface.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geocells.data import load_image
from geocells.data.images import ImageLoadError
from geocells.db.store import RECALIBRATE, Database, DatabaseError
from geocells.geo import cell_to_latlng, cell_to_token
from geocells.io import sha256_file
from geocells.locate.record import ImageResult, Prediction, exif_position
from geocells.models import GeoModel, load_model
from geocells.models.device import batch_size_for, resolve_device
from geocells.models.embed import encode_views, panorama_views
from geocells.scoring.confidence import (
    REFERENCE_FILE,
    ConfidenceModel,
    aspect_ratios,
    typicality,
)
from geocells.search.index_file import open_searcher
from geocells.search.searcher import Searcher

if TYPE_CHECKING:
    from PIL import Image

    ImageInput = str | Path | Image.Image | np.ndarray

log = logging.getLogger(__name__)

ERRORS = ("report", "raise")
# Candidates searched per query whatever top_k is: the confidence model looks at the
# top-1/top-2 margin.
MIN_SEARCHED = 2


class Localizer:
    """Ground encoder + cell-code database + search: images in, ranked cells out."""

    def __init__(
        self,
        database: Database,
        model: GeoModel,
        searcher: Searcher,
        confidence: ConfidenceModel | None,
        batch_size: int = 32,
        reference: np.ndarray | None = None,
    ) -> None:
        self.database = database
        self.model = model
        self.searcher = searcher
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.confidence = confidence
        self.reference = reference  # val embeddings [R, D] of the confidence's typicality
        self.batch_size = batch_size

    @classmethod
    def load(
        cls,
        db: str | Path,
        backend: str = "auto",
        device: str = "auto",
        batch_size: int = 0,
        warm: str = "auto",
    ) -> Localizer:
        """Open database ``db`` with its own model; ``backend``: auto | exact | ivfpq
        (a remote database: auto | milvus);
        ``device``: auto (cuda when available, else cpu) | cpu | cuda[:N], bf16 autocast on
        cuda; ``batch_size`` images per encoder call (0: 32 on the CPU, 256 on CUDA);
        ``warm``: how a saved IVF-PQ index's refine file enters the page cache: auto | load
        (read it all now) | query (prefetch each search's rows) | off
        (``SQ8Refiner.warm``)."""

        database = Database.open(db)
        checkpoint = database.model_path
        if not checkpoint.is_file():
            raise DatabaseError(checkpoint, "the database's model copy is missing")
        if sha256_file(checkpoint) != database.meta.model_sha256:
            raise DatabaseError(checkpoint, "does not match the model the database was built with")
        target = resolve_device(device)
        model = load_model(checkpoint, device=target)
        searcher = open_searcher(database, backend, warm)
        confidence, reference = None, None
        if database.meta.confidence is not None:
            confidence, reference = _confidence_model(database)
        else:
            log.warning("database %s is not calibrated: confidence is NaN", database.path)
        batch_size = batch_size_for(target, batch_size)
        return cls(database, model, searcher, confidence, batch_size, reference)

    def embed(self, images: Sequence[ImageInput], panorama: bool = False) -> np.ndarray:
        """Ground embeddings ``float32 [B, D]`` of paths, PIL images or uint8 HxWx3 arrays.

        ``panorama=True``: the images are north-aligned equirectangular panoramas (width =
        2 x height); each is embedded as the mean of 4 level 90° crops (N, E, S, W), so
        its score against a cell is the mean of the crops' scores.
        """
        return self._encode([self._prepare(image, panorama)[0] for image in images], panorama)

    def _prepare(self, image: ImageInput, panorama: bool) -> tuple[np.ndarray, float]:
        """Load and check one image -> (uint8 [S, S, 3] (a panorama: its crops side by
        side), width / height (NaN for a panorama: its crops are views)). Raises
        ``ImageLoadError``/``OSError``/``ValueError`` naming what is wrong."""
        loaded = load_image(image) if isinstance(image, str | Path) else image
        if not panorama:
            shape = float(aspect_ratios([loaded])[0]) if _has_size(loaded) else np.nan
            return self.model.ground.resize(loaded), shape
        # perspective_crop refuses an image that is not 2:1 (ImageLoadError).
        size = self.model.ground.input_size
        return panorama_views(np.asarray(loaded), 0.0, size), np.nan

    def _encode(self, prepared: list[np.ndarray], panorama: bool) -> np.ndarray:
        """Embeddings ``[B, D]`` of ``_prepare`` outputs."""
        encoder = self.model.ground
        if not panorama:
            return encoder.encode(prepared, batch_size=self.batch_size)
        return encode_views(encoder.encode, encoder.input_size)(prepared, self.batch_size)

    def search(
        self, queries: np.ndarray, top_k: int = 5, aspect: np.ndarray | None = None
    ) -> list[list[Prediction]]:
        """Ranked predictions for query embeddings ``[Q, D]``; ``aspect [Q]``: the images'
        width / height when known (the confidence caps shapes the val set never had)."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        queries = np.asarray(queries, np.float32)
        scores, rows = self.nearest_cells(queries, max(top_k, MIN_SEARCHED))
        return self.predictions(scores, rows, top_k, queries, aspect)

    def nearest_cells(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The one place the cell codes are searched: ``(scores, rows) [Q, k]``, best first,
        row -1 where fewer than ``k`` cells were found."""
        return self.searcher.search(queries, k)

    def locate(
        self,
        images: Sequence[ImageInput],
        top_k: int = 5,
        panorama: bool = False,
        errors: str = "report",
    ) -> list[ImageResult]:
        """For each image its ``top_k`` most likely cells, best first, as an ``ImageResult``
        (``panorama``: see ``embed``). An image that cannot be loaded or embedded gets its
        ``error`` and the others are located (``errors="report"``); ``errors="raise"``
        raises the first such error instead."""
        if errors not in ERRORS:
            raise ValueError(f"errors must be one of {ERRORS}, got {errors!r}")
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)  # a [B, H, W, 3] stack
        elif isinstance(images, str | Path | np.ndarray) or hasattr(images, "convert"):
            images = [images]  # one image given on its own
        results: list[ImageResult] = []
        for start in range(0, len(images), self.batch_size):
            batch = list(images[start : start + self.batch_size])
            prepared, aspect, failed = {}, {}, {}
            for i, image in enumerate(batch):
                try:
                    prepared[i], aspect[i] = self._prepare(image, panorama)
                except (ImageLoadError, OSError, ValueError) as err:
                    if errors == "raise":
                        raise
                    failed[i] = getattr(err, "reason", None) or str(err)
                    log.warning("locate: %s: %s", _name(image, start + i), failed[i])
            embeddings = self._encode(list(prepared.values()), panorama)
            shapes = np.array(list(aspect.values()))
            ranked = iter(self.search(embeddings, top_k, shapes) if prepared else [])
            for i, image in enumerate(batch):
                name = _name(image, start + i)
                if i in failed:
                    results.append(ImageResult(start + i, name, error=failed[i]))
                else:
                    position = exif_position(image) or (None, None)
                    results.append(ImageResult(start + i, name, next(ranked), None, *position))
        return results

    def predictions(
        self,
        scores: np.ndarray,
        rows: np.ndarray,
        top_k: int,
        queries: np.ndarray | None = None,
        aspect: np.ndarray | None = None,
    ) -> list[list[Prediction]]:
        """Predictions from search output ``scores, rows [Q, k]`` (k >= 2 for confidence);
        ``queries [Q, D]`` and the images' ``aspect [Q]``, when given, let the confidence
        recognise inputs unlike the val images (``geocells.scoring.confidence``)."""

        found = rows >= 0
        cells = np.asarray(self.database.cells)[np.where(found, rows, 0)]
        lat, lon = cell_to_latlng(cells.reshape(-1))
        tokens = cell_to_token(cells.reshape(-1))
        shape = rows.shape
        lat, lon, tokens = lat.reshape(shape), lon.reshape(shape), tokens.reshape(shape)
        confidence = np.full(shape, np.nan)
        # Per query: one with fewer than two hits has no margin, the others still do.
        scored = found[:, 1] if shape[1] >= 2 else np.zeros(shape[0], bool)
        if self.confidence is not None and scored.any():
            near = None
            if queries is not None and self.reference is not None:
                near = typicality(queries[scored], self.reference, self.confidence.neighbours)
            shapes = None if aspect is None else np.asarray(aspect, np.float64)[scored]
            confidence[scored] = self.confidence.predict(scores[scored], near, shapes)
        return [
            [
                Prediction(
                    r + 1,
                    float(lat[q, r]),
                    float(lon[q, r]),
                    str(tokens[q, r]),
                    float(scores[q, r]),
                    float(confidence[q, r]),
                )
                for r in range(min(top_k, shape[1]))
                if found[q, r]
            ]
            for q in range(shape[0])
        ]


def _has_size(image: object) -> bool:
    """Whether ``image`` is a PIL image or an array with a height and a width."""
    return hasattr(image, "convert") or (isinstance(image, np.ndarray) and image.ndim >= 2)


def _name(image: object, index: int) -> str:
    """How an input is named in results: its path, else ``<image N>``."""
    return str(image) if isinstance(image, str | Path) else f"<image {index}>"


def _confidence_model(database: Database) -> tuple[ConfidenceModel, np.ndarray]:
    """The confidence model of ``meta.json`` and its val embeddings (``confidence.npy``);
    ``DatabaseError`` naming the file when one is missing or malformed."""
    try:
        model = ConfidenceModel.from_dict(database.meta.confidence)
    except (KeyError, TypeError, ValueError) as err:
        file = database.path / "meta.json"
        raise DatabaseError(file, f"malformed confidence model ({err})", RECALIBRATE) from None
    file = database.path / REFERENCE_FILE
    try:
        reference = np.load(file, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError, EOFError) as err:
        raise DatabaseError(file, f"unreadable confidence reference ({err})", RECALIBRATE) from None
    if reference.ndim != 2 or reference.shape[1] != database.dim or len(reference) < 2:
        raise DatabaseError(
            file, f"confidence reference of shape {reference.shape}, want [R>=2, {database.dim}]",
            RECALIBRATE,
        )  # fmt: skip
    return model, reference
