"""Assemble the compared methods from an opened database, its model and the dataset."""

from __future__ import annotations

import logging
from dataclasses import asdict

import numpy as np

from geocells.eval.histogram import aerial_cell_histograms, histogram_scorer
from geocells.eval.methods import (
    MethodDatabase,
    cell_code_methods,
    ground_retrieval_method,
    histogram_method,
)
from geocells.geo import cell_to_latlng, haversine_m
from geocells.outputs import OutputFolder
from geocells.scoring.metrics import recall_within
from geocells.search.index_file import INDEX_FILE, open_searcher
from geocells.search.ivfpq import AUTO_EXACT_MAX_CELLS, CellSearcher

logger = logging.getLogger(__name__)

CACHE = "cache"  # the folder of eval's embeddings and histograms in its output


def prototype_matrix(model) -> tuple[np.ndarray, np.ndarray]:
    """The model's L2-normalised level-Lp prototypes: ``(cells uint64 [P], float32 [P, D])``."""
    table = model.prototypes
    vectors = table.normalized()
    if hasattr(vectors, "detach"):
        vectors = vectors.detach().cpu().numpy()
    return np.asarray(table.cells, dtype=np.uint64), np.asarray(vectors, dtype=np.float32)


def cell_histograms(database, data, out: OutputFolder, px: int, progress: bool) -> np.ndarray:
    """Colour histograms of every database cell's aerial tile (cached in ``out``'s cache)."""

    name = f"{CACHE}/cell_histograms_{px}px.npy"
    path = out.path / name
    if path.is_file():
        try:
            histograms = np.load(path, allow_pickle=False)
            if histograms.shape[0] == len(database):
                return histograms
        except (OSError, ValueError, EOFError) as err:  # a cache: rebuilt, not fatal
            logger.warning("ignoring unreadable cache %s (%s): computing it again", path, err)
    lat, lon = cell_to_latlng(np.asarray(database.cells, dtype=np.uint64))
    histograms = aerial_cell_histograms(
        data.aerial, lat, lon, database.meta.tile_size_m, px, progress=progress
    )
    with out.file(name) as partial:
        np.save(partial, histograms)
    return histograms


def build_methods(database, model, data, train, options, out: OutputFolder) -> list[MethodDatabase]:
    """Prototype-only (Lp, Lc), aerial-only, hybrid κ=1, hybrid κ, and the two baselines.

    The hybrid answers through the searcher ``geocells locate`` uses (``options.search``:
    auto = the database's IVF-PQ index when it has one); the others are exact.
    """

    proto_cells, proto_vectors = prototype_matrix(model)
    searcher = open_searcher(database, options.search)
    logger.info("eval: the hybrid answers through the %s searcher", searcher.backend)
    methods = cell_code_methods(
        database.cells, database.aerial, database.proto, database.kappa, proto_cells,
        proto_vectors, search=searcher.search,
    )  # fmt: skip
    if options.ground_retrieval and len(train.lat) == 0:
        logger.warning("no training ground images: leaving out the ground-retrieval baseline")
    elif options.ground_retrieval:
        methods.append(ground_retrieval_method(train.embeddings, train.lat, train.lon))
    if options.colour_histogram:
        histograms = cell_histograms(database, data, out, options.histogram_px, options.progress)
        methods.append(histogram_method(database.cells, histograms, histogram_scorer(histograms)))
    return methods


def search_comparison(database, result, queries, options) -> dict:
    """R@1 within 100 m of the hybrid through its deployed searcher, exactly, and through a
    fresh IVF-PQ index over the same codes (``options.compare_ivfpq``), with top-1 agreement."""

    cells = np.asarray(database.cells, dtype=np.uint64)

    def recall(rows: np.ndarray) -> float:
        lat, lon = cell_to_latlng(cells[rows])
        return recall_within(haversine_m(lat, lon, queries.lat, queries.lon), 100.0)

    deployed, exact = result.top_index[:, 0], result.exact_top1
    out = {
        "deployed_backend": open_backend(database, options.search),
        "r1_100m_deployed": recall(deployed),
        "r1_100m_exact": recall(exact),
        "top1_agreement_deployed_exact": float(np.mean(deployed == exact)),
    }
    if options.compare_ivfpq:
        try:
            ivfpq = CellSearcher.build(database.aerial, database.proto, database.kappa, "ivfpq")
        except ValueError as err:  # too few cells for the coarse lists
            out["ivfpq"] = f"not measured: {err}"
            return out
        _, rows = ivfpq.search(queries.embeddings, 1)
        rows = np.where(rows[:, 0] >= 0, rows[:, 0], exact)
        out.update(
            r1_100m_ivfpq=recall(rows),
            top1_agreement_ivfpq_exact=float(np.mean(rows == exact)),
            ivfpq_params=asdict(ivfpq.params),
        )
    return out


def open_backend(database, backend: str) -> str:
    """Which backend ``open_searcher`` serves ``database`` with."""

    if backend == "auto":
        if (database.path / INDEX_FILE).is_file():
            return "ivfpq"
        return "exact" if len(database) <= AUTO_EXACT_MAX_CELLS else "ivfpq"
    return backend
