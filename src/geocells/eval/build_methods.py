"""Assemble the compared methods from an opened database, its model and the dataset."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from geocells.eval.histogram import aerial_cell_histograms, histogram_scorer
from geocells.eval.methods import (
    MethodDatabase,
    cell_code_methods,
    ground_retrieval_method,
    histogram_method,
)
from geocells.io import atomic_write

logger = logging.getLogger(__name__)


def prototype_matrix(model) -> tuple[np.ndarray, np.ndarray]:
    """The model's L2-normalised level-Lp prototypes: ``(cells uint64 [P], float32 [P, D])``."""
    table = model.prototypes
    vectors = table.normalized()
    if hasattr(vectors, "detach"):
        vectors = vectors.detach().cpu().numpy()
    return np.asarray(table.cells, dtype=np.uint64), np.asarray(vectors, dtype=np.float32)


def cell_histograms(database, data, cache: Path, px: int, progress: bool) -> np.ndarray:
    """Colour histograms of every database cell's aerial tile (cached in ``cache``)."""
    from geocells.geo import cell_to_latlng

    path = cache / f"cell_histograms_{px}px.npy"
    if path.is_file():
        histograms = np.load(path)
        if histograms.shape[0] == len(database):
            return histograms
    lat, lon = cell_to_latlng(np.asarray(database.cells, dtype=np.uint64))
    histograms = aerial_cell_histograms(
        data.aerial, lat, lon, database.meta.tile_size_m, px, progress=progress
    )
    with atomic_write(path) as partial:
        np.save(partial, histograms)
    return histograms


def build_methods(database, model, data, train, options, cache: Path) -> list[MethodDatabase]:
    """Prototype-only (Lp, Lc), aerial-only, hybrid κ=1, hybrid κ, and the two baselines."""
    proto_cells, proto_vectors = prototype_matrix(model)
    methods = cell_code_methods(
        database.cells, database.aerial, database.proto, database.kappa, proto_cells, proto_vectors
    )
    if options.ground_retrieval and len(train.lat) == 0:
        logger.warning("no training ground images: leaving out the ground-retrieval baseline")
    elif options.ground_retrieval:
        methods.append(ground_retrieval_method(train.embeddings, train.lat, train.lon))
    if options.colour_histogram:
        histograms = cell_histograms(database, data, cache, options.histogram_px, options.progress)
        methods.append(histogram_method(database.cells, histograms, histogram_scorer(histograms)))
    return methods
