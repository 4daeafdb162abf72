"""The compared methods as searchable databases, and their evaluation on one query set.

Every method is a ``MethodDatabase``: positions of its database items, a scoring function
from query features to scores over all items, and its storage size. ``evaluate_method``
scores queries in chunks and keeps only what the metrics need (top-k answers, the
paper's rank), so databases of any size stay within memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from geocells.eval import metrics

logger = logging.getLogger(__name__)


@dataclass
class MethodDatabase:
    """One method: item positions, ``score(queries [q, F]) -> [q, N]`` and storage bytes."""

    name: str
    label: str
    lat: np.ndarray
    lon: np.ndarray
    score: Callable[[np.ndarray], np.ndarray]
    storage_bytes: int
    query_kind: str = "embedding"  # which query features `score` takes: embedding | histogram

    def __len__(self) -> int:
        return int(self.lat.shape[0])


@dataclass
class MethodResult:
    """Per-query outcome of one method: top-k item indices and positions, errors, ranks."""

    name: str
    top_index: np.ndarray  # int64 [Q, k]
    top_lat: np.ndarray  # float64 [Q, k]
    top_lon: np.ndarray  # float64 [Q, k]
    topk_errors_m: np.ndarray  # float64 [Q, k]
    ranks: np.ndarray  # int64 [Q], 0 = nothing within the rank radius

    @property
    def errors_m(self) -> np.ndarray:
        """Top-1 error per query in metres."""
        return self.topk_errors_m[:, 0]


def _near_distances_m(lat_q, lon_q, lat_db, lon_db, radius_m: float) -> np.ndarray:
    """Distances ``[q, N]`` exact where within ``radius_m``, ``inf`` elsewhere.

    A cheap degree box (generous by 10 %) picks the candidate pairs; only those go through
    ``haversine_m``, so all-pairs distances cost a subtraction, not trigonometry.
    """
    from geocells.geo import haversine_m

    metres_per_degree = 111_000.0 / 1.1
    dlat = np.abs(lat_q[:, None] - lat_db[None, :])
    dlon = np.abs((lon_q[:, None] - lon_db[None, :] + 180.0) % 360.0 - 180.0)
    dlon *= np.cos(np.radians(lat_q))[:, None]
    rows, cols = np.nonzero((dlat <= radius_m / metres_per_degree)
                            & (dlon <= radius_m / metres_per_degree))  # fmt: skip
    distances = np.full(dlat.shape, np.inf)
    if rows.size:
        near = haversine_m(lat_q[rows], lon_q[rows], lat_db[cols], lon_db[cols])
        distances[rows, cols] = np.where(near <= radius_m, near, np.inf)
    return distances


def evaluate_method(
    method: MethodDatabase,
    query_features: np.ndarray,
    query_lat: np.ndarray,
    query_lon: np.ndarray,
    top_k: int = 10,
    chunk_size: int = 128,
    rank_radius_m: float = metrics.RANK_RADIUS_M,
) -> MethodResult:
    """Score every query against every item of ``method`` and collect top-k and ranks."""
    from geocells.geo import haversine_m

    n_items = len(method)
    if n_items == 0:
        raise ValueError(f"method {method.name!r} has an empty database")
    k = min(top_k, n_items)
    n_queries = query_features.shape[0]
    top_index = np.zeros((n_queries, k), dtype=np.int64)
    ranks = np.zeros(n_queries, dtype=np.int64)
    topk_errors = np.zeros((n_queries, k), dtype=np.float64)
    for start in range(0, n_queries, chunk_size):
        stop = min(start + chunk_size, n_queries)
        scores = np.asarray(method.score(query_features[start:stop]), dtype=np.float32)
        if scores.shape != (stop - start, n_items):
            raise ValueError(
                f"method {method.name!r} returned scores of shape {scores.shape}, "
                f"expected {(stop - start, n_items)}"
            )
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        top_index[start:stop] = np.take_along_axis(part, order, axis=1)
        lat_q, lon_q = query_lat[start:stop], query_lon[start:stop]
        near = _near_distances_m(lat_q, lon_q, method.lat, method.lon, rank_radius_m)
        ranks[start:stop] = metrics.rank_within(scores, near, rank_radius_m)
        top = top_index[start:stop]
        topk_errors[start:stop] = haversine_m(
            np.repeat(lat_q, k),
            np.repeat(lon_q, k),
            method.lat[top].ravel(),
            method.lon[top].ravel(),
        ).reshape(stop - start, k)
    return MethodResult(
        name=method.name,
        top_index=top_index,
        top_lat=method.lat[top_index],
        top_lon=method.lon[top_index],
        topk_errors_m=topk_errors,
        ranks=ranks,
    )


def _matmul_score(database: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    def score(queries: np.ndarray) -> np.ndarray:
        return queries.astype(np.float32) @ database.T

    return score


def cell_code_methods(
    cells: np.ndarray,
    aerial: np.ndarray,
    proto: np.ndarray,
    kappa: float,
    proto_lp_cells: np.ndarray,
    proto_lp: np.ndarray,
) -> list[MethodDatabase]:
    """The paper's ablation over one cell database: prototypes at Lp and Lc, aerial, hybrids.

    cells: uint64 [N] level-Lc ids; aerial, proto: [N, D]; proto_lp: [P, D] at level Lp.
    Sizes count what a deployment stores: float16 codes plus 8-byte cell ids.
    """
    from geocells.geo import cell_to_latlng

    aerial32 = np.asarray(aerial, dtype=np.float32)
    proto32 = np.asarray(proto, dtype=np.float32)
    lat, lon = cell_to_latlng(np.asarray(cells, dtype=np.uint64))
    lp_lat, lp_lon = cell_to_latlng(np.asarray(proto_lp_cells, dtype=np.uint64))
    n, dim = aerial32.shape
    code_bytes = n * dim * 2 + n * 8
    hybrid_one = aerial32 + proto32
    hybrid_kappa = aerial32 + np.float32(kappa) * proto32
    return [
        MethodDatabase(
            "proto_lp",
            "prototype-only at Lp (classification)",
            lp_lat,
            lp_lon,
            _matmul_score(np.asarray(proto_lp, dtype=np.float32)),
            proto_lp.shape[0] * (proto_lp.shape[1] * 2 + 8),
        ),
        MethodDatabase(
            "proto_lc",
            "prototype-only upsampled to Lc",
            lat,
            lon,
            _matmul_score(proto32),
            code_bytes,
        ),
        MethodDatabase("aerial", "aerial-only", lat, lon, _matmul_score(aerial32), code_bytes),
        MethodDatabase(
            "hybrid_k1", "hybrid κ = 1", lat, lon, _matmul_score(hybrid_one), code_bytes
        ),
        MethodDatabase(
            "hybrid",
            f"hybrid, calibrated κ = {kappa:.3g}",
            lat,
            lon,
            _matmul_score(hybrid_kappa),
            code_bytes,
        ),
    ]


def ground_retrieval_method(
    train_embeddings: np.ndarray, train_lat: np.ndarray, train_lon: np.ndarray
) -> MethodDatabase:
    """MegaLoc-style baseline: nearest training ground image; answer = its position."""
    database = np.asarray(train_embeddings, dtype=np.float32)
    n, dim = database.shape
    return MethodDatabase(
        "ground_retrieval",
        "baseline: ground-image retrieval",
        np.asarray(train_lat, dtype=np.float64),
        np.asarray(train_lon, dtype=np.float64),
        _matmul_score(database),
        n * dim * 2 + n * 16,  # float16 descriptor + float64 lat/lon per image
    )


def histogram_method(
    cells: np.ndarray, cell_histograms: np.ndarray, score: Callable[[np.ndarray], np.ndarray]
) -> MethodDatabase:
    """The naive colour-histogram cross-view matcher over the same level-Lc cells."""
    from geocells.geo import cell_to_latlng

    lat, lon = cell_to_latlng(np.asarray(cells, dtype=np.uint64))
    n, bins = cell_histograms.shape
    return MethodDatabase(
        "colour_histogram",
        "baseline: colour-histogram cross-view",
        lat,
        lon,
        score,
        n * bins * 4 + n * 8,
        query_kind="histogram",
    )
