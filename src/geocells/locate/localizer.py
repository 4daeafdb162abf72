"""The public inference API: where was this photo taken?

```python
from geocells.locate import Localizer
localizer = Localizer.load("db/")
for prediction in localizer.locate(["photo.jpg"], top_k=5)[0]:
    print(prediction.lat, prediction.lon, prediction.confidence)
```

A database is self-contained: ``Localizer.load`` reads the model from ``DB/model/``,
κ and the confidence model from ``DB/meta.json``, and the compressed index from
``DB/index.faiss`` when the database has one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geocells.calibrate.confidence import ConfidenceModel
from geocells.data import load_image
from geocells.db.store import RECALIBRATE, Database, DatabaseError
from geocells.geo import cell_to_latlng, cell_to_token
from geocells.io import sha256_file
from geocells.models import GeoModel, load_model
from geocells.models.embed import encode_views, panorama_views
from geocells.search.index_file import open_searcher
from geocells.search.ivfpq import CellSearcher

if TYPE_CHECKING:
    from PIL import Image

    ImageInput = str | Path | Image.Image | np.ndarray

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """One candidate location: the centre of a database cell."""

    lat: float
    lon: float
    token: str  # S2 token of the cell
    score: float  # sim_A + κ · sim_P
    confidence: float  # P(within 100 m), calibrated on val; NaN if the DB is not calibrated

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "lat": self.lat,
            "lon": self.lon,
            "token": self.token,
            "score": self.score,
            "confidence": None if np.isnan(self.confidence) else self.confidence,
        }


class Localizer:
    """Ground encoder + cell-code database + search: images in, ranked cells out."""

    def __init__(
        self,
        database: Database,
        model: GeoModel,
        searcher: CellSearcher,
        confidence: ConfidenceModel | None,
        batch_size: int = 32,
    ) -> None:
        self.database = database
        self.model = model
        self.searcher = searcher
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.confidence = confidence
        self.batch_size = batch_size

    @classmethod
    def load(
        cls, db: str | Path, backend: str = "auto", device: str = "cpu", batch_size: int = 32
    ) -> Localizer:
        """Open database ``db`` with its own model; ``backend``: auto | exact | ivfpq."""

        database = Database.open(db)
        checkpoint = database.model_path
        if not checkpoint.is_file():
            raise DatabaseError(checkpoint, "the database's model copy is missing")
        if sha256_file(checkpoint) != database.meta.model_sha256:
            raise DatabaseError(checkpoint, "does not match the model the database was built with")
        model = load_model(checkpoint, device=device)
        searcher = open_searcher(database, backend)
        confidence = None
        if database.meta.confidence is not None:
            confidence = _confidence_model(database)
        else:
            log.warning("database %s is not calibrated: confidence is NaN", database.path)
        return cls(database, model, searcher, confidence, batch_size)

    def embed(self, images: Sequence[ImageInput], panorama: bool = False) -> np.ndarray:
        """Ground embeddings ``float32 [B, D]`` of paths, PIL images or uint8 HxWx3 arrays.

        ``panorama=True``: the images are north-aligned equirectangular panoramas (width =
        2 x height); each is embedded as the mean of 4 level 90° crops (N, E, S, W), so
        its score against a cell is the mean of the crops' scores.
        """
        loaded = [load_image(image) if isinstance(image, str | Path) else image for image in images]
        if not panorama:
            return self.model.ground.encode(loaded, batch_size=self.batch_size)
        size = self.model.ground.input_size
        # perspective_crop refuses an image that is not 2:1 (ImageLoadError).
        items = [panorama_views(np.asarray(image), 0.0, size) for image in loaded]
        return encode_views(self.model.ground.encode, size)(items, self.batch_size)

    def search(self, queries: np.ndarray, top_k: int = 5) -> list[list[Prediction]]:
        """Ranked predictions for query embeddings ``[Q, D]``."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        # The confidence model looks at the top-2 margin, so search at least two.
        scores, rows = self.searcher.search(np.asarray(queries, np.float32), max(top_k, 2))
        return self.predictions(scores, rows, top_k)

    def locate(
        self, images: Sequence[ImageInput], top_k: int = 5, panorama: bool = False
    ) -> list[list[Prediction]]:
        """For each image, its ``top_k`` most likely cells, best first (``panorama``: see
        ``embed``)."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)  # a [B, H, W, 3] stack
        elif isinstance(images, str | Path | np.ndarray) or hasattr(images, "convert"):
            images = [images]  # one image given on its own
        predictions: list[list[Prediction]] = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            predictions.extend(self.search(self.embed(batch, panorama), top_k))
        return predictions

    def predictions(
        self, scores: np.ndarray, rows: np.ndarray, top_k: int
    ) -> list[list[Prediction]]:
        """Predictions from search output ``scores, rows [Q, k]`` (k >= 2 for confidence)."""

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
            confidence[scored] = self.confidence.predict(scores[scored])
        return [
            [
                Prediction(
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


def _confidence_model(database: Database) -> ConfidenceModel:
    """The confidence model of ``meta.json``; ``DatabaseError`` when it is malformed."""
    try:
        return ConfidenceModel.from_dict(database.meta.confidence)
    except (KeyError, TypeError, ValueError) as err:
        file = database.path / "meta.json"
        raise DatabaseError(file, f"malformed confidence model ({err})", RECALIBRATE) from None
